//! The binary's configuration loader (`crates/herald/src/config/`): a TOML file and
//! `HERALD_*` variables layered over the defaults, then checked into a configuration or
//! a list of problems. A configuration that loads, written back out as a table and
//! loaded again, is the same configuration.
//!
//! Input: the TOML file's text, then optionally a NUL byte and `NAME=value` lines, each
//! applied as the variable `HERALD_NAME`.
//!
//! The loader is the binary's private module, compiled here from its own source (the
//! `herald` crate has no library target; this keeps it without one).

#![no_main]

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../../crates/herald/src/config/mod.rs"]
mod config;

use config::Layers;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::LazyLock;

/// The file the loader reads, one per fuzzer process (in memory where the system has
/// a RAM disk).
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    let shm = PathBuf::from("/dev/shm");
    let dir = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("herald-fuzz-config-{}.toml", std::process::id()))
});

/// `HERALD_FUZZ_DEBUG=1` prints each outcome (to check what seeds reach).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("HERALD_FUZZ_DEBUG").is_some());

fuzz_target!(|data: &[u8]| {
    let (toml, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let vars: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (format!("HERALD_{name}"), value.to_owned()))
        .collect();
    std::fs::write(&*FILE, toml).expect("the fuzzer's config file is writable");
    match Layers::new().file(&FILE).env(vars).build() {
        Ok(config) => {
            if *DEBUG {
                eprintln!("loaded; warnings: {:?}", config.warnings);
            }
            let table = config.to_table();
            let again = Layers::from_config(&config)
                .build()
                .unwrap_or_else(|e| panic!("a loaded configuration does not load again: {e}"));
            assert_eq!(
                again.to_table(),
                table,
                "the configuration changed on reloading"
            );
        }
        Err(e) => {
            if *DEBUG {
                eprintln!("{e}");
            }
            assert!(!e.problems.is_empty(), "an error without problems");
            let _ = e.to_string();
        }
    }
});

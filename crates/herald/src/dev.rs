//! What `herald serve --dev` keeps between runs: the generated token secret and API
//! key, in a small state file under the user's data directory, so that a token or key
//! copied into another terminal still works after a restart.

use herald_gateway::config::AdminConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The kept values.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Kept {
    #[serde(default)]
    token_hmac_secret: String,
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    admin_password: String,
    #[serde(default)]
    admin_secret: String,
}

/// The state file, its values, and whether they changed since it was read.
#[derive(Debug)]
pub(crate) struct DevState {
    path: Option<PathBuf>,
    kept: Kept,
    changed: bool,
    /// Why the file could not be read or written, for the banner.
    problem: Option<String>,
}

/// Where the state lives: `$HERALD_DEV_STATE`, else `$XDG_DATA_HOME/herald/dev.json`,
/// else `~/.local/share/herald/dev.json`.
fn state_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HERALD_DEV_STATE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("share"))
        })?;
    Some(data.join("herald").join("dev.json"))
}

fn random_secret() -> String {
    random_hex::<24>()
}

/// The value in `slot`, replaced by a new one from `make` (and `changed` set) when it is
/// shorter than `min_len` bytes, as a value never kept is (empty).
fn keep(slot: &mut String, changed: &mut bool, min_len: usize, make: fn() -> String) -> String {
    if slot.len() < min_len {
        *slot = make();
        *changed = true;
    }
    slot.clone()
}

fn random_hex<const N: usize>() -> String {
    use rand::Rng;
    let bytes: [u8; N] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl DevState {
    /// Reads the state file (`reset`: starts empty, so new values are made).
    pub(crate) fn load(reset: bool) -> Self {
        let path = state_path();
        let mut problem = None;
        let kept = match &path {
            Some(p) if !reset => match std::fs::read(p) {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    problem = Some(format!(
                        "{} is not readable ({e}); new values made",
                        p.display()
                    ));
                    Kept::default()
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kept::default(),
                Err(e) => {
                    problem = Some(format!("cannot read {} ({e})", p.display()));
                    Kept::default()
                }
            },
            _ => Kept::default(),
        };
        Self {
            path,
            kept,
            changed: reset,
            problem,
        }
    }

    /// The kept token secret, made now if there is none.
    pub(crate) fn secret(&mut self) -> String {
        keep(
            &mut self.kept.token_hmac_secret,
            &mut self.changed,
            32,
            random_secret,
        )
    }

    /// The kept API key, made now if there is none.
    pub(crate) fn api_key(&mut self) -> String {
        keep(&mut self.kept.api_key, &mut self.changed, 1, random_secret)
    }

    /// The kept admin page password, made now if there is none.
    pub(crate) fn admin_password(&mut self) -> String {
        keep(
            &mut self.kept.admin_password,
            &mut self.changed,
            AdminConfig::MIN_PASSWORD_CHARS,
            random_hex::<10>,
        )
    }

    /// The kept secret that signs admin sessions, made now if there is none.
    pub(crate) fn admin_secret(&mut self) -> String {
        keep(
            &mut self.kept.admin_secret,
            &mut self.changed,
            AdminConfig::MIN_SECRET_BYTES,
            random_secret,
        )
    }

    /// Writes the file if a value was made (readable by its owner only).
    pub(crate) fn save(&mut self) {
        if !self.changed {
            return;
        }
        let Some(path) = &self.path else {
            self.problem = Some("no HOME or XDG_DATA_HOME to keep them in".into());
            return;
        };
        let written = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let text = serde_json::to_string_pretty(&self.kept).map_err(std::io::Error::other)?;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)?;
            file.write_all(text.as_bytes())
        })();
        match written {
            Ok(()) => self.changed = false,
            Err(e) => self.problem = Some(format!("cannot write {} ({e})", path.display())),
        }
    }

    /// A line for the banner: where the values are kept, or why they are not.
    pub(crate) fn describe(&self) -> String {
        match (&self.problem, &self.path) {
            (Some(problem), _) => {
                format!("(not kept: {problem}; they change with every start)")
            }
            (None, Some(path)) => format!(
                "(kept in {}; restarts keep them, --dev-reset makes new ones)",
                path.display()
            ),
            (None, None) => "(not kept; they change with every start)".into(),
        }
    }
}

/// `herald dev-env`: the kept values as shell exports.
#[allow(clippy::print_stdout)]
pub(crate) fn print_env() -> anyhow::Result<std::process::ExitCode> {
    let state = DevState::load(false);
    let path = state.path.as_ref().map_or_else(
        || "(no HOME or XDG_DATA_HOME)".to_owned(),
        |p| p.display().to_string(),
    );
    if state.kept.api_key.is_empty() || state.kept.token_hmac_secret.is_empty() {
        anyhow::bail!(
            "no --dev node has kept a key in {path}: start one with `herald serve --dev` first"
        );
    }
    println!("export HERALD_API_KEY={}", state.kept.api_key);
    println!(
        "export HERALD_TOKEN_HMAC_SECRET={}",
        state.kept.token_hmac_secret
    );
    eprintln!("# the API key and token secret of the --dev node, from {path}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// How to run this same binary from the current directory: `herald` when that is what
/// the PATH finds, else its path (relative when under the current directory), so that
/// the banner's commands work when pasted.
pub(crate) fn this_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "herald".into();
    };
    let exe = exe.canonicalize().unwrap_or(exe);
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            dir.join("herald")
                .canonicalize()
                .is_ok_and(|found| found == exe)
        })
    });
    if on_path {
        return "herald".into();
    }
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(relative) = exe.strip_prefix(cwd.canonicalize().unwrap_or(cwd))
    {
        return format!("./{}", relative.display());
    }
    exe.display().to_string()
}

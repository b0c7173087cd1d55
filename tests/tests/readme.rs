//! The README's commands, run as written: the quick start and the cluster. The only
//! changes are the ones a test needs to run anywhere: the binary under test stands in
//! for `./target/release/herald` (and `cargo run --release --`), and free ports stand in
//! for 8000, 8001–8003 and 6379, so that the test never meets another program's ports.

use herald_tests::{free_port, herald_bin};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn readme() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(path).expect("README.md")
}

/// The ```sh blocks of the section under `heading` (up to the next heading of its level).
fn sh_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme.find(heading).expect("the heading");
    let level = heading.split(' ').next().unwrap_or("##");
    let rest = &readme[start + heading.len()..];
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .find(|&i| rest[i..].starts_with(&format!("{level} ")))
        .unwrap_or(rest.len());
    let section = &rest[..end];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "```sh" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

/// Kills process group `pgid` with bash's own `kill` (procps' `kill -SIG -PGID` is
/// not to be trusted with a negative id).
fn kill_group(pgid: u32) {
    assert!(pgid > 1, "not a process group of ours: {pgid}");
    let _ = Command::new("bash")
        .args(["-c", &format!("kill -KILL -- -{pgid} 2>/dev/null")])
        .status();
}

fn binary() -> String {
    herald_bin().display().to_string()
}

/// Runs a script with bash in a process group of its own; its stdout, after at most
/// `within` (everything it started is killed then).
fn run_script(script: &str, env: &[(&str, String)], within: Duration) -> (bool, String, String) {
    use std::os::unix::process::CommandExt;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new("bash")
        .args(["-e", "-c", script])
        .current_dir(dir)
        .env_remove("HERALD_API_KEY")
        .env_remove("HERALD_TOKEN_HMAC_SECRET")
        .env_remove("HERALD_URL")
        .env_remove("HERALD_WS_URL")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("bash");
    let started = Instant::now();
    let finished = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.success();
        }
        if started.elapsed() > within {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the script left in the background goes with it.
    kill_group(child.id());
    let out = child.wait_with_output().expect("output");
    (
        finished,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n");
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
        });
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "no node ready on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_quick_start_works_as_written() {
    let readme = readme();
    let blocks = sh_blocks(&readme, "## Quick start");
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert_eq!(blocks[0].trim(), "cargo run --release -- serve --dev");
    let port = free_port();
    let state =
        std::env::temp_dir().join(format!("herald-readme-{}-{port}.json", std::process::id()));
    let node = format!(
        "{} --listen 127.0.0.1:{port}",
        blocks[0]
            .trim()
            .replace("cargo run --release --", &binary())
    );
    let env = [
        ("HERALD_DEV_STATE", state.display().to_string()),
        // The tools' default address is the README's 127.0.0.1:8000.
        ("HERALD_URL", format!("http://127.0.0.1:{port}")),
        (
            "HERALD_WS_URL",
            format!("ws://127.0.0.1:{port}/connection/websocket"),
        ),
    ];
    let script = format!(
        "{node} > /dev/null 2>&1 & disown\n{}",
        blocks[1]
            .replace("./target/release/herald", &binary())
            .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
    );
    // The node first, then the README's second terminal once it is ready.
    let script = script.replacen(
        "\neval",
        &format!(
            "\nuntil curl -sf http://127.0.0.1:{port}/readyz > /dev/null; do sleep 0.1; done\neval"
        ),
        1,
    );
    let (ok, out, err) = run_script(&script, &env, Duration::from_secs(60));
    assert!(ok, "the quick start failed:\n{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    // tail's two publications, publish's result, curl's reply.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""channel":"news""#) && l.contains("hello")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(r#""channel":"news""#) && l.contains(r#""hi""#)),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(r#"{"offset":1,"epoch":"#)),
        "{out}"
    );
    // curl's reply has the shape the README shows.
    let sample = blocks[1]
        .lines()
        .find_map(|l| l.trim().strip_prefix("# → "))
        .expect("a sample reply");
    let shape = |text: &str| -> String {
        let epoch_at = text.find(r#""epoch":""#).map(|i| i + 9);
        match epoch_at {
            Some(i) => {
                let end = text[i..].find('"').map_or(text.len(), |j| i + j);
                format!("{}{}", &text[..i], &text[end..])
            }
            None => text.to_owned(),
        }
    };
    // curl prints no line break after the reply: the next output may follow it at once.
    let at = out.find(r#"{"result""#).expect("curl's reply");
    let reply = &out[at..at + out[at..].find("}}").expect("the reply's end") + 2];
    assert_eq!(shape(reply), shape(sample), "{out}");
    let _ = std::fs::remove_file(state);
}

/// A script's process group, killed when dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.0.id());
        let _ = self.0.wait();
    }
}

#[test]
fn the_cluster_commands_work_as_written() {
    use std::os::unix::process::CommandExt;
    let readme = readme();
    let blocks = sh_blocks(&readme, "## Running a cluster");
    let block = blocks.first().expect("the cluster block");
    let redis = free_port();
    let nodes = [free_port(), free_port(), free_port()];
    let script = block
        .replace("./target/release/herald", &binary())
        .replace("6379", &redis.to_string())
        .replace(
            "for port in 8001 8002 8003",
            &format!("for port in {} {} {}", nodes[0], nodes[1], nodes[2]),
        )
        // redis-server writes its files in the current directory.
        .replace("redis-server ", "redis-server --dir \"$(mktemp -d)\" ");
    let _group = Group(
        Command::new("bash")
            .args(["-e", "-c", &format!("{script}\nwait")])
            .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
            .env_remove("HERALD_API_KEY")
            .env_remove("HERALD_TOKEN_HMAC_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("bash"),
    );
    // Three nodes ready: each reached the Redis the block started.
    for port in nodes {
        wait_ready(port);
    }
}

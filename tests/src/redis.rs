//! Real `redis-server` processes for tests: each on a free port of its own (never the
//! machine's shared 6379), with kill, restart, pause and a three-primary cluster.

use crate::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` process, killed on drop. It keeps nothing on disk, so a restart
/// loses every key (which is how tests make an epoch change).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
}

impl RedisServer {
    /// Starts a standalone server.
    pub fn start() -> RedisServer {
        Self::start_on(free_port(), false)
    }

    fn start_on(port: u16, cluster: bool) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("herald-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            cluster,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.cluster {
            let conf = self.dir.join(format!("nodes-{}.conf", self.port));
            let _ = std::fs::remove_file(&conf);
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(conf);
        }
        self.child = Some(
            cmd.spawn()
                .expect("redis-server is installed (apt-get install redis-server)"),
        );
        self.wait_until(|r| r.cli(&["PING"]).trim() == "PONG", "answer PING");
    }

    fn wait_until(&self, ok: impl Fn(&Self) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis on port {} did not {what}", self.port);
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli -p <port> args...` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends a signal by name ("STOP", "CONT").
    pub fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(c.id().to_string())
                .status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-primary Redis Cluster on one machine.
#[derive(Debug)]
pub struct RedisCluster {
    /// The primaries.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers and joins them into a cluster.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_on(free_port(), true))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for n in &nodes {
            n.wait_until(
                |r| r.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"),
                "join the cluster",
            );
        }
        RedisCluster { nodes }
    }

    /// A `redis-cluster://` URL listing every primary.
    pub fn url(&self) -> String {
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        format!(
            "redis-cluster://127.0.0.1:{}?{}",
            self.nodes[0].port,
            others.join("&")
        )
    }
}

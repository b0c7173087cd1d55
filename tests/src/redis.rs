//! Real `redis-server` processes for tests: each on a free port of its own (never the
//! machine's shared 6379), with kill, restart, pause and a three-primary cluster; TLS
//! with certificates made at test time, and ACL users.

use crate::{free_cluster_port, free_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A test CA with a server certificate for 127.0.0.1 and localhost, a client
/// certificate, and an unrelated CA, made with the `openssl` CLI; removed on drop.
#[derive(Debug)]
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Makes the certificates (EC P-256, valid one day).
    pub fn generate() -> Certs {
        let dir = std::env::temp_dir().join(format!(
            "herald-certs-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("certs dir");
        let certs = Certs { dir };
        certs.make_ca("ca");
        certs.make_ca("other-ca");
        certs.make_leaf(
            "server",
            "localhost",
            // Also clientAuth: cluster nodes present it to each other on the bus.
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        );
        certs.make_leaf("client", "herald-client", "extendedKeyUsage=clientAuth\n");
        certs
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn make_ca(&self, name: &str) {
        let (key, pem, subject) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN=herald test {name}"),
        );
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "1",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    fn make_leaf(&self, name: &str, cn: &str, extensions: &str) {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(self.dir.join(&ext), extensions).expect("ext file");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ]);
    }

    /// A file in the certificate directory (`ca.pem`, `server.key`, `client.pem`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The CA that signed every certificate.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a test server differs from a plain one.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Serve only TLS (no plain port) with the certificates in this directory.
    pub tls: Option<PathBuf>,
    /// Require a client certificate signed by the CA (`tls-auth-clients yes`).
    pub tls_auth_clients: bool,
    /// ACL users, each as `user` directive arguments: `herald on >pw ~* &* +@all`.
    pub users: Vec<String>,
}

impl RedisOptions {
    /// TLS with `certs`, which must outlive the server.
    pub fn tls(certs: &Certs) -> RedisOptions {
        RedisOptions {
            tls: Some(certs.dir.clone()),
            ..RedisOptions::default()
        }
    }

    /// Adds an ACL user.
    pub fn user(mut self, rule: &str) -> RedisOptions {
        self.users.push(rule.to_owned());
        self
    }
}

/// One `redis-server` process, killed on drop. It keeps nothing on disk, so a restart
/// loses every key (which is how tests make an epoch change).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// Its port (the TLS port with [`RedisOptions::tls`]).
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    options: RedisOptions,
}

impl RedisServer {
    /// Starts a standalone server.
    pub fn start() -> RedisServer {
        Self::start_on(free_port(), false)
    }

    /// Starts a standalone server with TLS or ACL users.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        Self::start_configured(free_port(), false, options)
    }

    fn start_on(port: u16, cluster: bool) -> RedisServer {
        Self::start_configured(port, cluster, RedisOptions::default())
    }

    fn start_configured(port: u16, cluster: bool, options: RedisOptions) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("herald-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            cluster,
            options,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.options.tls {
            None => cmd.args(["--port", &port]),
            Some(certs) => {
                let file = |name: &str| certs.join(name).display().to_string();
                cmd.args(["--port", "0", "--tls-port", &port])
                    .args(["--tls-cert-file", &file("server.pem")])
                    .args(["--tls-key-file", &file("server.key")])
                    .args(["--tls-ca-cert-file", &file("ca.pem")])
                    .args([
                        "--tls-auth-clients",
                        if self.options.tls_auth_clients {
                            "yes"
                        } else {
                            "no"
                        },
                    ])
            }
        };
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for user in &self.options.users {
            cmd.arg("--user").args(user.split_whitespace());
        }
        if self.cluster {
            let conf = self.dir.join(format!("nodes-{}.conf", self.port));
            let _ = std::fs::remove_file(&conf);
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(conf);
            if self.options.tls.is_some() {
                cmd.args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
            }
        }
        self.child = Some(
            cmd.spawn()
                .expect("redis-server is installed (apt-get install redis-server)"),
        );
        self.wait_until(|r| r.cli(&["PING"]).trim() == "PONG", "answer PING");
    }

    fn wait_until(&self, ok: impl Fn(&Self) -> bool, what: &str) {
        // A TLS cluster on a loaded machine can take over 10 s to agree on its slots.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis on port {} did not {what}", self.port);
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `redis-cli`'s TLS arguments for this server (none without TLS).
    fn tls_args(&self) -> Vec<String> {
        tls_cli_args(self.options.tls.as_deref())
    }

    /// Runs `redis-cli -p <port> args...` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(self.tls_args())
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

/// `redis-cli --tls` with the test CA and client certificate in `certs`.
fn tls_cli_args(certs: Option<&Path>) -> Vec<String> {
    let Some(certs) = certs else {
        return Vec::new();
    };
    let file = |name: &str| certs.join(name).display().to_string();
    vec![
        "--tls".into(),
        "--cacert".into(),
        file("ca.pem"),
        "--cert".into(),
        file("client.pem"),
        "--key".into(),
        file("client.key"),
    ]
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
        Self::start_with(&RedisOptions::default())
    }

    /// A cluster whose nodes have `options` (with TLS: `tls-cluster yes`, so nodes
    /// announce their TLS ports and talk TLS to each other).
    pub fn start_with(options: &RedisOptions) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_configured(free_cluster_port(), true, options.clone()))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(tls_cli_args(options.tls.as_deref()))
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

    /// A `redis-cluster://` (`rediss-cluster://` with TLS) URL listing every primary.
    pub fn url(&self) -> String {
        let scheme = if self.nodes[0].options.tls.is_some() {
            "rediss-cluster"
        } else {
            "redis-cluster"
        };
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("node=127.0.0.1:{}", n.port))
            .collect();
        format!(
            "{scheme}://127.0.0.1:{}?{}",
            self.nodes[0].port,
            others.join("&")
        )
    }
}

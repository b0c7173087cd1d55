//! A round-robin TCP load balancer for tests: clients connect to one port and reach
//! whichever node is alive, as behind a Kubernetes Service. No stickiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A running balancer; stops (with every proxied connection) on drop.
#[derive(Debug)]
pub struct Balancer {
    /// The port clients connect to.
    pub port: u16,
    tasks: JoinSet<()>,
}

impl Balancer {
    /// Balances over the nodes on `backends` (ports on 127.0.0.1).
    pub async fn start(backends: Vec<u16>) -> Balancer {
        let listener = TcpListener::bind(("127.0.0.1", crate::free_port()))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let backends = Arc::new(backends);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let (backends, next) = (backends.clone(), next.clone());
                conns.spawn(async move {
                    // Try each backend once, starting with the next in turn.
                    let start = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let port = backends[(start + i) % backends.len()];
                        if let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await {
                            let _ = upstream.set_nodelay(true);
                            let _ = client.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            return;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Balancer { port, tasks }
    }

    /// The WebSocket URL through the balancer.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/connection/websocket", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

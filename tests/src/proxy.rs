//! A TCP proxy between hookline and RabbitMQ: `sever` drops every connection through it and
//! refuses new ones (the broker is gone, for this test only); `restore` lets them through again.
//! With several targets ([`TcpProxy::start_any`]) it is also the load balancer in front of a
//! broker cluster: each connection goes to the next target that accepts, as HAProxy would.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> Self {
        Self::start_any(vec![target.to_owned()]).await
    }

    /// Spreads connections over `targets` round robin, skipping those that refuse.
    pub async fn start_any(targets: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("local addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let targets = Arc::new(targets);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accept = tokio::spawn({
            let (up, conns) = (up.clone(), conns.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let (targets, next) = (targets.clone(), next.clone());
                    let task = tokio::spawn(async move {
                        let first = next.fetch_add(1, Ordering::Relaxed);
                        for i in 0..targets.len() {
                            let target = &targets[(first + i) % targets.len()];
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                    .await;
                                return;
                            }
                        }
                    });
                    let mut conns = conns.lock().await;
                    // Forget finished connections so a long run does not pile up handles.
                    conns.retain(|t| !t.is_finished());
                    conns.push(task);
                }
            }
        });
        Self {
            port,
            up,
            conns,
            accept,
        }
    }

    /// The AMQP URL for `vhost` through this proxy.
    pub fn amqp_url(&self, vhost: &str) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", self.port)
    }

    pub async fn sever(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().await.drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut conns) = self.conns.try_lock() {
            for task in conns.drain(..) {
                task.abort();
            }
        }
    }
}

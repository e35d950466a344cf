//! Faults a test can switch on: a legacy database that hangs.

use std::sync::Arc;

/// A TCP proxy to `target` that can play dead: while `alive` is false it accepts connections
/// and never answers (a legacy database that hangs). Counts the connections it accepted.
pub struct SwitchableProxy {
    pub addr: std::net::SocketAddr,
    pub alive: Arc<std::sync::atomic::AtomicBool>,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    pub task: tokio::task::JoinHandle<()>,
}

impl SwitchableProxy {
    pub async fn start(target: String, alive: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(alive));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, count) = (alive.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if !flag.load(std::sync::atomic::Ordering::SeqCst) {
                    held.push(socket);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            addr,
            alive,
            accepted,
            task,
        }
    }
}

// ---- TLS -------------------------------------------------------------------------------

//! [`TcpProxy`]: a loopback TCP proxy that can cut a service off.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the proxy waits for the service when a client connects.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP proxy on a free port of 127.0.0.1 in front of one service. Point
/// a client at [`TcpProxy::port`] instead of the service; then
/// [`cut`](Self::cut) is a network partition between that client and the
/// service — every open connection is closed and new ones are closed as
/// soon as they are accepted — and [`heal`](Self::heal) ends it. Several
/// proxies in front of one service partition clients one by one.
///
/// Needs a tokio runtime; dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    cut: AtomicBool,
    /// Bumped by every cut and on drop: connections end when it changes.
    epoch: watch::Sender<u64>,
    accepted: AtomicU64,
}

impl TcpProxy {
    /// Starts a proxy to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream,
            cut: AtomicBool::new(false),
            epoch: watch::channel(0).0,
            accepted: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(TcpProxy {
            port,
            shared,
            accept,
        })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The service's address.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Cuts the link: closes every open connection and every new one until
    /// [`heal`](Self::heal).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.epoch.send_modify(|epoch| *epoch += 1);
    }

    /// Ends the partition: new connections reach the service again.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (including those closed by a cut).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.epoch.send_modify(|epoch| *epoch += 1);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off, keep serving.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if shared.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        tokio::spawn(forward(client, shared.clone()));
    }
}

async fn forward(mut client: TcpStream, shared: Arc<Shared>) {
    let mut epoch = shared.epoch.subscribe();
    let start = *epoch.borrow_and_update();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.upstream));
    let mut server = tokio::select! {
        result = connected => match result {
            Ok(Ok(server)) => server,
            // The service is down or unreachable: the client sees a close.
            _ => return,
        },
        _ = epoch.wait_for(|now| *now != start) => return,
    };
    // Latency matters more than throughput for the services behind it.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        // A cut (or the proxy's drop) closes both sides.
        _ = epoch.wait_for(|now| *now != start) => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo server; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut reader, mut writer) = stream.split();
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                });
            }
        });
        addr
    }

    async fn echoes(stream: &mut TcpStream) -> bool {
        if stream.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut reply = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut reply)).await,
            Ok(Ok(_))
        ) && &reply == b"ping"
    }

    #[tokio::test]
    async fn forwards_cuts_and_heals() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        assert_ne!(proxy.port(), proxy.upstream().port());
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut open).await);

        proxy.cut();
        assert!(proxy.is_cut());
        assert!(!echoes(&mut open).await, "an open connection is closed");
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(!echoes(&mut refused).await, "a new connection is closed");

        proxy.heal();
        assert!(!proxy.is_cut());
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut again).await);
        assert_eq!(proxy.accepted(), 3);
    }

    #[tokio::test]
    async fn a_dead_service_closes_the_connection() {
        let port = crate::testing::free_port().unwrap();
        let proxy = TcpProxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(!echoes(&mut stream).await);
    }
}

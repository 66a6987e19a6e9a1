//! Accepting TCP connections on every port (xDS, admin; the TLS ports through
//! `ca::serving::incoming`, which adds the handshake) so that idle or hostile clients cannot
//! exhaust the server: a connection is handed to its server only once
//! it has sent its first byte, within `first_byte` (a TCP connection that says nothing is
//! closed); connections waiting for that are capped in total and per client address (beyond
//! either, a new connection is closed at once); and a failing `accept` (no file descriptor
//! left) backs off instead of spinning. Refusals are counted in
//! `bowline_connections_refused_total{port,reason}`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How connections are admitted on one port.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// The port's name in logs and metrics (`xds`, `admin`).
    pub port: &'static str,
    /// How long a new connection may take to send its first byte.
    pub first_byte: Duration,
    /// Connections waiting for their first byte, in total and per client address.
    pub max_waiting: usize,
    pub max_waiting_per_client: usize,
}

impl Admission {
    /// Admission for `port` in a process that may hold `open_files` descriptors: at most a
    /// sixteenth of them (and 4096) wait for a first byte on the port, so that the four ports
    /// together hold at most a quarter; a 256th (at least 8, at most 256) from one client
    /// address. Silent clients never take the descriptors that config reads, the CA and
    /// established proxies need.
    pub fn new(port: &'static str, first_byte: Duration, open_files: u64) -> Admission {
        let share = |divisor: u64, min: u64, max: u64| {
            usize::try_from((open_files / divisor).clamp(min, max)).unwrap_or(min as usize)
        };
        Admission {
            port,
            first_byte,
            max_waiting: share(16, 16, 4096),
            max_waiting_per_client: share(256, 8, 256),
        }
    }
}

/// Raises the soft limit on open files to the hard one (at most 2^20); the limit in force.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let want = hard.min(1 << 20);
    if soft < want && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
        return want;
    }
    soft
}

/// Connections waiting for their first byte, per client address.
#[derive(Default)]
struct Waiting {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Releases a waiting slot when dropped.
struct Slot {
    waiting: Arc<Mutex<Waiting>>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.total -= 1;
        if let Some(n) = w.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                w.by_client.remove(&self.client);
            }
        }
    }
}

fn refused(admission: &Admission, reason: &'static str) {
    metrics::counter!("bowline_connections_refused_total", "port" => admission.port, "reason" => reason)
        .increment(1);
}

/// Accepts on `listener` and yields the connections that spoke first, as `admission` says.
pub fn admit(
    listener: TcpListener,
    admission: Admission,
) -> mpsc::Receiver<(TcpStream, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Typically no file descriptor left: wait for some to be released.
                    tracing::warn!(port = admission.port, error = %e, "accepting a connection failed; retrying in 100 ms");
                    refused(&admission, "accept_error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let slot = {
                let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                let client = remote.ip();
                let mine = w.by_client.get(&client).copied().unwrap_or(0);
                if w.total >= admission.max_waiting {
                    Err("too_many_waiting")
                } else if mine >= admission.max_waiting_per_client {
                    Err("too_many_waiting_from_client")
                } else {
                    w.total += 1;
                    *w.by_client.entry(client).or_default() += 1;
                    Ok(Slot {
                        waiting: waiting.clone(),
                        client,
                    })
                }
            };
            let slot = match slot {
                Ok(s) => s,
                Err(reason) => {
                    refused(&admission, reason);
                    continue;
                }
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                // `peek` waits for a byte (`readable` may report a fresh socket ready).
                let mut first = [0u8; 1];
                let spoke = tokio::time::timeout(admission.first_byte, tcp.peek(&mut first)).await;
                drop(slot);
                match spoke {
                    Ok(Ok(n)) if n > 0 => {
                        let _ = tcp.set_nodelay(true);
                        let _ = tx.send((tcp, remote)).await;
                    }
                    Ok(_) => {}
                    Err(_) => refused(&admission, "silent"),
                }
            });
        }
    });
    rx
}

/// [`admit`] as a stream for tonic's `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    admission: Admission,
) -> impl futures::Stream<Item = Result<TcpStream, io::Error>> {
    let rx = admit(listener, admission);
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|(tcp, _)| (Ok(tcp), rx))
    })
}

/// [`admit`] as a listener for axum's `serve`.
pub struct AdmittedListener {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl AdmittedListener {
    pub fn new(listener: TcpListener, admission: Admission) -> io::Result<AdmittedListener> {
        let local = listener.local_addr()?;
        Ok(AdmittedListener {
            rx: admit(listener, admission),
            local,
        })
    }
}

/// The client address of a connection an [`AdmittedListener`] accepted, for axum's
/// `ConnectInfo` (`into_make_service_with_connect_info::<ClientAddr>()`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, AdmittedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, AdmittedListener>) -> ClientAddr {
        ClientAddr(*stream.remote_addr())
    }
}

impl axum::serve::Listener for AdmittedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accepting task is gone only with the runtime: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn caps_follow_the_open_file_limit() {
        let a = Admission::new("t", Duration::from_secs(1), 1024);
        assert_eq!((a.max_waiting, a.max_waiting_per_client), (64, 8));
        let a = Admission::new("t", Duration::from_secs(1), 20_000);
        assert_eq!((a.max_waiting, a.max_waiting_per_client), (1250, 78));
        let a = Admission::new("t", Duration::from_secs(1), 1 << 20);
        assert_eq!((a.max_waiting, a.max_waiting_per_client), (4096, 256));
        let a = Admission::new("t", Duration::from_secs(1), 20);
        assert_eq!((a.max_waiting, a.max_waiting_per_client), (16, 8));
        assert!(raise_open_file_limit() >= 16);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_connections_are_closed_and_capped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut admission = Admission::new("test", Duration::from_millis(300), 65536);
        admission.max_waiting_per_client = 5;
        let mut rx = admit(listener, admission);

        // Silent clients: five wait, the sixth is closed at once; all are closed later.
        let mut silent = Vec::new();
        for _ in 0..6 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut buf = [0u8; 1];
        let sixth =
            tokio::time::timeout(Duration::from_millis(200), silent[5].read(&mut buf)).await;
        assert!(
            matches!(sixth, Ok(Ok(0) | Err(_))),
            "the sixth is closed at once: {sixth:?}"
        );
        for s in silent.iter_mut().take(5) {
            let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("closed after the first-byte timeout");
            assert!(matches!(r, Ok(0) | Err(_)));
        }

        // A client that speaks is handed over.
        let mut talker = TcpStream::connect(addr).await.unwrap();
        talker.write_all(b"x").await.unwrap();
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("handed over")
            .expect("a connection");
        let mut got = [0u8; 1];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x");
    }
}

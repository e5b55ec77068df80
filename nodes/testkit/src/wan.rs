//! A WAN between a mirror and its upstream, on loopback: a TCP proxy that adds one-way delay to
//! every chunk in both directions (pipelined, so the delay does not cap throughput) and shares
//! one bandwidth limit among all connections towards the client, as one link would; each
//! connection may also be capped on its own, as one TCP stream over a long path is (window
//! over round trip), so that parallel connections get more of the link than one.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const CHUNK: usize = 64 * 1024;

/// The link's shape.
#[derive(Debug, Clone, Copy)]
pub struct LinkShape {
    /// Bytes per second towards the client (the upstream's downlink); shared by all connections.
    pub bytes_per_sec: u64,
    /// Added round-trip time; half of it is added in each direction.
    pub rtt: Duration,
    /// Injected errors: the connection carrying the byte at each multiple of this many bytes
    /// towards the client (counted over the whole link) is cut there, mid-response.
    pub cut_every: Option<u64>,
    /// Bytes per second one connection gets at most towards the client (`None`: no cap).
    pub per_connection: Option<u64>,
}

impl LinkShape {
    /// A long path as one TCP stream sees it: 200 MB/s in all, 25 MB/s for any one
    /// connection (window over round trip), 20 ms a round trip.
    pub fn long_path() -> LinkShape {
        LinkShape {
            bytes_per_sec: 200_000_000,
            rtt: Duration::from_millis(20),
            cut_every: None,
            per_connection: Some(25_000_000),
        }
    }
}

pub struct WanLink {
    pub port: u16,
    pub shape: LinkShape,
    pacer: Arc<Pacer>,
}

/// Serialises the link: each chunk waits for its turn on the wire.
struct Pacer {
    next_free: Mutex<(Instant, u64)>,
    bytes_per_sec: u64,
    cut_every: Option<u64>,
}

impl Pacer {
    /// When a chunk of `n` bytes, ready at `ready`, has finished crossing the link; `None`
    /// when the link cuts the connection at this chunk.
    fn reserve(&self, ready: Instant, n: usize) -> Option<Instant> {
        let mut state = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let (next, carried) = *state;
        let now_carried = carried + n as u64;
        let cut = self
            .cut_every
            .is_some_and(|every| every > 0 && carried / every != now_carried / every);
        let start = next.max(ready);
        let done = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
        *state = (done, now_carried);
        (!cut).then_some(done)
    }
}

impl WanLink {
    /// Listen on loopback and forward every connection to `target` (`127.0.0.1:PORT`).
    pub async fn start(target: String, shape: LinkShape) -> anyhow::Result<WanLink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let pacer = Arc::new(Pacer {
            next_free: Mutex::new((Instant::now(), 0)),
            bytes_per_sec: shape.bytes_per_sec,
            cut_every: shape.cut_every,
        });
        let link = pacer.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, pacer) = (target.clone(), pacer.clone());
                let own = shape.per_connection.map(|rate| Pacer {
                    next_free: Mutex::new((Instant::now(), 0)),
                    bytes_per_sec: rate.max(1),
                    cut_every: None,
                });
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let half = shape.rtt / 2;
                        let down = Pacing { link: pacer, own };
                        tokio::join!(pipe(cr, sw, half, None), pipe(sr, cw, half, Some(down)));
                    }
                });
            }
        });
        Ok(WanLink {
            port,
            shape,
            pacer: link,
        })
    }

    /// Bytes the link has carried towards the client so far (what the upstream sent, whether
    /// or not the client read it before closing).
    pub fn carried(&self) -> u64 {
        self.pacer
            .next_free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The link's pacing of one connection: the shared link, and the connection's own cap.
struct Pacing {
    link: Arc<Pacer>,
    own: Option<Pacer>,
}

impl Pacing {
    fn reserve(&self, ready: Instant, n: usize) -> Option<Instant> {
        let link = self.link.reserve(ready, n)?;
        Some(match &self.own {
            Some(own) => own.reserve(ready, n).map_or(link, |mine| mine.max(link)),
            None => link,
        })
    }
}

/// Copy one direction: read chunks, deliver each after the delay (and its slot on the link).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    pacer: Option<Pacing>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    let ready = Instant::now() + delay;
                    let due = match &pacer {
                        Some(p) => match p.reserve(ready, n) {
                            Some(due) => due,
                            None => break, // injected error: cut mid-response
                        },
                        None => ready,
                    };
                    if tx.send((due, buf)).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

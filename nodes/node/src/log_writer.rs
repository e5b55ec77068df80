//! The node's log writer. A line is appended to a buffer in memory (one short lock, one copy);
//! a thread of its own writes the buffer to stdout in one batch every [`FLUSH_EVERY`], or as
//! soon as it is half full. So a request never waits for stdout (a slow terminal, a full pipe
//! to a log shipper), never makes a system call for its access line and never wakes another
//! thread for it (only the first line after a batch does). When stdout falls so far behind
//! that the buffer is full, lines are dropped and counted (`wharf_log_lines_dropped_total`);
//! at exit the guard writes what is buffered (waiting at most [`EXIT_WAIT`] for stdout).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in memory before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How long exit waits for stdout to take the last lines.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// Lines waiting for the writer thread.
struct Pending {
    bytes: Vec<u8>,
    stopping: bool,
}

/// The buffer shared by every thread that logs and the writer thread.
pub struct LogBuffer {
    pending: Mutex<Pending>,
    wake: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

impl LogBuffer {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append one line, or drop and count it when the buffer is full.
    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        let before = pending.bytes.len();
        if before.saturating_add(line.len()) > self.capacity {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.bytes.extend_from_slice(line);
        let half = self.capacity / 2;
        let wake = before == 0 || (before < half && pending.bytes.len() >= half);
        drop(pending);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Lines dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Hands the fmt layer the buffer; each event's line arrives in one `write` call.
#[derive(Clone)]
pub struct LogWriter(Arc<LogBuffer>);

impl Write for &LogBuffer {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = &'a LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        &self.0
    }
}

/// Writes what is buffered and stops the writer thread when dropped (at exit).
pub struct LogGuard {
    buffer: Arc<LogBuffer>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.buffer.lock().stopping = true;
        self.buffer.wake.notify_one();
        let _ = self.done.recv_timeout(EXIT_WAIT);
    }
}

/// A writer of at most `capacity` buffered bytes onto `out`, its buffer (for the dropped
/// count) and the guard to keep until exit.
pub fn start(
    capacity: usize,
    mut out: impl Write + Send + 'static,
) -> std::io::Result<(LogWriter, Arc<LogBuffer>, LogGuard)> {
    let buffer = Arc::new(LogBuffer {
        pending: Mutex::new(Pending {
            bytes: Vec::with_capacity(capacity),
            stopping: false,
        }),
        wake: Condvar::new(),
        capacity,
        dropped: AtomicU64::new(0),
    });
    let (finished, done) = std::sync::mpsc::channel();
    let shared = Arc::clone(&buffer);
    std::thread::Builder::new()
        .name("wharf-log".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(capacity);
            loop {
                let stop = {
                    let pending = shared.lock();
                    let pending = shared
                        .wake
                        .wait_while(pending, |p| p.bytes.is_empty() && !p.stopping)
                        .unwrap_or_else(|p| p.into_inner());
                    // Let more lines gather, unless the buffer is filling up or we stop.
                    let half = shared.capacity / 2;
                    let (mut pending, _) = shared
                        .wake
                        .wait_timeout_while(pending, FLUSH_EVERY, |p| {
                            p.bytes.len() < half && !p.stopping
                        })
                        .unwrap_or_else(|p| p.into_inner());
                    std::mem::swap(&mut pending.bytes, &mut batch);
                    pending.stopping
                };
                // A broken stdout loses these lines; nothing better can be done with them.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
                batch.clear();
                if stop && shared.lock().bytes.is_empty() {
                    break;
                }
            }
            let _ = finished.send(());
        })?;
    let guard = LogGuard {
        buffer: Arc::clone(&buffer),
        done,
    };
    Ok((LogWriter(Arc::clone(&buffer)), buffer, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the writer thread writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_within_the_flush_interval_and_all_at_exit() {
        let sink = Sink::default();
        let (writer, buffer, guard) = start(1 << 16, sink.clone()).unwrap();
        let mut line = writer.make_writer();
        line.write_all(b"one\n").unwrap();
        std::thread::sleep(FLUSH_EVERY * 4);
        assert_eq!(
            &*sink.0.lock().unwrap(),
            b"one\n",
            "written within the interval"
        );
        for i in 0..1000 {
            line.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 1001);
        assert!(written.ends_with("line 999\n"), "every line before exit");
        assert_eq!(buffer.dropped(), 0);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_lines_instead_of_waiting() {
        /// stdout that takes nothing for a while (a stuck pipe).
        struct Stuck;
        impl Write for Stuck {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_secs(2));
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (writer, buffer, _guard) = start(1024, Stuck).unwrap();
        let mut line = writer.make_writer();
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            line.write_all(&[b'x'; 99]).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(1), "never waited");
        assert!(buffer.dropped() > 9_000, "{}", buffer.dropped());
    }
}

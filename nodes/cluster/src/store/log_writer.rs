//! The Raft log's disk writer: a dedicated thread that owns the log file, so no runtime thread
//! ever waits for `write` or `fsync`. Appends queued while it syncs are written together and
//! made durable by one `fsync` (group commit): one sync for many lease commands.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::files::write_atomic;

/// Jobs waiting for the writer at most; senders wait beyond it.
const QUEUE: usize = 1024;
/// Appends made durable by one `fsync` at most.
const GROUP: usize = 256;

/// Told whether a job's bytes are durable.
pub type Done = Box<dyn FnOnce(std::io::Result<()>) + Send>;

enum Job {
    /// Bytes appended to the log file.
    Append(Vec<u8>, Done),
    /// The log file replaced by these bytes (compaction), appended to from then on.
    Rewrite(Vec<u8>, Done),
    /// A small file of its own (the vote) replaced atomically.
    Replace(PathBuf, Vec<u8>, Done),
}

/// A handle to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct LogWriter {
    jobs: mpsc::Sender<Job>,
    syncs: Arc<AtomicU64>,
}

impl LogWriter {
    /// Start the writer over `path`, appending to `file` (already holding the log's bytes).
    pub fn start(path: PathBuf, file: File) -> std::io::Result<LogWriter> {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let syncs = Arc::new(AtomicU64::new(0));
        let thread = Thread {
            path,
            file,
            syncs: syncs.clone(),
        };
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || thread.run(rx))?;
        Ok(LogWriter { jobs, syncs })
    }

    /// Append `bytes`; `done` is called once they are durable (or failed).
    pub async fn append(&self, bytes: Vec<u8>, done: Done) {
        self.submit(|done| Job::Append(bytes, done), done).await;
    }

    /// Append `bytes` and wait until they are durable.
    pub async fn append_durable(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.wait(|done| Job::Append(bytes, done)).await
    }

    /// Replace the log file with `bytes` and wait.
    pub async fn rewrite(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.wait(|done| Job::Rewrite(bytes, done)).await
    }

    /// Replace the small file at `path` with `bytes` atomically and wait.
    pub async fn replace(&self, path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
        self.wait(|done| Job::Replace(path, bytes, done)).await
    }

    /// `fsync`s of the log file so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    async fn submit(&self, job: impl FnOnce(Done) -> Job, done: Done) {
        // If the thread is gone, the job comes back and its caller learns of the failure.
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job(done)).await {
            let (Job::Append(_, done) | Job::Rewrite(_, done) | Job::Replace(_, _, done)) = job;
            done(Err(std::io::Error::other("the raft log writer stopped")));
        }
    }

    async fn wait(&self, job: impl FnOnce(Done) -> Job) -> std::io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let done: Done = Box::new(move |result| {
            let _ = tx.send(result);
        });
        self.submit(job, done).await;
        rx.await
            .unwrap_or_else(|_| Err(std::io::Error::other("the raft log writer stopped")))
    }
}

struct Thread {
    path: PathBuf,
    file: File,
    syncs: Arc<AtomicU64>,
}

impl Thread {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut group: Vec<Done> = Vec::new();
        let mut bytes = Vec::new();
        while let Some(job) = jobs.blocking_recv() {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                match job {
                    Job::Append(more, done) => {
                        bytes.extend_from_slice(&more);
                        group.push(done);
                    }
                    other => {
                        // Keep the order: what was appended before is durable first.
                        self.commit(&mut bytes, &mut group);
                        self.exclusive(other);
                    }
                }
                if group.len() < GROUP {
                    next = jobs.try_recv().ok();
                }
            }
            self.commit(&mut bytes, &mut group);
        }
    }

    /// Write the grouped appends, sync once, and tell every waiter.
    fn commit(&mut self, bytes: &mut Vec<u8>, group: &mut Vec<Done>) {
        if group.is_empty() {
            return;
        }
        let result = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        self.syncs.fetch_add(1, Ordering::Relaxed);
        bytes.clear();
        for done in group.drain(..) {
            done(clone_result(&result));
        }
    }

    fn exclusive(&mut self, job: Job) {
        match job {
            Job::Rewrite(bytes, done) => {
                let result = write_atomic(&self.path, &bytes).and_then(|()| {
                    self.file = OpenOptions::new().append(true).open(&self.path)?;
                    Ok(())
                });
                done(result);
            }
            Job::Replace(path, bytes, done) => done(write_atomic(&path, &bytes)),
            Job::Append(..) => {}
        }
    }
}

fn clone_result(result: &std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_appends_share_one_fsync_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = File::create(&path).unwrap();
        let writer = LogWriter::start(path.clone(), file).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..200u32 {
            let tx = tx.clone();
            writer
                .append(
                    format!("{i}\n").into_bytes(),
                    Box::new(move |r| {
                        let _ = tx.send((i, r.is_ok()));
                    }),
                )
                .await;
        }
        let mut acknowledged = Vec::new();
        for _ in 0..200 {
            let (i, ok) = rx.recv().await.unwrap();
            assert!(ok);
            acknowledged.push(i);
        }
        assert_eq!(
            acknowledged,
            (0..200).collect::<Vec<_>>(),
            "acknowledged in order"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(lines, (0..200).collect::<Vec<_>>());
        assert!(
            writer.syncs() < 200,
            "group commit: {} fsyncs for 200 appends",
            writer.syncs()
        );
        writer.rewrite(b"fresh\n".to_vec()).await.unwrap();
        writer.append_durable(b"after\n".to_vec()).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "fresh\nafter\n");
    }
}

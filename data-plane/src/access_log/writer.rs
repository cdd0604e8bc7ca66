//! The access log's writer: a thread that takes finished records from a
//! bounded queue, formats them and writes them in batches to stdout or a
//! file. A record that finds the queue full is dropped at once and counted,
//! so a slow disk costs lines, never requests. The file is reopened on
//! request ([`AccessLog::reopen`], on `SIGHUP`), so that log rotation can
//! rename it and have a new one started; lines queued before are written to
//! whichever file is open when their batch goes out.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use super::Record;

/// Where lines go (`--access-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// The flag's value: `off` (none), `stdout`, or a file path.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "" | "off" => None,
            "stdout" | "-" => Some(Self::Stdout),
            path => Some(Self::File(PathBuf::from(path))),
        }
    }
}

/// How often the writer looks for a reopen request while no line comes.
const REOPEN_CHECK: Duration = Duration::from_millis(200);
/// Bytes of formatted lines gathered before a write.
const BATCH_BYTES: usize = 64 * 1024;

enum Message {
    Line(Box<Record>),
    /// Write everything queued before, then say so.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The node's access log: where requests hand their finished records.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens `destination` and starts the writer, with room for `capacity`
    /// records waiting, for a node of `gateway`.
    pub fn start(destination: Destination, capacity: usize, gateway: &str) -> io::Result<Arc<Self>> {
        let out = Output::open(destination)?;
        let (queue, lines) = std::sync::mpsc::sync_channel(capacity);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer { out, lines, reopen: reopen.clone(), gateway: gateway.to_owned(), batch: Vec::with_capacity(BATCH_BYTES) };
        std::thread::Builder::new().name("access-log".into()).spawn(move || writer.run())?;
        Ok(Arc::new(Self { queue, reopen }))
    }

    /// Queues a finished record, or drops it (counted) when the queue is full.
    pub fn submit(&self, record: Box<Record>) {
        match self.queue.try_send(Message::Line(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => crate::metrics::access_log_dropped("queue_full", 1),
            Err(TrySendError::Disconnected(_)) => crate::metrics::access_log_dropped("write_failed", 1),
        }
    }

    /// Asks the writer to reopen its file (after the lines it has in hand).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Waits, up to `timeout` in all, until every record queued so far is
    /// written (at shutdown); a writer stuck on its file is left behind.
    /// Blocks the calling thread.
    pub fn flush(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let (done, written) = std::sync::mpsc::channel();
        let mut flush = Message::Flush(done);
        loop {
            match self.queue.try_send(flush) {
                Ok(()) => break,
                Err(TrySendError::Full(again)) if std::time::Instant::now() < deadline => {
                    flush = again;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}

/// The open destination.
enum Output {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Output {
    fn open(destination: Destination) -> io::Result<Self> {
        Ok(match destination {
            Destination::Stdout => Self::Stdout,
            Destination::File(path) => {
                let file = append(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                Self::File { path, file }
            }
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Stdout => io::stdout().lock().write_all(bytes),
            Self::File { file, .. } => file.write_all(bytes),
        }
    }

    /// Opens the file anew by its path; on failure the old one stays open.
    fn reopen(&mut self) {
        if let Self::File { path, file } = self {
            match append(path) {
                Ok(reopened) => *file = reopened,
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot reopen the access log; writing on to the open one"),
            }
        }
    }
}

fn append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    out: Output,
    lines: Receiver<Message>,
    reopen: Arc<AtomicBool>,
    gateway: String,
    batch: Vec<u8>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let first = match self.lines.recv_timeout(REOPEN_CHECK) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    self.reopen_if_asked();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.reopen_if_asked();
            let mut flushed = Vec::new();
            let mut lines = 0_u64;
            let mut next = Some(first);
            while let Some(message) = next {
                match message {
                    Message::Line(record) => {
                        super::line::write(&mut self.batch, &record, &self.gateway);
                        lines += 1;
                    }
                    Message::Flush(done) => flushed.push(done),
                }
                if self.batch.len() >= BATCH_BYTES {
                    self.write_batch(&mut lines);
                }
                next = self.lines.try_recv().ok();
            }
            self.write_batch(&mut lines);
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    fn reopen_if_asked(&mut self) {
        if self.reopen.swap(false, Ordering::Relaxed) {
            self.out.reopen();
        }
    }

    /// Writes the batch of `lines` lines, counting them written or dropped.
    fn write_batch(&mut self, lines: &mut u64) {
        if self.batch.is_empty() {
            return;
        }
        match self.out.write_all(&self.batch) {
            Ok(()) => crate::metrics::access_log_written(*lines),
            Err(e) => {
                tracing::warn!(error = %e, lines = *lines, "cannot write access log lines; dropped");
                crate::metrics::access_log_dropped("write_failed", *lines);
            }
        }
        self.batch.clear();
        *lines = 0;
    }
}

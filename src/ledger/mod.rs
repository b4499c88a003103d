//! The usage ledger: one row per request in the database, written off the request path.
//!
//! The observer only pushes a copy of the record onto a bounded queue: a request never
//! waits on the database. A full queue drops the record and counts it (`dropped`). One
//! writer task batches records (`flush_ms` after the first one, or as soon as `batch_rows`
//! are waiting) and inserts each batch in one statement. While the database fails, the
//! writer retries the same batch with backoff and takes no more, so the queue fills and
//! further records are dropped and counted: memory stays bounded. `shutdown` writes what is
//! queued.
//!
//! What a crash can lose: `kill -9` (or a power cut) loses the records still queued, at most
//! `flush_ms` worth of requests (default 200 ms) plus a batch being written; a database
//! outage longer than the queue holds loses the records dropped meanwhile (counted). With
//! `[ledger] synchronous = true` nothing answered is lost: the writer does not wait to
//! batch (requests that end together still share a statement), and a request's answer
//! completes only once its row is committed ([`Ledger::sync`]), at the price of one
//! database write in each answer's latency.
//!
//! The queue is a vector under a mutex rather than a channel: a channel wakes its reader on
//! every send, which cost a task wake-up and a timer registration per request (bench, c=64:
//! a few µs of CPU each), where the writer needs waking once per batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::config::LedgerConfig;
use crate::db::{Batch, Db, UnreadableReceipt};
use crate::observe::{Observer, RequestRecord};
use crate::receipt::Receipt;

pub mod receipts;

/// Longest wait between two tries of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Tries of each batch at shutdown before its records count as lost.
const SHUTDOWN_TRIES: u32 = 3;
/// Longest an answer waits for its row in synchronous mode (a database that is down).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters for metrics; every field only grows except the queue depth.
#[derive(Debug, Default)]
pub struct LedgerStats {
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records written.
    pub written: AtomicU64,
    /// Batch writes that failed (each is retried while running).
    pub write_errors: AtomicU64,
    /// Records still unwritten at shutdown because the database kept failing.
    pub lost: AtomicU64,
}

pub struct Ledger {
    db: Db,
    queue: Arc<Queue>,
    stats: Arc<LedgerStats>,
    /// Records committed, in queue order (the writer takes them oldest first).
    committed: Arc<watch::Sender<u64>>,
    /// `[ledger] synchronous`.
    synchronous: bool,
    stop: watch::Sender<bool>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Starts the writer task (on the current runtime).
    pub fn start(db: Db, cfg: &LedgerConfig) -> Arc<Ledger> {
        let queue = Arc::new(Queue {
            buf: Mutex::new(VecDeque::new()),
            held: AtomicU64::new(0),
            capacity: cfg.queue_capacity,
            batch_rows: cfg.batch_rows,
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            writing: Mutex::new(Vec::new()),
            pushed: AtomicU64::new(0),
        });
        let stats = Arc::new(LedgerStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let committed = Arc::new(watch::Sender::new(0));
        let writer = Writer {
            db: db.clone(),
            queue: queue.clone(),
            stats: stats.clone(),
            stop: stop_rx,
            // Synchronous: each answer waits on its row, so nothing waits to be batched.
            flush: if cfg.synchronous {
                Duration::ZERO
            } else {
                cfg.flush_interval
            },
            batch_rows: cfg.batch_rows,
            committed: committed.clone(),
        };
        let task = tokio::spawn(writer.run());
        Arc::new(Ledger {
            db,
            queue,
            stats,
            committed,
            synchronous: cfg.synchronous,
            stop,
            writer: Mutex::new(Some(task)),
        })
    }

    /// The ledger's database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A receipt still waiting to be written (queued, or in the batch being written).
    /// Looked for in the order records move (queue, batch, database), so that a receipt
    /// on its way is found in one place or the next; the caller then reads the database.
    /// Assembled from the record (not under the queue's lock, which requests take).
    /// A queued receipt that cannot be read is returned as such (whose it is, and why), as
    /// one stored is.
    pub fn queued_receipt(&self, id: &str) -> Option<Result<Receipt, UnreadableReceipt>> {
        let is = |r: &&RequestRecord| r.receipt.as_ref().is_some_and(|d| d.id() == id);
        let found = match self.queue.buf.lock() {
            Ok(buf) => buf.iter().rev().find(is).cloned(),
            Err(_) => None,
        };
        let found = match found {
            Some(r) => r,
            None => {
                let writing = self.queue.writing.lock().ok()?;
                writing.iter().find_map(|b| b.iter().find(is)).cloned()?
            }
        };
        let parts = found.receipt.as_ref()?;
        Some(parts.receipt(&found).map_err(|error| UnreadableReceipt {
            receipt_id: parts.id().to_owned(),
            key_name: found.key_name.clone(),
            error,
        }))
    }

    pub fn stats(&self) -> &Arc<LedgerStats> {
        &self.stats
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }

    /// Records waiting to be written.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// `[ledger] synchronous`: answers wait on [`sync`](Self::sync).
    pub fn synchronous(&self) -> bool {
        self.synchronous
    }

    /// Waits until every record queued so far is committed (within [`SYNC_TIMEOUT`]).
    /// False when it was not: the database is failing, or the records were dropped.
    pub async fn sync(&self) -> bool {
        let target = self.queue.pushed.load(Ordering::Acquire);
        let mut rx = self.committed.subscribe();
        let done = tokio::time::timeout(SYNC_TIMEOUT, rx.wait_for(|c| *c >= target)).await;
        let ok = matches!(done, Ok(Ok(_)));
        if !ok {
            tracing::error!("ledger: a synchronous answer's row was not committed in time");
        }
        ok
    }

    /// Writes what is queued (bounded by `grace`) and stops the writer. Later records are
    /// dropped and counted.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let task = self.writer.lock().ok().and_then(|mut t| t.take());
        if let Some(mut task) = task {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
                // Later records are dropped and counted, not left in a queue nobody reads.
                let queued = match self.queue.buf.lock() {
                    Ok(mut b) => {
                        self.queue.closed.store(true, Ordering::Relaxed);
                        std::mem::take(&mut *b).len() as u64
                    }
                    Err(_) => 0,
                };
                let left = queued + self.queue.held.swap(0, Ordering::Relaxed);
                self.stats.lost.fetch_add(left, Ordering::Relaxed);
                tracing::error!(
                    "ledger: shutdown flush did not finish within {grace:?}; \
                     about {left} queued records not written"
                );
            }
        }
    }
}

impl Drop for Ledger {
    /// Dropped without `shutdown` (a test, a failed start): the writer sees the stop and
    /// drains, instead of reading a closed stop channel as "not stopped" forever.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Observer for Ledger {
    fn request(&self, r: &RequestRecord) {
        self.request_owned(r.clone());
    }
    fn request_owned(&self, r: RequestRecord) {
        if !self.queue.push(r) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The bounded queue between requests and the writer.
struct Queue {
    buf: Mutex<VecDeque<RequestRecord>>,
    /// Records the writer took out of `buf` and has not written yet (counted as lost if
    /// shutdown has to abort it).
    held: AtomicU64,
    capacity: usize,
    batch_rows: usize,
    /// Set (under the lock) at shutdown once the writer took the last records: later ones
    /// are dropped and counted, not left unwritten in the queue.
    closed: AtomicBool,
    /// Woken by the first record of an empty queue and when `batch_rows` are waiting.
    wake: Notify,
    /// The batches with receipts the writer took and has not written yet (shared with
    /// it): a receipt is readable from its id's issue until it is in the database.
    writing: Mutex<Vec<Batch>>,
    /// Records ever queued (counted under the lock, so in queue order).
    pushed: AtomicU64,
}

impl Queue {
    /// False when the queue is full (the record is dropped).
    fn push(&self, r: RequestRecord) -> bool {
        let Ok(mut buf) = self.buf.lock() else {
            return false;
        };
        if buf.len() >= self.capacity || self.closed.load(Ordering::Relaxed) {
            return false;
        }
        buf.push_back(r);
        self.pushed.fetch_add(1, Ordering::Release);
        let n = buf.len();
        drop(buf);
        if n == 1 || n == self.batch_rows {
            self.wake.notify_one();
        }
        true
    }

    fn len(&self) -> usize {
        self.buf.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Takes up to `max` of the oldest records as one batch, none if the queue is empty.
    fn take(&self, max: usize) -> Option<Batch> {
        let Ok(mut buf) = self.buf.lock() else {
            return None;
        };
        // From the front of a ring buffer: no shifting of what stays queued, under the lock
        // every request's push takes (after an outage the queue can hold 100k records).
        let n = buf.len().min(max);
        if n == 0 {
            return None;
        }
        let batch: Batch = Arc::new(buf.drain(..n).collect());
        self.held.store(n as u64, Ordering::Relaxed);
        // Under the queue's lock, so that a reader never sees a receipt in neither place.
        self.hold_receipts(&batch);
        Some(batch)
    }

    /// Keeps `batch` findable by `queued_receipt` until it is written: shared, not copied.
    fn hold_receipts(&self, batch: &Batch) {
        if batch.iter().all(|r| r.receipt.is_none()) {
            return;
        }
        if let Ok(mut w) = self.writing.lock() {
            w.push(batch.clone());
        }
    }

    /// The held receipts are in the database now (or lost at shutdown).
    fn written(&self) {
        if let Ok(mut w) = self.writing.lock() {
            w.clear();
        }
    }
}

struct Writer {
    db: Db,
    queue: Arc<Queue>,
    stats: Arc<LedgerStats>,
    stop: watch::Receiver<bool>,
    flush: Duration,
    batch_rows: usize,
    committed: Arc<watch::Sender<u64>>,
}

impl Writer {
    fn committed(&self, n: usize) {
        self.stats.written.fetch_add(n as u64, Ordering::Relaxed);
        self.committed.send_modify(|c| *c += n as u64);
    }

    async fn run(mut self) {
        // A batch that failed and is retried until shutdown, when `drain` writes it first.
        let mut unwritten: Option<Batch> = None;
        while !*self.stop.borrow() {
            // Wait for a first record, then up to `flush` for more.
            if self.queue.len() == 0 {
                tokio::select! {
                    _ = self.queue.wake.notified() => {}
                    _ = self.stop.changed() => break,
                }
            }
            let deadline = tokio::time::Instant::now() + self.flush;
            let sleep = tokio::time::sleep_until(deadline);
            tokio::pin!(sleep);
            while self.queue.len() < self.batch_rows {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = self.queue.wake.notified() => {}
                    _ = self.stop.changed() => break,
                }
            }
            if let Some(batch) = self.queue.take(self.batch_rows) {
                if !self.write_until_done_or_stopped(&batch).await {
                    unwritten = Some(batch);
                    break;
                }
            }
        }
        self.drain(unwritten).await;
    }

    /// Retries a failing batch with backoff until it is written (true) or shutdown begins
    /// (false).
    async fn write_until_done_or_stopped(&mut self, batch: &Batch) -> bool {
        let mut backoff = self.flush.max(Duration::from_millis(50));
        let mut failing = false;
        loop {
            match self.db.insert_requests(batch).await {
                Ok(()) => {
                    self.committed(batch.len());
                    if failing {
                        tracing::info!("ledger: database writes recovered");
                    }
                    self.queue.held.store(0, Ordering::Relaxed);
                    self.queue.written();
                    return true;
                }
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(
                            rows = batch.len(),
                            "ledger: write failed, retrying (new records are dropped and \
                             counted once the queue is full): {e}"
                        );
                    }
                    failing = true;
                }
            }
            if *self.stop.borrow() {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.changed() => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// At shutdown: the unwritten batch, then everything queued, in batches, each tried a
    /// few times.
    async fn drain(self, unwritten: Option<Batch>) {
        let mut batches: Vec<Batch> = unwritten.into_iter().collect();
        // Later records are refused (the queue looks full) and counted as dropped.
        if let Ok(mut buf) = self.queue.buf.lock() {
            self.queue.closed.store(true, Ordering::Relaxed);
            let mut rest = std::mem::take(&mut *buf).into_iter().peekable();
            while rest.peek().is_some() {
                let batch: Batch = Arc::new(rest.by_ref().take(self.batch_rows).collect());
                // Under the queue's lock, as `take` does.
                self.queue.hold_receipts(&batch);
                batches.push(batch);
            }
        }
        let held = &self.queue.held;
        let mut left: u64 = batches.iter().map(|b| b.len() as u64).sum();
        held.store(left, Ordering::Relaxed);
        for batch in &batches {
            let mut ok = false;
            for i in 0..SHUTDOWN_TRIES {
                match self.db.insert_requests(batch).await {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => {
                        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("ledger: shutdown write failed (try {}): {e}", i + 1);
                        tokio::time::sleep(Duration::from_millis(100 << i)).await;
                    }
                }
            }
            let n = batch.len() as u64;
            held.fetch_sub(n, Ordering::Relaxed);
            left -= n;
            if ok {
                self.committed(batch.len());
            } else {
                // The database is down: the rest would fail the same way, slowly.
                let n = n + left;
                held.store(0, Ordering::Relaxed);
                self.stats.lost.fetch_add(n, Ordering::Relaxed);
                tracing::error!("ledger: {n} records lost at shutdown: database unavailable");
                break;
            }
        }
        self.queue.written();
    }
}

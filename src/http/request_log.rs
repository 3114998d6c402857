//! The request log's writer, off the request path: `auth::require_api_key` hands each
//! authenticated request's entry to [`RequestLog::record`], which only puts it on a bounded
//! channel; one task owns the channel and writes what has gathered in one transaction while
//! requests go on (TEI's idiom: a cheap handle, one owner). A full channel (the database slower
//! than the traffic) drops the entry and counts it (`altimage_request_log_entries_total
//! {result="dropped"}`) rather than slowing the request. On shutdown the queue is written out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::request_log::RequestLogEntry;

/// Entries waiting for the writer: at a few hundred bytes each, a few MB at most.
const QUEUE: usize = 16_384;
/// Entries written in one transaction at most.
const BATCH: usize = 1_000;
/// Attempts at a batch before it is given up (the database is down), and the wait between.
const ATTEMPTS: usize = 3;
const RETRY_WAIT: Duration = Duration::from_millis(500);
/// At most one warning per this many dropped entries.
const DROP_WARNING_EVERY: u64 = 1_000;

/// The handle requests use. Cheap to clone.
#[derive(Clone)]
pub struct RequestLog {
    sender: mpsc::Sender<RequestLogEntry>,
    metrics: Arc<Metrics>,
}

impl RequestLog {
    /// Starts the writer; it stops once `stop` turns true and the queue is written.
    pub fn start(
        store: Store,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> (RequestLog, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(write_loop(store, receiver, metrics.clone(), stop));
        (RequestLog { sender, metrics }, task)
    }

    /// Queues one entry without waiting.
    pub fn record(&self, entry: RequestLogEntry) {
        if self.sender.try_send(entry).is_err() {
            let dropped = self
                .metrics
                .request_log_entries
                .with_label_values(&["dropped"]);
            if dropped.get().is_multiple_of(DROP_WARNING_EVERY) {
                tracing::warn!(
                    dropped = dropped.get() + 1,
                    "the request log's queue is full: entries are dropped (the database is slower than the traffic)"
                );
            }
            dropped.inc();
        }
    }
}

async fn write_loop(
    store: Store,
    mut receiver: mpsc::Receiver<RequestLogEntry>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            received = receiver.recv() => match received {
                Some(entry) => batch.push(entry),
                None => break,
            },
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        // Whatever else arrived while the last batch was written goes in this one: under load
        // batches grow by themselves, and a lone request is written at once.
        while batch.len() < BATCH {
            match receiver.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        write(&store, &mut batch, &metrics).await;
    }
    // Stopping: the requests already answered are written before the database closes.
    receiver.close();
    while let Some(entry) = receiver.recv().await {
        batch.push(entry);
        if batch.len() == BATCH {
            write(&store, &mut batch, &metrics).await;
        }
    }
    write(&store, &mut batch, &metrics).await;
}

/// Writes and empties `batch`, trying a few times.
async fn write(store: &Store, batch: &mut Vec<RequestLogEntry>, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    let count = batch.len() as u64;
    for attempt in 1..=ATTEMPTS {
        match store.insert_request_log(batch).await {
            Ok(()) => {
                metrics
                    .request_log_entries
                    .with_label_values(&["written"])
                    .inc_by(count);
                batch.clear();
                return;
            }
            Err(error) if attempt < ATTEMPTS => {
                tracing::warn!(%error, attempt, "writing the request log failed; retrying");
                tokio::time::sleep(RETRY_WAIT).await;
            }
            Err(error) => {
                tracing::error!(%error, entries = count, "writing the request log failed; these entries are lost");
            }
        }
    }
    metrics
        .request_log_entries
        .with_label_values(&["failed"])
        .inc_by(count);
    batch.clear();
}

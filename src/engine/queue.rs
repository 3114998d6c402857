//! The queue of prepared images, owned by one task. Workers ask for a batch when they are free;
//! entries whose client left are dropped and entries past their deadline are answered with 503
//! before any compute is spent on them.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{EngineError, Inferred};
use crate::metrics::ModelMetrics;
use crate::model::GenerationRequest;

/// One prepared image waiting for a batch.
pub struct Entry {
    pub request: GenerationRequest,
    /// Decoder positions this entry may take (prompt + new tokens, times beams): the budget unit.
    pub token_cost: usize,
    pub enqueued_at: Instant,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Inferred, EngineError>>,
    /// The request's span, so that the worker's log lines about this image name its request
    /// and account.
    pub span: tracing::Span,
}

impl Entry {
    /// The client that asked for it is gone (its reply receiver was dropped).
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// What one batch may hold.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_size: usize,
    pub max_tokens: usize,
    /// Wait this long for a batch to fill once the first entry is there (0 = never wait).
    pub max_delay: Duration,
    pub retry_after: Duration,
}

/// Takes the next batch off the front of the queue: abandoned entries are dropped, expired ones
/// answered with `QueueTimeout`, and the batch grows in FIFO order until the size or token
/// budget is reached (at least one entry, whatever its cost). Returns (batch, abandoned count,
/// expired count).
pub fn take_batch(
    queue: &mut VecDeque<Entry>,
    limits: &BatchLimits,
    now: Instant,
) -> (Vec<Entry>, usize, usize) {
    let (abandoned, expired) = settle(queue, limits, now);
    let mut batch = Vec::new();
    let mut tokens = 0;
    while let Some(next) = queue.front() {
        if batch.len() >= limits.max_size
            || (!batch.is_empty() && tokens + next.token_cost > limits.max_tokens)
        {
            break;
        }
        tokens += next.token_cost;
        batch.push(queue.pop_front().expect("front exists; this is a bug"));
    }
    (batch, abandoned, expired)
}

enum QueueCommand {
    // Boxed: an entry (tensor handle, span, channels) is large beside a batch request.
    Append(Box<Entry>),
    NextBatch(oneshot::Sender<Vec<Entry>>),
}

/// The queue task has stopped: the server is shutting down.
#[derive(Debug)]
pub struct QueueClosed;

/// Cheap handle to the queue task.
#[derive(Clone)]
pub struct Queue {
    sender: mpsc::UnboundedSender<QueueCommand>,
}

impl Queue {
    /// Spawns the owning task on the current runtime. The channel is unbounded on purpose: the
    /// admission semaphore already bounds how many entries can exist.
    pub fn spawn(limits: BatchLimits, metrics: ModelMetrics) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(queue_task(receiver, limits, metrics));
        Self { sender }
    }

    /// Hands an entry to the queue; `Err` when the queue task is gone (shutdown).
    pub fn append(&self, entry: Entry) -> Result<(), QueueClosed> {
        self.sender
            .send(QueueCommand::Append(Box::new(entry)))
            .map_err(|_| QueueClosed)
    }

    /// Waits for the next non-empty batch; `None` once the queue task has stopped.
    pub async fn next_batch(&self) -> Option<Vec<Entry>> {
        let (reply, receiver) = oneshot::channel();
        self.sender.send(QueueCommand::NextBatch(reply)).ok()?;
        receiver.await.ok()
    }
}

async fn queue_task(
    mut receiver: mpsc::UnboundedReceiver<QueueCommand>,
    limits: BatchLimits,
    metrics: ModelMetrics,
) {
    let mut entries: VecDeque<Entry> = VecDeque::new();
    let mut waiting: VecDeque<oneshot::Sender<Vec<Entry>>> = VecDeque::new();
    // Deadlines are enforced even while no worker asks: a sweep every 50 ms when not empty.
    let mut sweep_tick = tokio::time::interval(Duration::from_millis(50));
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let fill_deadline = fill_deadline(&entries, &waiting, &limits);
        tokio::select! {
            command = receiver.recv() => match command {
                Some(QueueCommand::Append(entry)) => entries.push_back(*entry),
                Some(QueueCommand::NextBatch(reply)) => waiting.push_back(reply),
                None => break,
            },
            _ = sweep_tick.tick(), if !entries.is_empty() => {}
            _ = sleep_until(fill_deadline), if fill_deadline.is_some() => {}
        }
        let now = Instant::now();
        let (abandoned, expired) = settle(&mut entries, &limits, now);
        count_rejections(&metrics, abandoned, expired);
        while !entries.is_empty() && !waiting.is_empty() {
            if !batch_due(&entries, &limits, now) {
                break;
            }
            let (batch, abandoned, expired) = take_batch(&mut entries, &limits, now);
            count_rejections(&metrics, abandoned, expired);
            if batch.is_empty() {
                continue;
            }
            let worker = waiting
                .pop_front()
                .expect("checked non-empty; this is a bug");
            if let Err(batch) = worker.send(batch) {
                // That worker stopped asking; put the entries back in order.
                for entry in batch.into_iter().rev() {
                    entries.push_front(entry);
                }
            }
        }
        metrics.queue_depth.set(entries.len() as i64);
    }
    for entry in entries {
        let _ = entry.reply.send(Err(EngineError::Draining {
            retry_after: limits.retry_after,
        }));
    }
}

/// A batch is due when it is full or its oldest entry has waited `max_delay`.
fn batch_due(entries: &VecDeque<Entry>, limits: &BatchLimits, now: Instant) -> bool {
    limits.max_delay.is_zero()
        || entries.len() >= limits.max_size
        || entries
            .front()
            .is_some_and(|oldest| oldest.enqueued_at + limits.max_delay <= now)
}

fn fill_deadline(
    entries: &VecDeque<Entry>,
    waiting: &VecDeque<oneshot::Sender<Vec<Entry>>>,
    limits: &BatchLimits,
) -> Option<Instant> {
    if limits.max_delay.is_zero() || waiting.is_empty() {
        return None;
    }
    entries
        .front()
        .map(|oldest| oldest.enqueued_at + limits.max_delay)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Drops abandoned entries and answers expired ones with 503; returns the counts.
pub fn settle(entries: &mut VecDeque<Entry>, limits: &BatchLimits, now: Instant) -> (usize, usize) {
    let mut abandoned = 0;
    let mut expired = 0;
    let mut kept = VecDeque::with_capacity(entries.len());
    for entry in entries.drain(..) {
        if entry.is_abandoned() {
            abandoned += 1;
        } else if entry.deadline <= now {
            expired += 1;
            let _ = entry.reply.send(Err(EngineError::QueueTimeout {
                retry_after: limits.retry_after,
            }));
        } else {
            kept.push_back(entry);
        }
    }
    *entries = kept;
    (abandoned, expired)
}

fn count_rejections(metrics: &ModelMetrics, abandoned: usize, expired: usize) {
    if abandoned > 0 {
        metrics
            .shared
            .rejected
            .with_label_values(&["cancelled"])
            .inc_by(abandoned as u64);
    }
    if expired > 0 {
        metrics
            .shared
            .rejected
            .with_label_values(&["expired"])
            .inc_by(expired as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GenerationOptions, ImageTensor, Task};

    fn limits(max_size: usize, max_tokens: usize) -> BatchLimits {
        BatchLimits {
            max_size,
            max_tokens,
            max_delay: Duration::ZERO,
            retry_after: Duration::from_secs(1),
        }
    }

    type Reply = oneshot::Receiver<Result<Inferred, EngineError>>;

    fn entry(cost: usize, now: Instant, ttl: Duration) -> (Entry, Reply) {
        let (reply, receiver) = oneshot::channel();
        let request = GenerationRequest {
            image: ImageTensor::new(ndarray::ArrayD::zeros(vec![3, 1, 1])),
            options: GenerationOptions {
                task: Task::default(),
                max_new_tokens: cost,
                num_beams: 1,
                sampling: None,
            },
        };
        (
            Entry {
                request,
                token_cost: cost,
                enqueued_at: now,
                deadline: now + ttl,
                reply,
                span: tracing::Span::none(),
            },
            receiver,
        )
    }

    fn costs(batch: &[Entry]) -> Vec<usize> {
        batch.iter().map(|e| e.token_cost).collect()
    }

    #[tokio::test]
    async fn size_limit_keeps_fifo_order() {
        let now = Instant::now();
        let mut queue = VecDeque::new();
        let mut receivers = Vec::new();
        for cost in 1..=5 {
            let (e, r) = entry(cost, now, Duration::from_secs(5));
            queue.push_back(e);
            receivers.push(r);
        }
        let (batch, ..) = take_batch(&mut queue, &limits(3, 1000), now);
        assert_eq!(costs(&batch), [1, 2, 3]);
        let (batch, ..) = take_batch(&mut queue, &limits(3, 1000), now);
        assert_eq!(costs(&batch), [4, 5]);
    }

    #[tokio::test]
    async fn token_budget_stops_the_batch_but_never_starves_a_big_entry() {
        let now = Instant::now();
        let mut queue = VecDeque::new();
        let mut receivers = Vec::new();
        for cost in [40, 50, 30, 200] {
            let (e, r) = entry(cost, now, Duration::from_secs(5));
            queue.push_back(e);
            receivers.push(r);
        }
        let (batch, ..) = take_batch(&mut queue, &limits(8, 100), now);
        assert_eq!(
            costs(&batch),
            [40, 50],
            "30 would exceed 100; order is kept"
        );
        let (batch, ..) = take_batch(&mut queue, &limits(8, 100), now);
        assert_eq!(costs(&batch), [30]);
        let (batch, ..) = take_batch(&mut queue, &limits(8, 100), now);
        assert_eq!(
            costs(&batch),
            [200],
            "an entry over the budget still runs alone"
        );
    }

    #[tokio::test]
    async fn dropped_receivers_are_skipped_and_expired_entries_answered() {
        let now = Instant::now();
        let mut queue = VecDeque::new();
        let (gone, gone_receiver) = entry(1, now, Duration::from_secs(5));
        drop(gone_receiver);
        let (old, old_receiver) = entry(2, now - Duration::from_secs(10), Duration::from_secs(1));
        let (fresh, _fresh_receiver) = entry(3, now, Duration::from_secs(5));
        queue.extend([gone, old, fresh]);
        let (batch, abandoned, expired) = take_batch(&mut queue, &limits(8, 100), now);
        assert_eq!(costs(&batch), [3]);
        assert_eq!((abandoned, expired), (1, 1));
        assert!(matches!(
            old_receiver.await,
            Ok(Err(EngineError::QueueTimeout { .. }))
        ));
    }

    #[tokio::test]
    async fn the_task_serves_waiting_workers_and_waits_for_the_batch_delay() {
        let metrics = ModelMetrics::standalone(8);
        let mut batch_limits = limits(4, 1000);
        batch_limits.max_delay = Duration::from_millis(200);
        let queue = Queue::spawn(batch_limits, metrics.clone());
        let worker = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next_batch().await })
        };
        let now = Instant::now();
        let mut receivers = Vec::new();
        for cost in [1, 2] {
            let (e, r) = entry(cost, now, Duration::from_secs(5));
            assert!(queue.append(e).is_ok());
            receivers.push(r);
        }
        // Not full: the batch leaves only when the oldest entry has waited the delay.
        let batch = worker.await.unwrap().unwrap();
        assert!(
            now.elapsed() >= Duration::from_millis(190),
            "{:?}",
            now.elapsed()
        );
        assert_eq!(costs(&batch), [1, 2]);
        assert_eq!(metrics.queue_depth.get(), 0);
    }
}

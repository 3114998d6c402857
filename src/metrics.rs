//! Prometheus metrics: every series registered at start-up (so dashboards see zeros before
//! traffic), `altimage_` prefix, never an account label. The engine's series carry a `model`
//! label (each loaded model has its own engine); [`ModelMetrics`] is one model's view.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Why a request was turned away or abandoned; the `reason` label of `rejected_total`.
pub const REJECT_REASONS: [&str; 10] = [
    "too_large",
    "bad_image",
    "bad_request",
    "overloaded",
    "expired",
    "cancelled",
    "unauthorized",
    "rate_limited",
    // 405, 408 and 501 from the HTTP layer around the handlers.
    "protocol",
    // Connections refused beyond --max-connections.
    "connections",
];

/// Inference stages timed per batch; the `stage` label of `batch_stage_seconds`.
pub const STAGES: [&str; 3] = ["vision", "encoder", "decode"];

/// What happened to one meter report attempt, or why a report was given up on; the `result`
/// label of `billing_events_total`. The last four are dead reports an operator must look at.
pub const BILLING_RESULTS: [&str; 9] = [
    "sent",
    "duplicate",
    "retry",
    "in_doubt",
    "circuit_open",
    "failed",
    "expired",
    "needs_reconcile",
    "customer_deleted",
];

/// What happened to a job item's attempt; the `result` label of `job_items_processed_total`.
/// `lost`: the item's claim was gone (its job was cancelled, or another replica took it over).
pub const JOB_ITEM_RESULTS: [&str; 4] = ["succeeded", "failed", "retried", "lost"];

/// What a webhook attempt did; the `result` label of `webhook_deliveries_total`. `failed`: given
/// up on after a day of retries.
pub const WEBHOOK_RESULTS: [&str; 3] = ["delivered", "retry", "failed"];

/// What became of a request-log entry; the `result` label of `request_log_entries_total`.
/// `dropped`: the writer's queue was full (the database is slower than the traffic); `failed`:
/// the database refused its batch three times.
pub const REQUEST_LOG_RESULTS: [&str; 3] = ["written", "dropped", "failed"];

/// What a certificate reload did; the `result` label of `tls_reloads_total`.
pub const TLS_RELOAD_RESULTS: [&str; 2] = ["reloaded", "failed"];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    images: IntCounterVec,
    batches: IntCounterVec,
    queue_time: HistogramVec,
    prepare_time: HistogramVec,
    stage_time: HistogramVec,
    batch_size: HistogramVec,
    generated_tokens: HistogramVec,
    queue_depth: IntGaugeVec,
    permits_in_use: IntGaugeVec,
    pub open_connections: IntGauge,
    pub rejected: IntCounterVec,
    /// The server's readiness: every loaded model ready (what `/health/ready` answers).
    ready: IntGauge,
    model_ready: IntGaugeVec,
    /// Each registered model's `model_ready` series, which `ready` summarises.
    model_ready_series: std::sync::Mutex<Vec<IntGauge>>,
    pub draining: IntGauge,
    unhealthy_workers: IntGaugeVec,
    pub billing_reports_pending: IntGauge,
    pub billing_oldest_pending_seconds: IntGauge,
    pub billing_events: IntCounterVec,
    pub billing_stripe_request_seconds: Histogram,
    pub jobs: IntGaugeVec,
    pub job_items_processed: IntCounterVec,
    pub job_items_pending: IntGauge,
    pub job_items_oldest_pending_seconds: IntGauge,
    pub webhook_deliveries: IntCounterVec,
    pub webhook_deliveries_pending: IntGauge,
    pub request_log_entries: IntCounterVec,
    pub tls_reloads: IntCounterVec,
}

/// Seconds, geometric from 1 ms to ~2 min: preparation is milliseconds, a CPU batch minutes.
fn duration_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 18).expect("valid buckets; this is a bug")
}

impl Metrics {
    /// `routes` are the HTTP routes with their success status, so that the request series exist
    /// before the first request.
    pub fn new<P: AsRef<str>>(max_batch_size: usize, routes: &[(P, u16)]) -> Self {
        let register = |metric: Box<dyn prometheus::core::Collector>, registry: &Registry| {
            registry
                .register(metric)
                .expect("unique metric; this is a bug");
        };
        let registry = Registry::new_custom(Some("altimage".into()), None)
            .expect("valid prefix; this is a bug");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("valid metric; this is a bug");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric; this is a bug");
            metric
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric; this is a bug");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric; this is a bug");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("valid metric; this is a bug");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric; this is a bug");
            metric
        };
        let requests = counter_vec(
            "requests_total",
            "HTTP requests by route and status",
            &["route", "status"],
        );
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "HTTP request duration by route and status",
            )
            .buckets(duration_buckets()),
            &["route", "status"],
        )
        .expect("valid metric; this is a bug");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("unique metric; this is a bug");
        // The engine's series, one per loaded model.
        let per_model = |name: &str, help: &str, buckets: Vec<f64>| {
            let metric =
                HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["model"])
                    .expect("valid metric; this is a bug");
            register(Box::new(metric.clone()), &registry);
            metric
        };
        let gauge_per_model = |name: &str, help: &str| {
            let metric = IntGaugeVec::new(Opts::new(name, help), &["model"])
                .expect("valid metric; this is a bug");
            register(Box::new(metric.clone()), &registry);
            metric
        };
        let images = counter_vec(
            "images_total",
            "Rows generated (one per output of an image) by model and outcome (described, failed)",
            &["model", "outcome"],
        );
        let batches = counter_vec(
            "batches_total",
            "Inference batches run; images_total / batches_total is the mean batch size",
            &["model"],
        );
        let queue_time = per_model(
            "queue_seconds",
            "Time from enqueue to the start of the row's batch",
            duration_buckets(),
        );
        let prepare_time = per_model(
            "prepare_seconds",
            "Decode, resize and normalise time per image",
            duration_buckets(),
        );
        let stage_time = HistogramVec::new(
            HistogramOpts::new(
                "batch_stage_seconds",
                "Inference time per batch and stage (vision, encoder or prefill, decode)",
            )
            .buckets(duration_buckets()),
            &["model", "stage"],
        )
        .expect("valid metric; this is a bug");
        register(Box::new(stage_time.clone()), &registry);
        let size_buckets: Vec<f64> = (0..=max_batch_size.max(1).ilog2() + 1)
            .map(|p| f64::from(1u32 << p))
            .collect();
        let batch_size = per_model("batch_size", "Rows per inference batch", size_buckets);
        let generated_tokens = per_model(
            "generated_tokens",
            "Tokens generated per row",
            prometheus::exponential_buckets(1.0, 2.0, 11).expect("valid buckets; this is a bug"),
        );
        let queue_depth = gauge_per_model("queue_depth", "Prepared rows waiting for a batch");
        let permits_in_use = gauge_per_model(
            "permits_in_use",
            "Admission permits held (images admitted and not yet answered)",
        );
        let open_connections = gauge(
            "http_connections_open",
            "HTTP connections open (at most --max-connections; beyond it they are refused 503)",
        );
        let rejected = counter_vec(
            "rejected_total",
            "Requests refused or abandoned, by reason",
            &["reason"],
        );
        let ready = gauge(
            "ready",
            "1 when every loaded model accepts work (what /health/ready answers)",
        );
        let model_ready = gauge_per_model(
            "model_ready",
            "1 when the model accepts work (warmed up, not draining, a healthy worker)",
        );
        let draining = gauge("draining", "1 while shutting down");
        let unhealthy_workers =
            gauge_per_model("unhealthy_workers", "Model workers whose last batch failed");
        let billing_reports_pending = gauge(
            "billing_reports_pending",
            "Meter reports waiting to reach Stripe (0 while billing is off)",
        );
        let billing_oldest_pending_seconds = gauge(
            "billing_oldest_pending_seconds",
            "Age of the oldest meter report waiting to reach Stripe; past an hour, invoices may close without it",
        );
        let billing_events = counter_vec(
            "billing_events_total",
            "Meter report attempts by result (sent, duplicate = already at Stripe, retry, in_doubt, circuit_open, failed, expired), and reports given up on (needs_reconcile = in doubt too long, customer_deleted = failed by Stripe's customer.deleted)",
            &["result"],
        );
        let billing_stripe_request_seconds = histogram(
            "billing_stripe_request_seconds",
            "Duration of Stripe API requests",
            duration_buckets(),
        );
        for result in BILLING_RESULTS {
            billing_events.with_label_values(&[result]);
        }

        for reason in REJECT_REASONS {
            rejected.with_label_values(&[reason]);
        }

        let jobs = IntGaugeVec::new(
            Opts::new(
                "jobs",
                "Bulk jobs by status, over every account and replica",
            ),
            &["status"],
        )
        .expect("valid metric; this is a bug");
        register(Box::new(jobs.clone()), &registry);
        for status in crate::store::jobs::JOB_STATUSES {
            jobs.with_label_values(&[status]);
        }
        let job_items_processed = counter_vec(
            "job_items_processed_total",
            "Job item attempts on this replica by result (succeeded, failed, retried = a transient failure retried later, lost = its claim was gone: cancelled or taken over)",
            &["result"],
        );
        for result in JOB_ITEM_RESULTS {
            job_items_processed.with_label_values(&[result]);
        }
        let job_items_pending = gauge(
            "job_items_pending",
            "Job items not yet finished, over every job",
        );
        let job_items_oldest_pending_seconds = gauge(
            "job_items_oldest_pending_seconds",
            "Age of the oldest unfinished job item: grows when jobs get no capacity",
        );
        let webhook_deliveries = counter_vec(
            "webhook_deliveries_total",
            "Job webhook attempts on this replica by result (delivered, retry, failed = given up after the retry window)",
            &["result"],
        );
        for result in WEBHOOK_RESULTS {
            webhook_deliveries.with_label_values(&[result]);
        }
        let webhook_deliveries_pending = gauge(
            "webhook_deliveries_pending",
            "Job webhook deliveries waiting for a (re)try",
        );
        let request_log_entries = counter_vec(
            "request_log_entries_total",
            "Request-log entries by result (written, dropped = the writer's queue was full, failed = the database refused them)",
            &["result"],
        );
        for result in REQUEST_LOG_RESULTS {
            request_log_entries.with_label_values(&[result]);
        }
        let tls_reloads = counter_vec(
            "tls_reloads_total",
            "Certificate reloads (SIGHUP or a changed file) by result; a failed one keeps the old certificate",
            &["result"],
        );
        for result in TLS_RELOAD_RESULTS {
            tls_reloads.with_label_values(&[result]);
        }

        for (route, status) in routes {
            let status = status.to_string();
            let labels = [route.as_ref(), status.as_str()];
            requests.with_label_values(&labels);
            request_duration.with_label_values(&labels);
        }

        Self {
            registry,
            requests,
            request_duration,
            images,
            batches,
            queue_time,
            prepare_time,
            stage_time,
            batch_size,
            generated_tokens,
            queue_depth,
            permits_in_use,
            open_connections,
            rejected,
            ready,
            model_ready,
            model_ready_series: std::sync::Mutex::new(Vec::new()),
            draining,
            unhealthy_workers,
            billing_reports_pending,
            billing_oldest_pending_seconds,
            billing_events,
            billing_stripe_request_seconds,
            jobs,
            job_items_processed,
            job_items_pending,
            job_items_oldest_pending_seconds,
            webhook_deliveries,
            webhook_deliveries_pending,
            request_log_entries,
            tls_reloads,
        }
    }

    /// One model's series, created now so that they exist before its first request.
    pub fn model(self: &Arc<Self>, model: &str) -> ModelMetrics {
        for stage in STAGES {
            self.stage_time.with_label_values(&[model, stage]);
        }
        let m = [model];
        let ready = self.model_ready.with_label_values(&m);
        self.model_ready_series
            .lock()
            .expect("nothing panics while holding it")
            .push(ready.clone());
        ModelMetrics {
            images_described: self.images.with_label_values(&[model, "described"]),
            images_failed: self.images.with_label_values(&[model, "failed"]),
            batches: self.batches.with_label_values(&m),
            queue_time: self.queue_time.with_label_values(&m),
            prepare_time: self.prepare_time.with_label_values(&m),
            batch_size: self.batch_size.with_label_values(&m),
            generated_tokens: self.generated_tokens.with_label_values(&m),
            queue_depth: self.queue_depth.with_label_values(&m),
            permits_in_use: self.permits_in_use.with_label_values(&m),
            ready,
            unhealthy_workers: self.unhealthy_workers.with_label_values(&m),
            model: model.to_string(),
            shared: self.clone(),
        }
    }

    pub fn reject(&self, reason: &'static str) {
        debug_assert!(
            REJECT_REASONS.contains(&reason),
            "unknown reject reason {reason}"
        );
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to memory cannot fail; this is a bug");
        String::from_utf8(buffer).expect("the text format is UTF-8; this is a bug")
    }
}

/// One loaded model's series (its `model` label fixed), and the server's for what its engine
/// also counts (refusals, draining).
#[derive(Clone)]
pub struct ModelMetrics {
    pub images_described: IntCounter,
    pub images_failed: IntCounter,
    pub batches: IntCounter,
    pub queue_time: Histogram,
    pub prepare_time: Histogram,
    pub batch_size: Histogram,
    pub generated_tokens: Histogram,
    pub queue_depth: IntGauge,
    pub permits_in_use: IntGauge,
    ready: IntGauge,
    pub unhealthy_workers: IntGauge,
    model: String,
    pub shared: Arc<Metrics>,
}

impl ModelMetrics {
    pub fn stage_time(&self, stage: &str) -> Histogram {
        self.shared
            .stage_time
            .with_label_values(&[self.model.as_str(), stage])
    }

    pub fn reject(&self, reason: &'static str) {
        self.shared.reject(reason);
    }

    /// Sets this model's readiness and the server's, which is every model's.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
        let series = self
            .shared
            .model_ready_series
            .lock()
            .expect("nothing panics while holding it");
        let all = !series.is_empty() && series.iter().all(|gauge| gauge.get() == 1);
        self.shared.ready.set(i64::from(all));
    }

    /// For tests and benches that run an engine without a server.
    pub fn standalone(max_batch_size: usize) -> Self {
        Arc::new(Metrics::new::<&str>(max_batch_size, &[])).model("test")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_before_traffic() {
        let metrics = Arc::new(Metrics::new(16, &[("/v1/descriptions", 201)]));
        let _ = metrics.model("tiny-florence2");
        let text = metrics.render();
        for name in [
            "altimage_requests_total{route=\"/v1/descriptions\",status=\"201\"} 0",
            "altimage_request_duration_seconds",
            "altimage_images_total{model=\"tiny-florence2\",outcome=\"described\"} 0",
            "altimage_batch_stage_seconds_count{model=\"tiny-florence2\",stage=\"decode\"} 0",
            "altimage_queue_depth{model=\"tiny-florence2\"} 0",
            "altimage_batches_total",
            "altimage_queue_seconds",
            "altimage_prepare_seconds",
            "altimage_batch_stage_seconds",
            "altimage_batch_size",
            "altimage_generated_tokens",
            "altimage_queue_depth",
            "altimage_permits_in_use",
            "altimage_http_connections_open 0",
            "altimage_rejected_total",
            "altimage_ready 0",
            "altimage_model_ready{model=\"tiny-florence2\"} 0",
            "altimage_draining",
            "altimage_unhealthy_workers",
            "altimage_billing_reports_pending 0",
            "altimage_billing_oldest_pending_seconds 0",
            "altimage_billing_events_total{result=\"duplicate\"} 0",
            "altimage_billing_stripe_request_seconds",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        for reason in REJECT_REASONS {
            assert!(
                text.contains(&format!("altimage_rejected_total{{reason=\"{reason}\"}} 0")),
                "{reason}"
            );
        }
    }

    #[test]
    fn the_server_is_ready_when_every_model_is() {
        let metrics = Arc::new(Metrics::new::<&str>(4, &[]));
        let florence = metrics.model("florence");
        let qwen = metrics.model("qwen");
        let ready = || metrics.ready.get();
        assert_eq!(ready(), 0, "nothing has loaded");
        florence.set_ready(true);
        assert_eq!(ready(), 0, "qwen still loads");
        qwen.set_ready(true);
        assert_eq!(ready(), 1);
        florence.set_ready(false);
        assert_eq!(ready(), 0, "one model draining or unhealthy");
        assert!(
            metrics
                .render()
                .contains("altimage_model_ready{model=\"qwen\"} 1")
        );
    }
}

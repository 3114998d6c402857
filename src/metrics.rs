//! Prometheus metrics: every series registered at start-up (so dashboards see zeros before
//! traffic), `altimage_` prefix, never an account label.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
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

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub images: IntCounterVec,
    pub batches: IntCounter,
    pub queue_time: Histogram,
    pub prepare_time: Histogram,
    pub stage_time: HistogramVec,
    pub batch_size: Histogram,
    pub generated_tokens: Histogram,
    pub queue_depth: IntGauge,
    pub permits_in_use: IntGauge,
    pub open_connections: IntGauge,
    pub rejected: IntCounterVec,
    pub ready: IntGauge,
    pub draining: IntGauge,
    pub unhealthy_workers: IntGauge,
    pub billing_reports_pending: IntGauge,
    pub billing_oldest_pending_seconds: IntGauge,
    pub billing_events: IntCounterVec,
    pub billing_stripe_request_seconds: Histogram,
}

/// Seconds, geometric from 1 ms to ~2 min: preparation is milliseconds, a CPU batch minutes.
fn duration_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 18).expect("valid buckets; this is a bug")
}

impl Metrics {
    /// `routes` are the HTTP routes with their success status, so that the request series exist
    /// before the first request.
    pub fn new<P: AsRef<str>>(max_batch_size: usize, routes: &[(P, u16)]) -> Self {
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
        let images = counter_vec(
            "images_total",
            "Images processed by outcome (described, failed)",
            &["outcome"],
        );
        let batches = IntCounter::new(
            "batches_total",
            "Inference batches run; images_total / batches_total is the mean batch size",
        )
        .expect("valid metric; this is a bug");
        registry
            .register(Box::new(batches.clone()))
            .expect("unique metric; this is a bug");
        let queue_time = histogram(
            "queue_seconds",
            "Time from enqueue to the start of the image's batch",
            duration_buckets(),
        );
        let prepare_time = histogram(
            "prepare_seconds",
            "Decode, resize and normalise time per image",
            duration_buckets(),
        );
        let stage_time = HistogramVec::new(
            HistogramOpts::new(
                "batch_stage_seconds",
                "Inference time per batch and stage (vision, encoder, decode)",
            )
            .buckets(duration_buckets()),
            &["stage"],
        )
        .expect("valid metric; this is a bug");
        registry
            .register(Box::new(stage_time.clone()))
            .expect("unique metric; this is a bug");
        let size_buckets: Vec<f64> = (0..=max_batch_size.max(1).ilog2() + 1)
            .map(|p| f64::from(1u32 << p))
            .collect();
        let batch_size = histogram("batch_size", "Images per inference batch", size_buckets);
        let generated_tokens = histogram(
            "generated_tokens",
            "Tokens generated per image",
            prometheus::exponential_buckets(1.0, 2.0, 11).expect("valid buckets; this is a bug"),
        );
        let queue_depth = gauge("queue_depth", "Prepared images waiting for a batch");
        let permits_in_use = gauge(
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
            "1 when the server accepts work (warmed up, not draining, a healthy worker)",
        );
        let draining = gauge("draining", "1 while shutting down");
        let unhealthy_workers = gauge("unhealthy_workers", "Model workers whose last batch failed");
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
        for stage in STAGES {
            stage_time.with_label_values(&[stage]);
        }
        for (route, status) in routes {
            let status = status.to_string();
            let labels = [route.as_ref(), status.as_str()];
            requests.with_label_values(&labels);
            request_duration.with_label_values(&labels);
        }
        for outcome in ["described", "failed"] {
            images.with_label_values(&[outcome]);
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
            draining,
            unhealthy_workers,
            billing_reports_pending,
            billing_oldest_pending_seconds,
            billing_events,
            billing_stripe_request_seconds,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_before_traffic() {
        let text = Metrics::new(16, &[("/v1/descriptions", 201)]).render();
        for name in [
            "altimage_requests_total{route=\"/v1/descriptions\",status=\"201\"} 0",
            "altimage_request_duration_seconds",
            "altimage_images_total",
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
            "altimage_ready",
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
}

//! deploy/: the Helm chart rendered by the real helm into schema-valid Kubernetes objects, the
//! Compose, Prometheus and Grafana files checked, and every metric the alerts, dashboard and
//! autoscaler use scraped from a live `altimage serve`. The checks live in
//! deploy/tests/check_deploy.py; scripts/install-deploy-tools.sh installs helm, promtool and the
//! Python packages they need.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::command::text_of;
use common::server::{Server, get_text, http_client};

/// The deployment venv's python, installed once per test binary (the script is idempotent, but
/// parallel first runs would race on creating the venv).
fn deploy_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| common::script_output_path("scripts/install-deploy-tools.sh"))
}

/// Runs one check of deploy/tests/check_deploy.py and fails with its findings.
fn check(args: &[&str]) -> String {
    text_of(
        Command::new(deploy_python())
            .arg(common::root().join("deploy/tests/check_deploy.py"))
            .args(args),
        &format!("check_deploy.py {args:?}"),
    )
}

#[test]
fn helm_chart_renders_valid_objects_with_default_and_gpu_values() {
    let report = check(&["chart"]);
    // Each variant prints the kinds it rendered; the GPU one carries the whole set.
    let gpu = report
        .lines()
        .find(|l| l.starts_with("chart gpu:"))
        .unwrap_or_else(|| panic!("no GPU rendering in:\n{report}"));
    for kind in [
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
        "Secret",
    ] {
        assert!(gpu.contains(kind), "{kind} missing from {gpu}");
    }
    assert!(report.contains("chart default:"), "{report}");
}

#[test]
fn compose_prometheus_grafana_and_dockerfiles_are_valid() {
    let report = check(&["configs"]);
    assert!(report.contains("compose 4 services"), "{report}");
}

#[test]
fn the_deploy_checks_catch_broken_deployments() {
    check(&["selftest"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_dashboard_and_autoscaler_use_metrics_the_server_exports() {
    let server = Server::start(&[]);
    let response = http_client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let exposition = response.text().await.unwrap();
    // The autoscaler's signal, looked at here too so this test cannot pass on an empty scrape.
    assert!(
        exposition.contains("# TYPE altimage_queue_depth gauge"),
        "{exposition}"
    );
    // Series of error statuses appear only after such an answer; the documented statuses stand in.
    let openapi = get_text(&http_client(), server.url("/openapi.json")).await;
    let dir = tempfile::tempdir().unwrap();
    let (metrics_file, openapi_file) = (
        dir.path().join("metrics.txt"),
        dir.path().join("openapi.json"),
    );
    std::fs::write(&metrics_file, &exposition).unwrap();
    std::fs::write(&openapi_file, &openapi).unwrap();
    let report = check(&[
        "metrics",
        "--exposition",
        metrics_file.to_str().unwrap(),
        "--openapi",
        openapi_file.to_str().unwrap(),
    ]);
    assert!(report.contains("metric names referenced"), "{report}");
}

//! HTTPS: a client that trusts the test CA gets through and sees HSTS; one that does not, and
//! plain HTTP to the TLS port, fail; a certificate replaced on disk is served to new connections
//! after SIGHUP (and, without a signal, once the file change is seen) while a request that
//! started on the old one completes; a broken replacement keeps the old certificate.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{TestCa, eventually, replace_file};
use crate::common;
use crate::common::server::Server;

/// The certificate the server presents to a new connection.
async fn served_certificate(address: &str, ca_pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A client that trusts `ca_pem` only.
fn trusting(ca_pem: &str, key: &str) -> reqwest::Client {
    common::server_process::client_with_key(key)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Serves one PNG that is answered only once the test opens the gate: the request that asked
/// for it stays in flight, on its connection, until then.
async fn gated_image_host(arrived: Arc<Notify>, gate: Arc<Notify>) -> String {
    let png = common::fixture(1);
    let app = axum::Router::new().route(
        "/gated.png",
        axum::routing::get(move || {
            let (arrived, gate, png) = (arrived.clone(), gate.clone(), png.clone());
            async move {
                arrived.notify_one();
                gate.notified().await;
                ([("content-type", "image/png")], png)
            }
        }),
    );
    common::server::serve_on_loopback(app).await
}

#[tokio::test(flavor = "multi_thread")]
async fn https_is_served_reloaded_in_flight_and_plain_http_is_refused() {
    let ca = TestCa::new("altimage test CA");
    let first = ca.leaf(&["127.0.0.1", "localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    replace_file(&cert, &first.cert_pem);
    replace_file(&key, &first.key_pem);
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-reload-poll-secs",
        "1",
        "--allow-private-image-urls",
    ]);
    let address = server.base.trim_start_matches("http://").to_string();
    let https = |path: &str| format!("https://{address}{path}");
    let client = trusting(&ca.cert_pem, server.key.as_deref().unwrap());

    // Trusted: through, with HSTS.
    let response = client.get(https("/v1/account")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert_eq!(served_certificate(&address, &ca.cert_pem).await, first.der);
    // Not trusted (the system's roots only), and plain HTTP to the TLS port: no answer.
    let stranger = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(stranger.get(https("/health/live")).send().await.is_err());
    let plain = common::server::http_client()
        .get(format!("http://{address}/health/live"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP got an answer: {plain:?}");

    // A request in flight on the first certificate's connection...
    let (arrived, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let host = gated_image_host(arrived.clone(), gate.clone()).await;
    let in_flight = {
        let request = client
            .post(https("/v1/descriptions"))
            .json(&serde_json::json!({"image_url": format!("{host}/gated.png")}));
        tokio::spawn(async move { request.send().await })
    };
    arrived.notified().await;
    // ...while the certificate is replaced and SIGHUP reloads it: new connections get the new
    // one at once...
    let second = ca.leaf(&["127.0.0.1"]);
    replace_file(&cert, &second.cert_pem);
    replace_file(&key, &second.key_pem);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("the reloaded certificate being served", || async {
        served_certificate(&address, &ca.cert_pem).await == second.der
    })
    .await;
    // ...and the request that began before it completes.
    gate.notify_one();
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request was dropped");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);

    // A broken replacement (a key that is not the certificate's) keeps the second one.
    let failed = || async {
        let metrics = client.get(https("/metrics")).send().await.unwrap();
        let metrics = metrics.text().await.unwrap();
        let line = metrics
            .lines()
            .find_map(|l| l.strip_prefix("altimage_tls_reloads_total{result=\"failed\"} "))
            .map(str::to_string);
        line.unwrap().trim().parse::<f64>().unwrap()
    };
    let failed_before = failed().await;
    let third = ca.leaf(&["127.0.0.1"]);
    replace_file(&cert, &third.cert_pem);
    eventually("the failed reload being reported", || async {
        failed().await > failed_before
    })
    .await;
    assert_eq!(served_certificate(&address, &ca.cert_pem).await, second.der);
    // Without a signal, the completed change (the key follows) is seen by the poll.
    replace_file(&key, &third.key_pem);
    eventually("the changed files being picked up", || async {
        served_certificate(&address, &ca.cert_pem).await == third.der
    })
    .await;
    let response = client.get(https("/v1/account")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(server.log().contains("TLS certificate reload failed"));
}

/// A certificate that does not load fails start-up at once, naming the flag.
#[test]
fn a_missing_certificate_fails_start_up_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let output = std::process::Command::new(common::server_process::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--model-dir"])
        .arg(common::tiny_model_dir())
        .args(["--data-dir"])
        .arg(dir.path())
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&missing)
        .env("ORT_DYLIB_PATH", common::ort_library())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}

//! The SSRF-safe image URL fetcher against a local axum server; all traffic stays on 127.0.0.1.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use altimage::fetch::{
    FetchPolicy, ImageFetcher, ImageUrlError, is_always_forbidden_ip, is_forbidden_ip,
};
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream;

const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\nnot really a png, but bytes are bytes";
const LIMIT: u64 = 4096;

/// Every test gives up after this, whatever the fetcher does.
const TEST_BOUND: Duration = Duration::from_secs(20);

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, future)
        .await
        .expect("the test ran past its time bound")
}

fn redirect(status: StatusCode, location: &str) -> Response {
    (status, [(header::LOCATION, location.to_owned())]).into_response()
}

/// `/redirect-chain/{n}` takes n redirects (cycling through the five followed codes) to the image.
async fn redirect_chain(Path(n): Path<u32>) -> Response {
    if n == 0 {
        return IMAGE.into_response();
    }
    let codes = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    redirect(
        codes[n as usize % codes.len()],
        &format!("/redirect-chain/{}", n - 1),
    )
}

/// An endless body without Content-Length: only the streaming limit can stop it.
async fn big_chunked() -> Body {
    Body::from_stream(stream::repeat_with(|| {
        Ok::<_, Infallible>(Bytes::from_static(&[0u8; 1000]))
    }))
}

/// Announces a gigabyte and never sends it: refusing must not wait for the body.
async fn big_declared() -> Response {
    let body = Body::from_stream(stream::pending::<Result<Bytes, Infallible>>());
    ([(header::CONTENT_LENGTH, "1073741824")], body).into_response()
}

/// Headers at once, then a body that never ends: the timeout must cover the body too.
async fn slow_body() -> Body {
    let first = stream::iter([Ok::<_, Infallible>(Bytes::from_static(b"\x89PNG"))]);
    Body::from_stream(futures_util::StreamExt::chain(first, stream::pending()))
}

/// Starts the image host on 127.0.0.1 and returns its address. It lives as long as the test's
/// runtime.
async fn serve() -> SocketAddr {
    let app = Router::new()
        .route(
            "/ok.png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], IMAGE) }),
        )
        .route("/exact", get(|| async { vec![7u8; LIMIT as usize] }))
        .route("/big", get(|| async { vec![0u8; LIMIT as usize + 1] }))
        .route("/big-chunked", get(big_chunked))
        .route("/big-declared", get(big_declared))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                IMAGE
            }),
        )
        .route("/slow-body", get(slow_body))
        .route("/redirect-chain/{n}", get(redirect_chain))
        .route(
            "/redirect-to-metadata",
            get(|| async {
                redirect(
                    StatusCode::FOUND,
                    "http://169.254.169.254/latest/meta-data/",
                )
            }),
        )
        .route(
            "/redirect-relative",
            get(|| async { redirect(StatusCode::FOUND, "ok.png") }),
        )
        .route(
            "/nested/dir/redirect-dot-dot",
            get(|| async { redirect(StatusCode::SEE_OTHER, "../../ok.png") }),
        )
        .route(
            "/redirect-to-ftp",
            get(|| async { redirect(StatusCode::FOUND, "ftp://127.0.0.1/ok.png") }),
        )
        .route(
            "/redirect-without-location",
            get(|| async { StatusCode::FOUND }),
        )
        .route("/not-modified", get(|| async { StatusCode::NOT_MODIFIED }))
        .route("/404", get(|| async { StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The test server is on loopback, so most tests must allow private addresses.
fn local_policy() -> FetchPolicy {
    FetchPolicy {
        max_bytes: LIMIT,
        timeout: Duration::from_secs(5),
        max_redirects: 3,
        allow_private: true,
    }
}

fn strict_policy() -> FetchPolicy {
    FetchPolicy {
        allow_private: false,
        ..local_policy()
    }
}

async fn fetch(policy: FetchPolicy, url: &str) -> Result<Bytes, ImageUrlError> {
    bounded(ImageFetcher::new(policy).fetch(url)).await
}

/// Starts the image host and fetches `path` from it under `policy`.
async fn fetch_path(policy: FetchPolicy, path: &str) -> Result<Bytes, ImageUrlError> {
    fetch_path_timed(policy, path).await.0
}

/// As `fetch_path`, with how long the fetch took (the host's start not counted).
async fn fetch_path_timed(
    policy: FetchPolicy,
    path: &str,
) -> (Result<Bytes, ImageUrlError>, Duration) {
    let addr = serve().await;
    let started = Instant::now();
    let result = fetch(policy, &format!("http://{addr}{path}")).await;
    (result, started.elapsed())
}

/// Asserts that `result` is an error matching `pattern` (the error is shown if not); evaluates to
/// the error.
macro_rules! assert_error {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {{
        let error = $result.unwrap_err();
        assert!(matches!(&error, $pattern $(if $guard)?), "{error:?}");
        error
    }};
}

#[tokio::test]
async fn image_is_fetched_when_private_addresses_are_allowed() {
    let body = fetch_path(local_policy(), "/ok.png").await.unwrap();
    assert_eq!(&body[..], IMAGE);
}

#[tokio::test]
async fn default_policy_matches_the_documented_limits() {
    let policy = FetchPolicy::default();
    assert_eq!(policy.max_bytes, 20 * 1024 * 1024);
    assert_eq!(policy.timeout, Duration::from_secs(10));
    assert_eq!(policy.max_redirects, 3);
    assert!(!policy.allow_private);
}

#[tokio::test]
async fn loopback_is_refused_by_default() {
    assert_error!(
        fetch_path(strict_policy(), "/ok.png").await,
        ImageUrlError::ForbiddenAddress(host) if host == "127.0.0.1"
    );
}

#[tokio::test]
async fn loopback_in_every_spelling_is_refused_by_default() {
    // The server really listens on 127.0.0.1:port, so a spelling that slipped through would
    // fetch the image instead of failing.
    let port = serve().await.port();
    for host in [
        "2130706433",         // decimal
        "0x7f000001",         // hex
        "0177.0.0.1",         // octal
        "127.1",              // short form
        "0x7f.0.0.1",         // mixed
        "127.0.0.1.",         // trailing dot
        "0.0.0.0",            // unspecified reaches localhost on Linux
        "[::1]",              // IPv6 loopback
        "[::ffff:127.0.0.1]", // IPv4-mapped
        "[::ffff:7f00:1]",    // IPv4-mapped, hex
        "[::127.0.0.1]",      // IPv4-compatible (deprecated)
        "[64:ff9b::7f00:1]",  // NAT64
        "[2002:7f00:1::]",    // 6to4
        "[0:0:0:0:0:0:0:1]",  // long form
    ] {
        let error = fetch(strict_policy(), &format!("http://{host}:{port}/ok.png"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ImageUrlError::ForbiddenAddress(_)),
            "{host}: {error:?}"
        );
    }
}

#[tokio::test]
async fn localhost_name_is_refused_because_it_resolves_to_loopback() {
    let port = serve().await.port();
    let error = assert_error!(
        fetch(strict_policy(), &format!("http://localhost:{port}/ok.png")).await,
        ImageUrlError::ForbiddenAddress(host) if host == "localhost"
    );
    assert_eq!(error.code(), "image_url_forbidden");
}

#[tokio::test]
async fn localhost_name_is_fetched_when_private_addresses_are_allowed() {
    let port = serve().await.port();
    let body = fetch(local_policy(), &format!("http://localhost:{port}/ok.png"))
        .await
        .unwrap();
    assert_eq!(&body[..], IMAGE);
}

#[tokio::test]
async fn other_schemes_and_malformed_urls_are_invalid() {
    for url in [
        "ftp://127.0.0.1/ok.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_GET",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "not a url",
        "/ok.png",
        "http://",
        "http://[::1/ok.png",
        "http://256.0.0.1/",
    ] {
        let error = fetch(local_policy(), url).await.unwrap_err();
        assert!(
            matches!(error, ImageUrlError::InvalidUrl(_)),
            "{url}: {error:?}"
        );
    }
    let long = format!("http://example.com/{}", "a".repeat(10_000));
    assert_error!(
        fetch(local_policy(), &long).await,
        ImageUrlError::InvalidUrl(_)
    );
}

#[tokio::test]
async fn user_information_is_refused_and_not_echoed() {
    let addr = serve().await;
    for userinfo in ["user:hunter2@", "user@", ":hunter2@"] {
        let url = format!("http://{userinfo}{addr}/ok.png");
        let error = fetch(local_policy(), &url).await.unwrap_err();
        assert!(
            matches!(error, ImageUrlError::InvalidUrl(_)),
            "{url}: {error:?}"
        );
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}

#[tokio::test]
async fn too_large_with_content_length_is_refused() {
    assert_error!(
        fetch_path(local_policy(), "/big").await,
        ImageUrlError::TooLarge { limit: LIMIT }
    );
}

#[tokio::test]
async fn too_large_without_content_length_is_refused_while_streaming() {
    // The body never ends, so only the streaming check can answer TooLarge (not Timeout).
    assert_error!(
        fetch_path(local_policy(), "/big-chunked").await,
        ImageUrlError::TooLarge { limit: LIMIT }
    );
}

#[tokio::test]
async fn announced_size_is_refused_before_the_body_is_read() {
    // The announced body never comes: reading it would end in Timeout, not TooLarge.
    let (result, took) = fetch_path_timed(local_policy(), "/big-declared").await;
    assert_error!(result, ImageUrlError::TooLarge { limit: LIMIT });
    assert!(took < Duration::from_secs(4));
}

#[tokio::test]
async fn body_of_exactly_the_limit_is_accepted() {
    let body = fetch_path(local_policy(), "/exact").await.unwrap();
    assert_eq!(body.len() as u64, LIMIT);
}

/// The local policy with a 300 ms timeout.
fn impatient_policy() -> FetchPolicy {
    FetchPolicy {
        timeout: Duration::from_millis(300),
        ..local_policy()
    }
}

#[tokio::test]
async fn slow_headers_time_out() {
    let (result, took) = fetch_path_timed(impatient_policy(), "/slow").await;
    assert_error!(result, ImageUrlError::Timeout);
    assert!(took < Duration::from_secs(3));
}

#[tokio::test]
async fn slow_body_times_out() {
    assert_error!(
        fetch_path(impatient_policy(), "/slow-body").await,
        ImageUrlError::Timeout
    );
}

#[tokio::test]
async fn redirects_up_to_the_limit_are_followed() {
    // 3 redirects, through 301, 308 and 307 (relative Locations).
    let body = fetch_path(local_policy(), "/redirect-chain/3")
        .await
        .unwrap();
    assert_eq!(&body[..], IMAGE);
}

#[tokio::test]
async fn too_many_redirects_are_refused() {
    assert_error!(
        fetch_path(local_policy(), "/redirect-chain/4").await,
        ImageUrlError::TooManyRedirects { limit: 3 }
    );
    let no_redirects = FetchPolicy {
        max_redirects: 0,
        ..local_policy()
    };
    assert_error!(
        fetch_path(no_redirects, "/redirect-chain/1").await,
        ImageUrlError::TooManyRedirects { limit: 0 }
    );
}

#[tokio::test]
async fn redirect_to_metadata_is_refused_without_connecting() {
    // Refused even though private addresses are allowed (the server is on loopback): metadata
    // endpoints are never fetched. The network is closed here, so a connection attempt would
    // have ended in Unreachable or Timeout, not ForbiddenAddress.
    let (result, took) = fetch_path_timed(local_policy(), "/redirect-to-metadata").await;
    assert_error!(
        result,
        ImageUrlError::ForbiddenAddress(host) if host == "169.254.169.254"
    );
    assert!(took < Duration::from_secs(2));
}

#[tokio::test]
async fn relative_redirects_are_resolved_against_the_current_url() {
    let addr = serve().await;
    for path in ["/redirect-relative", "/nested/dir/redirect-dot-dot"] {
        let body = fetch(local_policy(), &format!("http://{addr}{path}"))
            .await
            .unwrap();
        assert_eq!(&body[..], IMAGE, "{path}");
    }
}

#[tokio::test]
async fn redirect_to_another_scheme_is_refused() {
    assert_error!(
        fetch_path(local_policy(), "/redirect-to-ftp").await,
        ImageUrlError::InvalidUrl(_)
    );
}

#[tokio::test]
async fn redirect_without_location_is_an_upstream_error() {
    assert_error!(
        fetch_path(local_policy(), "/redirect-without-location").await,
        ImageUrlError::Upstream { status: 302 }
    );
}

#[tokio::test]
async fn non_success_statuses_are_upstream_errors_without_the_url() {
    let error = assert_error!(
        fetch_path(local_policy(), "/404?token=s3cret").await,
        ImageUrlError::Upstream { status: 404 }
    );
    assert!(!error.to_string().contains("s3cret"), "{error}");
    assert_error!(
        fetch_path(local_policy(), "/not-modified").await,
        ImageUrlError::Upstream { status: 304 }
    );
}

#[tokio::test]
async fn closed_port_is_unreachable_without_the_url() {
    // Bind and drop a listener: its port is then (almost certainly) closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = assert_error!(
        fetch(
            local_policy(),
            &format!("http://127.0.0.1:{port}/x?token=s3cret")
        )
        .await,
        ImageUrlError::Unreachable(_)
    );
    assert!(!error.to_string().contains("s3cret"), "{error}");
}

#[test]
fn forbidden_addresses() {
    let forbidden = [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "100.100.100.200", // Alibaba metadata
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254", // AWS/GCP/Azure metadata
        "169.254.170.2",   // ECS task metadata
        "168.63.129.16",   // Azure WireServer
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:0:10.0.0.1",  // IPv4-translated
        "::10.0.0.1",         // IPv4-compatible
        "::8.8.8.8",          // IPv4-compatible is deprecated: refused whatever it embeds
        "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
        "64:ff9b::7f00:1",
        "64:ff9b:1::1",      // local-use NAT64
        "2002:c0a8:0101::",  // 6to4 of 192.168.1.1
        "2002:a9fe:a9fe::1", // 6to4 of metadata
        "2001::1",           // Teredo
        "2001:2::1",         // benchmarking
        "2001:db8::1",
        "3fff::1",
        "100::1",
        "5f00::1",
        "fc00::1",
        "fd00:ec2::254", // AWS IPv6 metadata
        "fd20:ce::254",  // GCP IPv6 metadata
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
    ];
    for ip in forbidden {
        assert!(
            is_forbidden_ip(ip.parse().unwrap()),
            "{ip} should be forbidden"
        );
    }
    let allowed = [
        "1.1.1.1",
        "8.8.8.8",
        "9.255.255.255",
        "11.0.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "126.255.255.255",
        "128.0.0.1",
        "169.253.255.255",
        "169.255.0.1",
        "172.15.255.255",
        "172.32.0.1",
        "192.0.3.1",
        "192.167.255.255",
        "192.169.0.1",
        "198.17.255.255",
        "198.20.0.1",
        "223.255.255.255",
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "2001:200::1",
        "2a00:1450:4001::1",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808", // NAT64 of 8.8.8.8
        "2002:0808:0808::", // 6to4 of 8.8.8.8
    ];
    for ip in allowed {
        assert!(
            !is_forbidden_ip(ip.parse().unwrap()),
            "{ip} should be allowed"
        );
    }
}

#[test]
fn metadata_and_link_local_stay_forbidden_when_private_is_allowed() {
    for ip in [
        "169.254.169.254",
        "169.254.0.1",
        "100.100.100.200",
        "168.63.129.16",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::",
        "fe80::1",
        "fd00:ec2::254",
        "fd20:ce::254",
    ] {
        assert!(
            is_always_forbidden_ip(ip.parse().unwrap()),
            "{ip} should always be forbidden"
        );
    }
    for ip in [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.1",
        "::1",
        "fd00::1",
        "8.8.8.8",
    ] {
        assert!(
            !is_always_forbidden_ip(ip.parse().unwrap()),
            "{ip} is only forbidden by default"
        );
    }
}

#[test]
fn error_codes_are_distinct_snake_case_and_client_errors() {
    let errors = [
        ImageUrlError::InvalidUrl("x".into()),
        ImageUrlError::ForbiddenAddress("x".into()),
        ImageUrlError::TooLarge { limit: 1 },
        ImageUrlError::Timeout,
        ImageUrlError::TooManyRedirects { limit: 1 },
        ImageUrlError::Upstream { status: 500 },
        ImageUrlError::Unreachable("x".into()),
    ];
    let mut codes: Vec<&str> = errors.iter().map(ImageUrlError::code).collect();
    for code in &codes {
        assert!(
            code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{code}"
        );
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), errors.len());
    assert!(errors.iter().all(ImageUrlError::is_client_error));
}

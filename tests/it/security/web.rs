//! What browsers read: `nosniff` and `Referrer-Policy` on every answer (API, errors, `/docs`),
//! `/docs`'s strict CSP (no `'unsafe-inline'`), no HSTS over plain HTTP, and CORS only for the
//! origins `--cors-allowed-origins` names.

use reqwest::Method;

use crate::common::server::{Server, http_client};

#[tokio::test(flavor = "multi_thread")]
async fn safety_headers_everywhere_and_cors_only_for_allowed_origins() {
    let server = Server::start(&["--cors-allowed-origins", "https://shop.example"]);
    let http = server.client();
    for (client, path) in [
        (&http, "/v1/account"),
        (&http, "/v1/descriptions/desc_missing"),
        (&http, "/no/such/route"),
        (&http_client(), "/v1/account"),
        (&http_client(), "/docs"),
        (&http_client(), "/health/live"),
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(
            !headers.contains_key("strict-transport-security"),
            "{path}: HSTS over plain HTTP"
        );
    }
    let docs = http_client().get(server.url("/docs")).send().await.unwrap();
    let csp = docs.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    // An allowed origin: its preflight is answered, its answers name it.
    let preflight = |origin: &str| {
        http_client()
            .request(Method::OPTIONS, server.url("/v1/descriptions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
    };
    let allowed = preflight("https://shop.example").send().await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert!(!headers.contains_key("access-control-allow-credentials"));
    let answer = http
        .get(server.url("/v1/account"))
        .header("origin", "https://shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        answer.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    // Any other origin: nothing, and its preflight meets the 405 every OPTIONS gets.
    let refused = preflight("https://evil.example").send().await.unwrap();
    assert_eq!(refused.status(), 405);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let answer = http
        .get(server.url("/v1/account"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_by_default() {
    let server = Server::start(&[]);
    let preflight = http_client()
        .request(Method::OPTIONS, server.url("/v1/descriptions"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 405);
    assert!(
        !preflight
            .headers()
            .keys()
            .any(|name| name.as_str().starts_with("access-control-"))
    );
}

//! The console's static files, embedded in the binary and served under names that carry their
//! content hash, so browsers may cache them for a year and a new release is fetched at once.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

struct Asset {
    /// `console.<first 8 hex digits of SHA-256>.css`.
    name: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

fn asset(stem: &str, extension: &str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let hash = crate::store::secrets::sha256_hex(std::str::from_utf8(bytes).unwrap_or_default());
    Asset {
        name: format!("{stem}.{}.{extension}", &hash[..8]),
        content_type,
        bytes,
    }
}

static ASSETS: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    [
        asset(
            "console",
            "css",
            "text/css; charset=utf-8",
            include_bytes!("assets/console.css"),
        ),
        asset(
            "console",
            "js",
            "text/javascript; charset=utf-8",
            include_bytes!("assets/console.js"),
        ),
        asset(
            "favicon",
            "svg",
            "image/svg+xml",
            include_bytes!("assets/favicon.svg"),
        ),
    ]
});

/// The URL path of the stylesheet, the script and the icon, in that order.
pub fn css() -> String {
    format!("/console/assets/{}", ASSETS[0].name)
}

pub fn js() -> String {
    format!("/console/assets/{}", ASSETS[1].name)
}

pub fn favicon() -> String {
    format!("/console/assets/{}", ASSETS[2].name)
}

/// Every embedded file's text, for the test that no asset loads anything from elsewhere.
pub fn all_texts() -> Vec<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .map(|a| {
            (
                a.content_type,
                std::str::from_utf8(a.bytes).unwrap_or_default(),
            )
        })
        .collect()
}

pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

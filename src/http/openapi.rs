//! The OpenAPI 3.1 document, generated from the code: each route's `#[utoipa::path]` on its
//! handler, registered once through the `OpenApiRouter`s of [`routes`] (the same ones that serve
//! it), the wire types' `ToSchema` derives, and each operation's error set (`error_set!`).
//! Served at `/openapi.json`; `/docs` is a self-contained page (no CDN, no external fonts or
//! scripts) that fetches it and renders it.
//!
//! What every answer of a layer carries is added here from the code's middleware rather than
//! repeated per operation ([`FromTheCode`]): `x-request-id`, `X-Content-Type-Options` and
//! `Referrer-Policy` on every answer, `WWW-Authenticate`
//! on 401, `Retry-After` on error answers 429 and 503, `RateLimit-*` on the answers of the
//! API-key routes that passed authentication, and the security schemes.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as OpenApiDoc, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::error::{ErrorBody, ErrorDetail, ErrorKind};
use super::v1::descriptions::export::ExportFormat;

/// What the routes cannot say: the API as a whole, its tags, the error body.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "altimage",
        description = "Self-hosted image descriptions: alt text and product descriptions from \
            Florence-2.\n\nEvery `/v1/` route needs an API key as `Authorization: Bearer KEY` \
            (security scheme `api_key`); its scopes (`describe`, `read`, `manage`) decide what it \
            may do, and the account's requests per minute are limited (answers carry \
            `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`). The `/v1/admin/` \
            routes take the operator's `--admin-token` instead (`admin_token`) and exist only \
            when one is set. `POST /v1/stripe/webhook` is Stripe's: no token, its body is \
            signed (`Stripe-Signature`), and it exists only when a webhook secret is set.\n\nErrors are JSON `{\"error\": {\"type\", \"code\", \"message\"}}`; \
            every answer carries `x-request-id`; 429 and 503 carry `Retry-After`. While the model \
            loads, every route except `/health/*`, `/metrics`, `/openapi.json` and `/docs` \
            answers 503 with code `starting`. Unknown paths answer 404 with the same error body.\n\n\
            Any route can also answer, from the HTTP layer around the operations: 405 \
            `method_not_allowed` (a method the path does not take; `Allow` lists those it does), \
            408 `body_timeout` (the body did not arrive within `--body-read-timeout-secs`), 501 \
            `unsupported_transfer_encoding` (a `Transfer-Encoding` other than `chunked`) and 503 \
            `too_many_connections` (more than `--max-connections` open). Strings holding NUL, \
            other control characters (tab and line breaks are allowed in text) or noncharacters \
            are refused with 400 `invalid_characters` naming the field.\n\n\
            Every answer carries `X-Content-Type-Options: nosniff` and `Referrer-Policy: \
            no-referrer`; with HTTPS on (`--tls-cert`), `Strict-Transport-Security: \
            max-age=31536000`. CORS is off unless `--cors-allowed-origins` names origins: then \
            their preflights (`OPTIONS` with `Access-Control-Request-Method`) answer 204 and \
            their requests' answers carry `Access-Control-Allow-Origin`."
    ),
    // Parameter types are not collected from the routes; the query enums are listed here.
    components(schemas(ErrorBody, ErrorDetail, ExportFormat)),
    tags(
        (name = "descriptions", description = "Describe images; list, read, edit, delete and export the stored descriptions."),
        (name = "jobs", description = "Bulk jobs: a catalogue described in the background on spare capacity, durable across restarts, with results files and signed webhooks."),
        (name = "account", description = "The caller's account: profile, usage, restricted processing, export and deletion."),
        (name = "admin", description = "Accounts and API keys, for the operator (`--admin-token`). Off when no token is set."),
        (name = "billing", description = "Stripe's deliveries to this server (`--stripe-webhook-secret`). Off when no webhook secret is set."),
        (name = "operations", description = "Health, information, metrics and this documentation."),
    ),
)]
struct ApiDoc;

/// Every route, by who may call it; each registered once, here and nowhere else. The server
/// mounts the groups its flags turn on; the document always has them all.
pub struct Routes {
    /// Behind `auth::require_api_key`.
    pub api_key: OpenApiRouter<AppState>,
    /// Behind `auth::require_admin`; mounted only with `--admin-token`.
    pub admin: OpenApiRouter<AppState>,
    /// Stripe's, signed; mounted only with a webhook secret.
    pub stripe: OpenApiRouter<AppState>,
    /// Health, info, metrics, the document and its page.
    pub ops: OpenApiRouter<AppState>,
}

pub fn routes() -> Routes {
    use super::v1;
    let api_key = tagged(v1::descriptions::routes(), "descriptions")
        .merge(tagged(v1::jobs::routes(), "jobs"))
        .merge(tagged(v1::account::routes(), "account"))
        .merge(tagged(v1::activity::routes(), "account"));
    Routes {
        api_key: secured(api_key, "api_key"),
        admin: secured(tagged(v1::admin::routes(), "admin"), "admin_token"),
        stripe: tagged(v1::stripe_webhook::routes(), "billing"),
        ops: tagged(super::ops::routes(), "operations"),
    }
}

/// Every operation of `router`, as a `utoipa::openapi::path::Operation`.
fn operations(
    router: &mut OpenApiRouter<AppState>,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    router
        .get_openapi_mut()
        .paths
        .paths
        .values_mut()
        .flat_map(|item| {
            [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
        })
        .flatten()
}

/// The group's tag on each of its operations: a module's routes are one section of `/docs`.
fn tagged(mut router: OpenApiRouter<AppState>, tag: &str) -> OpenApiRouter<AppState> {
    for operation in operations(&mut router) {
        operation.tags = Some(vec![tag.to_string()]);
    }
    router
}

/// The credential the group's layer asks for, on each of its operations.
fn secured(mut router: OpenApiRouter<AppState>, scheme: &str) -> OpenApiRouter<AppState> {
    for operation in operations(&mut router) {
        operation.security = Some(vec![SecurityRequirement::new::<_, _, &str>(scheme, [])]);
    }
    router
}

/// The whole document: every group's operations and schemas, then what the layers add.
pub fn document() -> OpenApiDoc {
    let Routes {
        api_key,
        admin,
        stripe,
        ops,
    } = routes();
    let mut doc = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api_key)
        .merge(admin)
        .merge(stripe)
        .merge(ops)
        .into_openapi();
    FromTheCode.modify(&mut doc);
    doc
}

/// The document, built once.
static SPEC: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises; this is a bug")
});

pub fn document_json() -> &'static str {
    SPEC.as_str()
}

/// Each path with the success statuses of its operations, so that the request metric series
/// exist before traffic.
pub fn success_statuses() -> Vec<(String, u16)> {
    let doc = document();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let operations = [&item.get, &item.post, &item.put, &item.patch, &item.delete];
        for operation in operations.into_iter().flatten() {
            for status in operation.responses.responses.keys() {
                if let Ok(status) = status.parse::<u16>()
                    && (200..300).contains(&status)
                    && !out.contains(&(path.clone(), status))
                {
                    out.push((path.clone(), status));
                }
            }
        }
    }
    out
}

/// The docs page: plain HTML and JS that fetch `/openapi.json`; nothing from other hosts.
pub const DOCS_HTML: &str = include_str!("docs.html");

/// The strict CSP of `/docs`: its one inline script and one inline style allowed by their
/// SHA-256 (no `'unsafe-inline'`, so an injected script or style would not run), nothing else
/// loaded, only this server fetched, and the page never framed.
pub fn docs_csp() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        let hash = |open: &str, close: &str| {
            use base64::Engine as _;
            use sha2::Digest as _;
            let start = DOCS_HTML.find(open).expect("docs.html has the block") + open.len();
            let end = start + DOCS_HTML[start..].find(close).expect("the block closes");
            let digest = sha2::Sha256::digest(&DOCS_HTML.as_bytes()[start..end]);
            format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        };
        format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash("<script>", "</script>"),
            hash("<style>", "</style>"),
        )
    });
    CSP.as_str()
}

/// Fills in what the derives cannot know: the values of `ErrorDetail.type`, from `status_of`;
/// the security schemes; and the headers that a layer puts on every answer it passes (see the
/// module documentation), so that no operation can forget them.
struct FromTheCode;

/// The routes behind `auth::require_api_key` (see `router` in mod.rs): not the admin routes
/// (admin token) nor Stripe's webhook (signed body).
fn behind_api_key(path: &str) -> bool {
    path.starts_with("/v1/") && !path.starts_with("/v1/admin/") && !path.starts_with("/v1/stripe/")
}

fn header(schema: Type, description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(schema))
        .description(Some(description))
        .build()
}

impl Modify for FromTheCode {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let kinds: BTreeSet<&str> = ErrorKind::ALL.iter().map(|k| k.type_name()).collect();
        let components = openapi.components.get_or_insert_with(Default::default);
        if let Some(RefOr::T(Schema::Object(detail))) = components.schemas.get_mut("ErrorDetail")
            && let Some(RefOr::T(Schema::Object(kind))) = detail.properties.get_mut("type")
        {
            kind.enum_values = Some(kinds.into_iter().map(Into::into).collect());
        }
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("altk_…")
                    .description(Some(
                        "An API key, `Authorization: Bearer altk_…`: from `POST \
                         /v1/admin/accounts/{id}/keys`, `altimage keys create`, or the file \
                         `bootstrap-api-key` that the first start writes to the data directory. \
                         Its scopes decide what it may do.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator's `--admin-token` (`ALTIMAGE_ADMIN_TOKEN`), \
                         `Authorization: Bearer TOKEN`. Without one the admin routes do not exist.",
                    ))
                    .build(),
            ),
        );
        let error_body = format!("#/components/schemas/{}", ErrorBody::name());
        for (path, item) in openapi.paths.paths.iter_mut() {
            let rate_limited = behind_api_key(path);
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_error_body = response.content.get("application/json").is_some_and(
                        |c| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == error_body),
                    );
                    let headers = &mut response.headers;
                    headers.entry("x-request-id".into()).or_insert_with(|| {
                        header(
                            Type::String,
                            "The caller's `x-request-id` when it is sane (1-128 of \
                             `A-Za-z0-9-_.:`), else a new one.",
                        )
                    });
                    // `headers::security_headers`, the outermost layer.
                    headers
                        .entry("x-content-type-options".into())
                        .or_insert_with(|| header(Type::String, "`nosniff`."));
                    headers
                        .entry("referrer-policy".into())
                        .or_insert_with(|| header(Type::String, "`no-referrer`."));
                    if status == "401" {
                        headers.entry("www-authenticate".into()).or_insert_with(|| {
                            header(Type::String, "`Bearer realm=\"altimage\"`.")
                        });
                    }
                    if is_error_body && (status == "429" || status == "503") {
                        headers.entry("retry-after".into()).or_insert_with(|| {
                            header(Type::Integer, "Seconds to wait before retrying.")
                        });
                    }
                    // Every answer after the rate limiter, which runs after authentication.
                    if rate_limited && status != "401" {
                        for (name, description) in RATE_LIMIT_HEADERS {
                            headers
                                .entry(name.into())
                                .or_insert_with(|| header(Type::Integer, description));
                        }
                    }
                }
            }
        }
    }
}

/// The `RateLimit-*` headers of `auth::require_api_key`. Absent when the account has no limit
/// (`--rate-limit-per-minute 0` and no per-account limit), and on answers given before the
/// limiter ran: the model still loading, the database failing during authentication.
pub const RATE_LIMIT_HEADERS: [(&str, &str); 3] = [
    (
        "ratelimit-limit",
        "The account's requests per minute. Absent when no limit applies.",
    ),
    (
        "ratelimit-remaining",
        "Requests that could be made right now after this one.",
    ),
    (
        "ratelimit-reset",
        "Seconds until the full allowance is back.",
    ),
];

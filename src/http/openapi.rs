//! OpenAPI 3.1 for the HTTP API, generated from the code with utoipa: the handlers'
//! `#[utoipa::path]` annotations (descriptions.rs, and stubs here for the operations routes of
//! mod.rs) and the wire types' `ToSchema` derives. Served at `/openapi.json`; `/docs` is a
//! self-contained page (no CDN, no external fonts or scripts) that fetches it and renders it.
//!
//! The status check (tests/it/openapi.rs) compares, per operation, the documented response statuses
//! with [`handler_statuses`]: for the `/v1/` handlers these come from the `ApiError` variants
//! they can return (`descriptions::create_returns`, `library::library_returns`,
//! `account::account_returns`, `admin::admin_returns`: exhaustive matches) through
//! [`status_of`](super::error::status_of).
//!
//! What every answer of a layer carries is added here from the code's middleware rather than
//! repeated per operation ([`FromTheCode`]): `x-request-id` on every answer, `WWW-Authenticate`
//! on 401, `Retry-After` on error answers 429 and 503, `RateLimit-*` on the answers of the
//! API-key routes that passed authentication, and the security schemes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response as ResponseDoc, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use super::account::{self, AccountOperation, AccountPatch};
use super::admin::{self, AdminOperation, CreateAccount, CreateKey, CreatedKeyBody, UpdateAccount};
use super::billing::{self as billing_http, BillingAdminOperation};
use super::descriptions;
use super::error::{ApiError, ErrorBody, ErrorDetail, status_of};
use super::library::{self, EditRequest, ExportFormat, LibraryOperation};
use crate::model::Detail;
use crate::model::generate::FinishReason;
use crate::model::preprocess::ImageKind;
use crate::store::accounts::{Account, RestrictedBy};
use crate::store::descriptions::{Description, ImageFacts, Provenance, Version};
use crate::store::keys::{ApiKey, Scope};
use crate::store::meter_reports::MeterReport;
use crate::store::usage::{ArchivedUsage, UsageDay, UsageEvent};

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
            are refused with 400 `invalid_characters` naming the field."
    ),
    paths(
        descriptions::create,
        descriptions::create_batch,
        library::list,
        library::export,
        library::retrieve,
        library::edit,
        library::delete,
        library::versions,
        account::usage,
        account::show,
        account::update,
        account::delete,
        account::export,
        admin::create_account,
        admin::list_accounts,
        admin::show_account,
        admin::update_account,
        admin::delete_account,
        admin::create_key,
        admin::list_keys,
        admin::revoke_key,
        billing_http::list_reports,
        billing_http::retry_report,
        billing_http::receive,
        health_live,
        health_ready,
        health,
        info,
        metrics,
        openapi_json,
        docs,
    ),
    components(schemas(
        Description,
        ImageFacts,
        FinishReason,
        Detail,
        ImageKind,
        ErrorBody,
        ErrorDetail,
        DescriptionList,
        DescriptionOrError,
        HealthStatus,
        InfoBody,
        InfoLimits,
        Metadata,
        RawImage,
        Provenance,
        Version,
        DescriptionPage,
        VersionList,
        DeletedDescription,
        EditRequest,
        ExportFormat,
        Account,
        RestrictedBy,
        AccountPatch,
        Usage,
        UsageTotals,
        UsageDay,
        UsageEvent,
        ArchivedUsage,
        AccountExport,
        ExportedDescription,
        ApiKey,
        Scope,
        CreatedKeyBody,
        CreateAccount,
        UpdateAccount,
        CreateKey,
        AccountList,
        KeyList,
        MeterReport,
        MeterReportList,
        WebhookReceived,
    )),
    tags(
        (name = "descriptions", description = "Describe images; list, read, edit, delete and export the stored descriptions."),
        (name = "account", description = "The caller's account: profile, usage, restricted processing, export and deletion."),
        (name = "admin", description = "Accounts and API keys, for the operator (`--admin-token`). Off when no token is set."),
        (name = "billing", description = "Stripe's deliveries to this server (`--stripe-webhook-secret`). Off when no webhook secret is set."),
        (name = "operations", description = "Health, information, metrics and this documentation."),
    ),
    modifiers(&FromTheCode),
)]
pub struct ApiDoc;

/// The document, built once.
static SPEC: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises; this is a bug")
});

/// The docs page: plain HTML and JS that fetch `/openapi.json`; nothing from other hosts.
pub const DOCS_HTML: &str = include_str!("docs.html");

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This API as OpenAPI 3.1",
    responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], SPEC.as_str()).into_response()
}

#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs",
    tag = "operations",
    summary = "Human-readable API documentation",
    description = "A self-contained page that renders `/openapi.json`; it loads nothing from other hosts.",
    responses((status = 200, description = "The documentation page.", content_type = "text/html", body = String)),
)]
pub async fn docs() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page may talk to this server only; a browser enforces it.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
            ),
        ],
        DOCS_HTML,
    )
        .into_response()
}

// Stubs that carry the documentation of the operations handlers in mod.rs (which keep no
// annotations of their own); their statuses are in `handler_statuses`.

#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    tag = "operations",
    summary = "Liveness",
    description = "200 whenever the process answers, including while the model loads. Cheap; no authentication.",
    responses((status = 200, description = "Alive.", body = HealthStatus, example = json!({"status": "live"}))),
)]
#[allow(dead_code)]
fn health_live() {}

#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    tag = "operations",
    summary = "Readiness",
    description = "200 when the model is warm and a worker is healthy. 503 while the model loads, while draining after SIGTERM, or when no worker is healthy; not merely because the queue is full.",
    responses(
        (status = 200, description = "Ready for traffic.", body = HealthStatus, example = json!({"status": "ready"})),
        (status = 503, description = "Not ready; `reason` says why.", body = HealthStatus, example = json!({"status": "unavailable", "reason": "draining"})),
    ),
)]
#[allow(dead_code)]
fn health_ready() {}

#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "operations",
    summary = "Readiness (alias of /health/ready)",
    responses(
        (status = 200, description = "Ready for traffic.", body = HealthStatus),
        (status = 503, description = "Not ready; `reason` says why.", body = HealthStatus),
    ),
)]
#[allow(dead_code)]
fn health() {}

#[utoipa::path(
    get,
    path = "/info",
    operation_id = "info",
    tag = "operations",
    summary = "Model, device, effective limits and version",
    description = "No secrets.",
    responses(
        (status = 200, description = "What this server runs with.", body = InfoBody),
        (status = 503, description = "The model is still loading (code `starting`).", body = ErrorBody, headers(
            ("retry-after" = u64, description = "Seconds to wait before retrying."),
        )),
    ),
)]
#[allow(dead_code)]
fn info() {}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Text exposition format, prefix `altimage_`; every series exists from start-up.",
    responses((status = 200, description = "The metrics.", content_type = "text/plain; version=0.0.4", body = String)),
)]
#[allow(dead_code)]
fn metrics() {}

/// The code side of the status check, per documented operation: `(method, path, statuses the
/// handler can answer with)`. The description handlers derive theirs from the `ApiError` variants
/// they return; the operations handlers in mod.rs return no `ApiError` and answer with the
/// statuses listed here. The start-up router (`starting_router`) adds 503 to the routes it does
/// not serve; tests/it/openapi.rs measures that by calling it.
pub fn handler_statuses() -> Vec<(&'static str, &'static str, BTreeSet<u16>)> {
    let fixed = |statuses: &[StatusCode]| statuses.iter().map(StatusCode::as_u16).collect();
    vec![
        (
            "post",
            "/v1/descriptions",
            statuses(StatusCode::CREATED, descriptions::create_returns),
        ),
        (
            "post",
            "/v1/descriptions/batch",
            statuses(StatusCode::OK, descriptions::create_batch_returns),
        ),
        (
            "get",
            "/v1/descriptions",
            statuses(StatusCode::OK, |e| {
                library::library_returns(LibraryOperation::List, e)
            }),
        ),
        (
            "get",
            "/v1/descriptions/export",
            statuses(StatusCode::OK, |e| {
                library::library_returns(LibraryOperation::Export, e)
            }),
        ),
        (
            "get",
            "/v1/descriptions/{id}",
            statuses(StatusCode::OK, |e| {
                library::library_returns(LibraryOperation::Retrieve, e)
            }),
        ),
        (
            "patch",
            "/v1/descriptions/{id}",
            statuses(StatusCode::OK, |e| {
                library::library_returns(LibraryOperation::Edit, e)
            }),
        ),
        (
            "delete",
            "/v1/descriptions/{id}",
            statuses(StatusCode::OK, |e| {
                library::library_returns(LibraryOperation::Delete, e)
            }),
        ),
        (
            "get",
            "/v1/descriptions/{id}/versions",
            statuses(StatusCode::OK, |e| {
                library::library_returns(LibraryOperation::Versions, e)
            }),
        ),
        (
            "get",
            "/v1/usage",
            statuses(StatusCode::OK, |e| {
                account::account_returns(AccountOperation::Usage, e)
            }),
        ),
        (
            "get",
            "/v1/account",
            statuses(StatusCode::OK, |e| {
                account::account_returns(AccountOperation::Show, e)
            }),
        ),
        (
            "patch",
            "/v1/account",
            statuses(StatusCode::OK, |e| {
                account::account_returns(AccountOperation::Update, e)
            }),
        ),
        (
            "delete",
            "/v1/account",
            statuses(StatusCode::ACCEPTED, |e| {
                account::account_returns(AccountOperation::Delete, e)
            }),
        ),
        (
            "get",
            "/v1/account/export",
            statuses(StatusCode::OK, |e| {
                account::account_returns(AccountOperation::Export, e)
            }),
        ),
        (
            "post",
            "/v1/admin/accounts",
            statuses(StatusCode::CREATED, |e| {
                admin::admin_returns(AdminOperation::CreateAccount, e)
            }),
        ),
        (
            "get",
            "/v1/admin/accounts",
            statuses(StatusCode::OK, |e| {
                admin::admin_returns(AdminOperation::ListAccounts, e)
            }),
        ),
        (
            "get",
            "/v1/admin/accounts/{id}",
            statuses(StatusCode::OK, |e| {
                admin::admin_returns(AdminOperation::ShowAccount, e)
            }),
        ),
        (
            "patch",
            "/v1/admin/accounts/{id}",
            statuses(StatusCode::OK, |e| {
                admin::admin_returns(AdminOperation::UpdateAccount, e)
            }),
        ),
        (
            "delete",
            "/v1/admin/accounts/{id}",
            statuses(StatusCode::ACCEPTED, |e| {
                admin::admin_returns(AdminOperation::DeleteAccount, e)
            }),
        ),
        (
            "post",
            "/v1/admin/accounts/{id}/keys",
            statuses(StatusCode::CREATED, |e| {
                admin::admin_returns(AdminOperation::CreateKey, e)
            }),
        ),
        (
            "get",
            "/v1/admin/accounts/{id}/keys",
            statuses(StatusCode::OK, |e| {
                admin::admin_returns(AdminOperation::ListKeys, e)
            }),
        ),
        (
            "delete",
            "/v1/admin/accounts/{id}/keys/{key_id}",
            statuses(StatusCode::OK, |e| {
                admin::admin_returns(AdminOperation::RevokeKey, e)
            }),
        ),
        (
            "get",
            "/v1/admin/billing/reports",
            statuses(StatusCode::OK, |e| {
                billing_http::billing_admin_returns(BillingAdminOperation::ListReports, e)
            }),
        ),
        (
            "post",
            "/v1/admin/billing/reports/{id}/retry",
            statuses(StatusCode::OK, |e| {
                billing_http::billing_admin_returns(BillingAdminOperation::RetryReport, e)
            }),
        ),
        (
            "post",
            "/v1/stripe/webhook",
            statuses(StatusCode::OK, billing_http::webhook_returns),
        ),
        ("get", "/health/live", fixed(&[StatusCode::OK])),
        (
            "get",
            "/health/ready",
            fixed(&[StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]),
        ),
        (
            "get",
            "/health",
            fixed(&[StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]),
        ),
        ("get", "/info", fixed(&[StatusCode::OK])),
        ("get", "/metrics", fixed(&[StatusCode::OK])),
        ("get", "/openapi.json", fixed(&[StatusCode::OK])),
        ("get", "/docs", fixed(&[StatusCode::OK])),
    ]
}

/// `success` and the status of every `ApiError` variant that `returns` says the handler gives.
pub fn statuses(success: StatusCode, returns: impl Fn(&ApiError) -> bool) -> BTreeSet<u16> {
    every_api_error()
        .iter()
        .filter(|error| returns(error))
        .map(|error| status_of(error).0.as_u16())
        .chain([success.as_u16()])
        .collect()
}

/// One value of each `ApiError` variant (tests/it/openapi.rs checks that none is missing).
pub fn every_api_error() -> Vec<ApiError> {
    let after = std::time::Duration::from_secs(1);
    vec![
        ApiError::bad_request("invalid_json", "example"),
        ApiError::UnsupportedMediaType("text/plain".into()),
        ApiError::too_large("body_too_large", "example"),
        ApiError::BadImage {
            code: "image_decode_failed",
            message: "example".into(),
        },
        ApiError::ImageUrlFailed {
            code: "upstream_status",
            message: "example".into(),
        },
        ApiError::Overloaded {
            message: "example".into(),
            retry_after: after,
        },
        ApiError::Unavailable {
            code: "draining",
            message: "example".into(),
            retry_after: after,
        },
        ApiError::Unauthorized {
            code: "invalid_api_key",
            message: "example".into(),
        },
        ApiError::Forbidden {
            code: "missing_scope",
            message: "example".into(),
        },
        ApiError::Conflict {
            code: "idempotency_key_reused",
            message: "example".into(),
        },
        ApiError::RateLimited {
            message: "example".into(),
            retry_after: after,
        },
        ApiError::NotFound("example".into()),
        ApiError::Protocol {
            status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: "example".into(),
        },
        ApiError::Internal("example".into()),
    ]
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
        let kinds: BTreeSet<&str> = every_api_error()
            .iter()
            .map(|error| status_of(error).1)
            .collect();
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

/// An error answer with the `ErrorBody` schema (headers are added by [`FromTheCode`]).
fn error_response(description: &str) -> RefOr<ResponseDoc> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
        .into()
}

/// The error answers every API-key route outside `POST /v1/descriptions[/batch]` shares: the
/// API-key layer, the scope check, the database (see `library_returns`, `account_returns`).
pub struct ApiKeyErrors;

impl IntoResponses for ApiKeyErrors {
    fn responses() -> BTreeMap<String, RefOr<ResponseDoc>> {
        [
            (
                "401",
                "No API key, or one that is unknown or revoked, or whose account is deleted \
                 (`missing_api_key`, `invalid_api_key`).",
            ),
            (
                "403",
                "The API key lacks the scope this operation needs (`missing_scope`).",
            ),
            (
                "429",
                "The account's requests per minute are used up (`rate_limited`); retry after \
                 `Retry-After` seconds.",
            ),
            ("500", "The database failed."),
            (
                "503",
                "The database did not answer in time (`database_unavailable`), or the model is \
                 still loading (`starting`).",
            ),
        ]
        .into_iter()
        .map(|(status, description)| (status.to_string(), error_response(description)))
        .collect()
    }
}

/// The error answers every admin route shares (see `admin_returns`).
pub struct AdminErrors;

impl IntoResponses for AdminErrors {
    fn responses() -> BTreeMap<String, RefOr<ResponseDoc>> {
        [
            (
                "401",
                "No admin token, or not the server's `--admin-token` (`invalid_admin_token`).",
            ),
            ("500", "The database failed."),
            (
                "503",
                "The database did not answer in time (`database_unavailable`), or the model is \
                 still loading (`starting`).",
            ),
        ]
        .into_iter()
        .map(|(status, description)| (status.to_string(), error_response(description)))
        .collect()
    }
}

/// The `Idempotency-Key` request header of the two POSTs.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1 to 255 visible ASCII characters, e.g. a UUID. A retry with the same key and the same
    /// request (image bytes or URLs, and options) within 24 hours answers the stored response
    /// with `Idempotent-Replayed: true` and is not billed again; the same key with another
    /// request is a 409. An attempt that failed is not kept, so its retry runs again.
    #[param(
        rename = "Idempotency-Key",
        max_length = 255,
        example = "3f0c2a9e-6b1d-4c55-9a7e-2f4b8d1c0e93"
    )]
    pub idempotency_key: Option<String>,
}

/// A string schema whose values are `values`.
fn string_enum(description: &str, values: impl IntoIterator<Item = &'static str>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values))
        .into()
}

impl PartialSchema for Detail {
    fn schema() -> RefOr<Schema> {
        string_enum(
            "How much text: `brief` is one sentence (alt text, the default), `detailed` a few \
             sentences, `paragraph` a paragraph (product descriptions).",
            Detail::ALL.map(Detail::as_str),
        )
        .into()
    }
}

impl ToSchema for Detail {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Detail")
    }
}

impl PartialSchema for ImageKind {
    fn schema() -> RefOr<Schema> {
        let all = [
            ImageKind::Jpeg,
            ImageKind::Png,
            ImageKind::Webp,
            ImageKind::Gif,
            ImageKind::Bmp,
            ImageKind::Tiff,
        ];
        // A new format does not compile until it is listed above.
        for kind in all {
            match kind {
                ImageKind::Jpeg
                | ImageKind::Png
                | ImageKind::Webp
                | ImageKind::Gif
                | ImageKind::Bmp
                | ImageKind::Tiff => {}
            }
        }
        string_enum(
            "Image container format, sniffed from the bytes.",
            all.map(ImageKind::as_str),
        )
        .into()
    }
}

impl ToSchema for ImageKind {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ImageKind")
    }
}

/// The caller's `metadata`: any JSON object, echoed back.
pub struct Metadata;

impl PartialSchema for Metadata {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Any JSON object (at most 16 KiB serialised), echoed back with the description.",
            ))
            .examples([serde_json::json!({"sku": 1042, "collection": "spring"})])
            .into()
    }
}

impl ToSchema for Metadata {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Metadata")
    }
}

/// Image bytes as the whole body (or one form part): JPEG, PNG, WebP, GIF, BMP or TIFF; the
/// format is sniffed from the bytes.
pub struct RawImage;

impl PartialSchema for RawImage {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .description(Some(
                "Image bytes: JPEG, PNG, WebP, GIF, BMP or TIFF (sniffed from the bytes).",
            ))
            .into()
    }
}

impl ToSchema for RawImage {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RawImage")
    }
}

/// Options of the raw-image form, in the query string (also accepted with a multipart body,
/// where form fields win).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawImageQuery {
    /// How much text: `brief` (default), `detailed` or `paragraph`.
    pub detail: Option<Detail>,
    /// Cut the text at a word boundary so that it never exceeds this many characters.
    #[param(minimum = 1)]
    pub max_chars: Option<usize>,
    /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
    #[param(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
    #[param(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Your id for the image, echoed back.
    #[param(max_length = 256)]
    pub asset_id: Option<String>,
}

/// The JSON form: exactly one of `image_base64` and `image_url`, and options. Unknown fields
/// are refused.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescriptionJson {
    /// The image in standard base64; a data URL (`data:image/png;base64,…`) is accepted.
    #[schema(
        example = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    )]
    pub image_base64: Option<String>,
    /// An http or https URL that the server fetches (size limit, timeout, redirect limit).
    /// Private, loopback, link-local and metadata addresses are refused unless the operator
    /// allows them.
    #[schema(example = "https://images.example.com/shoe.jpg")]
    pub image_url: Option<String>,
    pub detail: Option<Detail>,
    /// Cut the text at a word boundary so that it never exceeds this many characters.
    #[schema(minimum = 1)]
    pub max_chars: Option<usize>,
    /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
    #[schema(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Your id for the image, echoed back.
    #[schema(max_length = 256, example = "sku-1042")]
    pub asset_id: Option<String>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<serde_json::Value>,
}

/// The multipart form: one file field `image` and optional text fields. Unknown fields are
/// refused.
#[derive(ToSchema)]
pub struct DescriptionForm {
    pub image: RawImage,
    pub detail: Option<Detail>,
    /// Cut the text at a word boundary so that it never exceeds this many characters.
    #[schema(minimum = 1)]
    pub max_chars: Option<usize>,
    /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
    #[schema(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Your id for the image, echoed back.
    #[schema(max_length = 256)]
    pub asset_id: Option<String>,
    /// A JSON object as text (at most 16 KiB), echoed back.
    #[schema(example = "{\"sku\": 1042, \"collection\": \"spring\"}")]
    pub metadata: Option<String>,
}

/// The JSON batch form.
#[derive(ToSchema)]
pub struct DescriptionsBatchJson {
    /// Each item as the JSON body of `POST /v1/descriptions`; at least one.
    #[schema(min_items = 1)]
    pub images: Vec<DescriptionJson>,
}

/// The multipart batch form: several `image` file fields; the options apply to every image.
#[derive(ToSchema)]
pub struct DescriptionsBatchForm {
    /// One field per image, in order.
    #[schema(min_items = 1)]
    pub image: Vec<RawImage>,
    pub detail: Option<Detail>,
    /// Cut each text at a word boundary so that it never exceeds this many characters.
    #[schema(minimum = 1)]
    pub max_chars: Option<usize>,
    /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
    #[schema(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Your id, echoed back with every description.
    #[schema(max_length = 256)]
    pub asset_id: Option<String>,
    /// A JSON object as text, echoed back with every description.
    pub metadata: Option<String>,
}

/// The batch answer.
#[derive(ToSchema)]
pub struct DescriptionList {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: String,
    /// One item per image, in the order sent.
    pub data: Vec<DescriptionOrError>,
}

/// A description, or the error body of an image that failed.
// A schema only (never built at run time), so the variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum DescriptionOrError {
    Description(Description),
    Error(ErrorBody),
}

/// Health answers.
#[derive(ToSchema)]
pub struct HealthStatus {
    /// `live`, `ready` or `unavailable`.
    #[schema(example = "ready")]
    pub status: String,
    /// Why not ready: `starting`, `draining` or `no healthy model worker`.
    pub reason: Option<String>,
}

/// What the server runs with.
#[derive(ToSchema)]
pub struct InfoBody {
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// The model directory's name.
    #[schema(example = "florence-2-base")]
    pub model: String,
    #[schema(example = "cpu")]
    pub device: String,
    #[schema(example = "fp32")]
    pub dtype: String,
    /// Model instances.
    pub workers: usize,
    pub healthy_workers: usize,
    pub ready: bool,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub database: String,
    /// Whether the `/v1/admin/` routes exist (`--admin-token` is set).
    pub admin_api: bool,
    /// Whether usage is reported to Stripe.
    pub billing: Option<bool>,
    pub limits: InfoLimits,
}

/// The effective limits (after defaults and clamping).
#[derive(ToSchema)]
pub struct InfoLimits {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_batch_delay_ms: u64,
    pub max_queue_time_ms: u64,
    pub max_concurrent_images: usize,
    pub max_body_bytes: usize,
    pub max_image_bytes: u64,
    pub max_image_pixels: u64,
    pub max_images_per_request: usize,
    /// Open HTTP connections; one more is answered 503 `too_many_connections`.
    pub max_connections: u64,
    /// Seconds for a request's headers (and an idle kept-alive connection).
    pub header_read_timeout_secs: u64,
    /// Seconds from a request's headers to the end of its body; then 408.
    pub body_read_timeout_secs: u64,
    pub max_new_tokens: usize,
    pub max_num_beams: usize,
    /// Requests per minute per account unless the account has its own limit; 0 = no limit.
    pub rate_limit_per_minute: u64,
}

/// A page of stored descriptions.
#[derive(ToSchema)]
pub struct DescriptionPage {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: String,
    /// Newest first.
    pub data: Vec<Description>,
    /// Whether another page follows: ask for it with `starting_after` = the last `id`.
    pub has_more: bool,
}

/// A description's versions.
#[derive(ToSchema)]
pub struct VersionList {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: String,
    /// Oldest first; the last one is the current text.
    pub data: Vec<Version>,
    /// Always false.
    pub has_more: bool,
}

/// The answer to a deletion.
#[derive(ToSchema)]
pub struct DeletedDescription {
    /// Always `description`.
    #[schema(example = "description")]
    pub object: String,
    #[schema(example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

/// Usage per day.
#[derive(ToSchema)]
pub struct Usage {
    /// Always `usage`.
    #[schema(example = "usage")]
    pub object: String,
    /// The first day, `YYYY-MM-DD` UTC.
    #[schema(example = "2026-11-01")]
    pub from: String,
    /// The last day, inclusive.
    #[schema(example = "2026-11-30")]
    pub to: String,
    pub totals: UsageTotals,
    /// Every day of the range, oldest first; days without usage have zeros.
    pub data: Vec<UsageDay>,
}

/// Sums over the range.
#[derive(ToSchema)]
pub struct UsageTotals {
    /// Descriptions created.
    pub created: i64,
    /// Descriptions retrieved.
    pub retrieved: i64,
}

/// Everything kept about an account (`GET /v1/account/export`).
#[derive(ToSchema)]
pub struct AccountExport {
    /// Always `account_export`.
    #[schema(example = "account_export")]
    pub object: String,
    /// Unix milliseconds.
    pub exported_at: i64,
    pub account: Account,
    /// Key metadata; never the secrets.
    pub keys: Vec<ApiKey>,
    /// Every description, newest first, with its versions.
    pub descriptions: Vec<ExportedDescription>,
    /// The usage ledger rows still kept (rows older than two years are purged once reported).
    pub usage_events: Vec<UsageEvent>,
    /// Per-day totals of the purged ledger rows.
    pub usage_archive: Vec<ArchivedUsage>,
}

/// A description with its versions.
#[derive(Serialize, ToSchema)]
pub struct ExportedDescription {
    #[serde(flatten)]
    pub description: Description,
    /// Oldest first.
    pub versions: Vec<Version>,
}

/// A page of accounts.
#[derive(ToSchema)]
pub struct AccountList {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: String,
    /// Newest first.
    pub data: Vec<Account>,
    /// Whether another page follows: ask for it with `starting_after` = the last `id`.
    pub has_more: bool,
}

/// An account's keys.
#[derive(ToSchema)]
pub struct KeyList {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: String,
    /// Oldest first, revoked ones included.
    pub data: Vec<ApiKey>,
    /// Always false.
    pub has_more: bool,
}

/// A page of meter reports.
#[derive(ToSchema)]
pub struct MeterReportList {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: String,
    /// Oldest first.
    pub data: Vec<MeterReport>,
    /// Whether another page follows: ask for it with `starting_after` = the last `id`.
    pub has_more: bool,
}

/// The webhook's acknowledgement.
#[derive(Serialize, ToSchema)]
pub struct WebhookReceived {
    /// Always true.
    pub received: bool,
}

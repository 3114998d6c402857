//! The caller's own account: profile, restricted processing, objection to analytics, deletion,
//! usage and requests per day, and the full data export (privacy rights).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AllOfBuilder, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::resources::{
    Account, ApiKey, ArchivedUsage, AuditEvent, ConsentEvent, Description, LoggedRequest, UsageDay,
    UsageEvent, Version, rate,
};
use super::{Chunk, EXPORT_PAGE, paged};
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::{ApiJson, ApiQuery};
use crate::store::accounts::RestrictedBy;
use crate::store::audit::{self, action};
use crate::store::descriptions::ListFilter;
use crate::store::ids::{AccountId, DescriptionId};
use crate::store::keys::Scope;
use crate::store::usage::{MS_PER_DAY, format_day, parse_day};
use crate::store::{Store, now_ms};

/// The routes behind the API key.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(usage))
        .routes(routes!(show, update, delete))
        .routes(routes!(export))
}

error_set!(
    pub ReadErrors: ApiKeyLayer {}
);

/// The caller's account
///
/// The profile of the account the API key belongs to, with its restriction and deletion state.
/// Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/account",
    operation_id = "showAccount",
    responses(
        (status = 200, description = "The account.", body = Account),
        ReadErrors,
    ),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Account>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(state.store.account(caller.account_id()).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// Restrict processing (new descriptions refused with 403; reads and exports still work),
    /// or lift a restriction the account set itself.
    pub restricted: Option<bool>,
    /// Object to the account's usage being used for analytics and service improvement
    /// (`true`), or withdraw the objection (`false`). Recorded with its time.
    pub objected: Option<bool>,
}

error_set!(
    pub UpdateErrors: ApiKeyLayer {
        BadRequest => "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, neither `restricted` nor `objected`, or lifting a restriction the operator set.",
        NotFound => "The account's deletion was requested while this request ran.",
    }
);

/// Restrict processing or object to analytics, or lift either
///
/// Restricted processing (a privacy right): while `restricted` is true, new descriptions are
/// refused with 403 `account_restricted`; reads, edits, deletion and exports still work. The
/// account can lift only a restriction it set itself. Objection (another): while `objected` is
/// true (`objected_at` says since when), the account's usage is left out of every analytics
/// query and aggregate export; `false` gives consent again. Each change is recorded with its
/// time (the audit log, and `consents` in the export). Scope: `manage`.
#[utoipa::path(
    patch,
    path = "/v1/account",
    operation_id = "updateAccount",
    request_body(content = AccountPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The account, as it is now.", body = Account),
        UpdateErrors,
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<AccountPatch>, ApiError>,
) -> Result<Json<Account>, ApiError> {
    caller.require(Scope::Manage)?;
    let ApiJson(patch) = body?;
    if patch.restricted.is_none() && patch.objected.is_none() {
        return Err(ApiError::bad_request(
            "empty_patch",
            "send `restricted` or `objected` (or both)",
        ));
    }
    let actor = caller.actor();
    let mut account = None;
    if let Some(restricted) = patch.restricted {
        account = Some(
            state
                .store
                .set_restricted(
                    caller.account_id(),
                    restricted,
                    RestrictedBy::Account,
                    &actor,
                )
                .await?,
        );
    }
    if let Some(objected) = patch.objected {
        account = Some(
            state
                .store
                .set_objection(caller.account_id(), objected, &actor)
                .await?,
        );
    }
    Ok(Json(account.expect("one field is set").into()))
}

/// Delete the account
///
/// Every key is revoked and the account's data is hidden at once (this key stops working with
/// this request); the purge job deletes the data after `--deletion-grace-days` (at most 30;
/// `purge_after` says when). Billing aggregates are kept with personal identifiers removed.
/// Export first if you want a copy. Scope: `manage`.
#[utoipa::path(
    delete,
    path = "/v1/account",
    operation_id = "deleteAccount",
    responses(
        (status = 202, description = "Deletion accepted; the account as it is now, with `deleted_at` and `purge_after`.", body = Account),
        ReadErrors,
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    caller.require(Scope::Manage)?;
    let account = state
        .store
        .request_deletion(
            caller.account_id(),
            state.access.deletion_grace,
            &caller.actor(),
        )
        .await?;
    tracing::info!(account_id = %account.id, "account deletion requested");
    Ok((StatusCode::ACCEPTED, Json(account.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// The first day, `YYYY-MM-DD` UTC, inclusive (default: 29 days before `to`).
    #[param(example = "2026-11-01")]
    from: Option<String>,
    /// The last day, `YYYY-MM-DD` UTC, inclusive (default: today). At most 366 days after `from`.
    #[param(example = "2026-11-30")]
    to: Option<String>,
}

/// Usage per day.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Always `usage`.
    #[schema(value_type = String, example = "usage")]
    pub object: &'static str,
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
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageTotals {
    /// Descriptions created.
    pub created: i64,
    /// Descriptions retrieved.
    pub retrieved: i64,
    /// Requests made with the account's keys.
    pub requests: i64,
    /// Of those, the ones answered with a status of 400 or more.
    pub errors: i64,
    /// `errors / requests`; 0 without requests.
    pub error_rate: f64,
}

error_set!(
    pub UsageErrors: ApiKeyLayer {
        BadRequest => "Invalid query: an unknown parameter, a date that is not `YYYY-MM-DD`, `from` after `to`, or more than 366 days.",
    }
);

/// Usage per day
///
/// Billable events per UTC day and meter: `created` (descriptions made) and `retrieved`
/// (`GET /v1/descriptions/{id}`), every day of the range listed (zeros included), with totals.
/// Replays of an `Idempotency-Key` and exports are not counted. Each day also has the
/// requests made with the account's keys (the request log): how many, how many answered 400 or
/// more (`errors`, `error_rate`), and the median and 95th-percentile latency. Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "Counts per day, oldest first, and totals.", body = Usage),
        UsageErrors,
    ),
)]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<ApiQuery<UsageQuery>, ApiError>,
) -> Result<Json<Usage>, ApiError> {
    caller.require(Scope::Read)?;
    let ApiQuery(query) = query?;
    let day = |value: Option<&str>, default: i64, name: &str| match value {
        None => Ok(default),
        Some(text) => parse_day(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_date",
                format!("`{name}` must be a date as YYYY-MM-DD, got `{text}`"),
            )
        }),
    };
    let today = now_ms().div_euclid(MS_PER_DAY);
    let to = day(query.to.as_deref(), today, "to")?;
    let from = day(query.from.as_deref(), to - 29, "from")?;
    let days = state
        .store
        .usage_by_day(caller.account_id(), from, to)
        .await?;
    let requests = state
        .store
        .request_stats_by_day(caller.account_id(), from, to)
        .await?;
    let data: Vec<UsageDay> = days
        .into_iter()
        .zip(&requests)
        .map(|(day, requests)| UsageDay::new(day, requests))
        .collect();
    let (requests, errors) = (
        data.iter().map(|d| d.requests).sum(),
        data.iter().map(|d| d.errors).sum(),
    );
    let totals = UsageTotals {
        created: data.iter().map(|d| d.created).sum(),
        retrieved: data.iter().map(|d| d.retrieved).sum(),
        requests,
        errors,
        error_rate: rate(errors, requests),
    };
    Ok(Json(Usage {
        object: "usage",
        from: format_day(from),
        to: format_day(to),
        totals,
        data,
    }))
}

/// The export's first part, read before answering so that a database failure is a proper
/// error status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportHead {
    /// Always `account_export`.
    #[schema(value_type = String, example = "account_export")]
    pub object: &'static str,
    /// Unix milliseconds.
    pub exported_at: i64,
    pub account: Account,
    /// Key metadata; never the secrets.
    pub keys: Vec<ApiKey>,
}

/// Everything kept about an account (`GET /v1/account/export`): the head, then the streamed
/// arrays, in this order ([`export`] writes them so; a test checks it against this type).
#[derive(Debug, Serialize)]
pub struct AccountExport {
    #[serde(flatten)]
    pub head: ExportHead,
    /// Every description, newest first, with its versions.
    pub descriptions: Vec<ExportedDescription>,
    /// The usage ledger rows still kept (rows older than two years are purged once reported).
    pub usage_events: Vec<UsageEvent>,
    /// Per-day totals of the purged ledger rows.
    pub usage_archive: Vec<ArchivedUsage>,
    /// The request log (two years), oldest first.
    pub requests: Vec<LoggedRequest>,
    /// The account's audit events, oldest first.
    pub audit_events: Vec<AuditEvent>,
    /// Each objection to analytics and each consent given again, oldest first.
    pub consents: Vec<ConsentEvent>,
}

/// The streamed arrays, for the document: the head's fields come first (`allOf`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct ExportArrays {
    /// Every description, newest first, with its versions.
    descriptions: Vec<ExportedDescription>,
    /// The usage ledger rows still kept (rows older than two years are purged once reported).
    usage_events: Vec<UsageEvent>,
    /// Per-day totals of the purged ledger rows.
    usage_archive: Vec<ArchivedUsage>,
    /// The request log (two years), oldest first.
    requests: Vec<LoggedRequest>,
    /// The account's audit events, oldest first.
    audit_events: Vec<AuditEvent>,
    /// Each objection to analytics and each consent given again, oldest first.
    consents: Vec<ConsentEvent>,
}

impl PartialSchema for AccountExport {
    fn schema() -> RefOr<Schema> {
        AllOfBuilder::new()
            .item(ExportHead::schema())
            .item(ExportArrays::schema())
            .description(Some("Everything kept about an account."))
            .into()
    }
}

impl ToSchema for AccountExport {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ExportHead::name().into(), ExportHead::schema()));
        <ExportHead as ToSchema>::schemas(schemas);
        <ExportArrays as ToSchema>::schemas(schemas);
    }
}

/// A description with its versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportedDescription {
    #[serde(flatten)]
    pub description: Description,
    /// Oldest first.
    pub versions: Vec<Version>,
}

/// Export all the account's data
///
/// A privacy right: the account's profile, its keys' metadata (never secrets), every
/// description with its versions, its usage events and its archived usage, its request log,
/// its audit events, and its objections to analytics with their times, as one JSON document
/// (`Content-Disposition: attachment`), streamed as it is read. A database failure after the
/// answer started cuts the stream short, so the document does not parse. Recorded in the audit
/// log (`export.downloaded`). Not billed. Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/account/export",
    operation_id = "exportAccount",
    responses(
        (status = 200, description = "The account's data.", body = AccountExport, headers(
            ("content-disposition" = String, description = "`attachment; filename=\"account-export.json\"`."),
        )),
        ReadErrors,
    ),
)]
pub async fn export(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let account_id = caller.account_id().clone();
    let store = state.store.clone();
    let event = audit::AuditEvent::new(
        Some(&account_id),
        &caller.actor(),
        action::EXPORT_DOWNLOADED,
    )
    .details(serde_json::json!({ "export": "account" }));
    store.record_audit(&event).await?;
    let head = ExportHead {
        object: "account_export",
        exported_at: now_ms(),
        account: store.account(&account_id).await?.into(),
        keys: store
            .list_keys(&account_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect(),
    };
    let body = export_stream(store, account_id, head);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"account-export.json\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// The document in the field order of [`AccountExport`]: the head's object left open, each
/// array a page at a time, the small ones whole, then the closing brace.
fn export_stream(
    store: Store,
    account_id: AccountId,
    head: ExportHead,
) -> impl futures_util::Stream<Item = Chunk> + Send {
    let text = |text: String| futures_util::stream::once(async move { Ok(text.into()) });
    let descriptions = {
        let (store, account_id) = (store.clone(), account_id.clone());
        paged(move |cursor: Option<DescriptionId>| {
            let (store, account_id) = (store.clone(), account_id.clone());
            async move {
                let failed = |e: crate::store::StoreError| e.to_string();
                let page = store
                    .list_descriptions(
                        &account_id,
                        ListFilter::default(),
                        cursor.as_ref(),
                        EXPORT_PAGE,
                    )
                    .await
                    .map_err(failed)?;
                let ids: Vec<DescriptionId> =
                    page.descriptions.iter().map(|d| d.id.clone()).collect();
                let mut versions = store.versions_of(&account_id, &ids).await.map_err(failed)?;
                let next = page.has_more.then(|| ids.last().cloned()).flatten();
                let items = page.descriptions.into_iter().map(|description| {
                    let versions = versions.remove(description.id.as_str()).unwrap_or_default();
                    ExportedDescription {
                        description: description.into(),
                        versions: versions.into_iter().map(Into::into).collect(),
                    }
                });
                Ok((array_items(items, cursor.is_none()), next))
            }
        })
    };
    let usage_events = {
        let (store, account_id) = (store.clone(), account_id.clone());
        after_id(
            move |after| {
                let (store, account_id) = (store.clone(), account_id.clone());
                async move {
                    store
                        .usage_events_page(&account_id, after.as_deref(), EXPORT_PAGE)
                        .await
                }
            },
            |event| event.id.clone(),
            UsageEvent::from,
        )
    };
    let archive = {
        let (store, account_id) = (store.clone(), account_id.clone());
        futures_util::stream::once(async move {
            let archived = store
                .archived_usage(&account_id)
                .await
                .map_err(std::io::Error::other)?;
            let archived: Vec<ArchivedUsage> = archived.into_iter().map(Into::into).collect();
            Ok(after_usage(&archived).into())
        })
    };
    let requests = {
        let (store, account_id) = (store.clone(), account_id.clone());
        after_id(
            move |after| {
                let (store, account_id) = (store.clone(), account_id.clone());
                async move {
                    store
                        .requests_page(&account_id, after.as_deref(), EXPORT_PAGE)
                        .await
                }
            },
            |request| request.id.clone(),
            LoggedRequest::from,
        )
    };
    let audit_events = {
        let (store, account_id) = (store.clone(), account_id.clone());
        after_id(
            move |after| {
                let (store, account_id) = (store.clone(), account_id.clone());
                async move {
                    store
                        .audit_events_page(&account_id, after.as_deref(), EXPORT_PAGE)
                        .await
                }
            },
            |event| event.id.clone(),
            AuditEvent::for_account,
        )
    };
    let consents = futures_util::stream::once(async move {
        let consents = store
            .consent_events(&account_id)
            .await
            .map_err(std::io::Error::other)?;
        let consents: Vec<ConsentEvent> = consents.into_iter().map(Into::into).collect();
        Ok(close(&consents).into())
    });
    text(open(&head))
        .chain(descriptions)
        .chain(text(AFTER_DESCRIPTIONS.into()))
        .chain(usage_events)
        .chain(archive)
        .chain(requests)
        .chain(text(AFTER_REQUESTS.into()))
        .chain(audit_events)
        .chain(consents)
}

/// A listing read `EXPORT_PAGE` rows at a time, each page after the last row's id, as the items
/// of one JSON array (`wire` makes each row what clients see).
fn after_id<R, T, F, Fut>(
    fetch: F,
    id: fn(&R) -> String,
    wire: fn(R) -> T,
) -> impl futures_util::Stream<Item = Chunk> + Send
where
    R: Send + 'static,
    T: Serialize + 'static,
    F: Fn(Option<String>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = crate::store::Result<Vec<R>>> + Send,
{
    paged(move |after: Option<String>| {
        let fetch = fetch.clone();
        async move {
            let first = after.is_none();
            let rows = fetch(after).await.map_err(|e| e.to_string())?;
            let next = (rows.len() as i64 == EXPORT_PAGE)
                .then(|| rows.last().map(id))
                .flatten();
            Ok((array_items(rows.into_iter().map(wire), first), next))
        }
    })
}

/// The head object without its closing brace, and the descriptions array opened.
fn open(head: &ExportHead) -> String {
    let head = serde_json::to_string(head).expect("serialisable; this is a bug");
    format!("{},\"descriptions\":[", &head[..head.len() - 1])
}

/// Between the descriptions and the usage events.
const AFTER_DESCRIPTIONS: &str = "],\"usage_events\":[";

/// The usage events closed, the archive, the requests opened.
fn after_usage(archived: &[ArchivedUsage]) -> String {
    let json = serde_json::to_string(archived).expect("serialisable; this is a bug");
    format!("],\"usage_archive\":{json},\"requests\":[")
}

/// Between the requests and the audit events.
const AFTER_REQUESTS: &str = "],\"audit_events\":[";

/// The audit events closed, the consents, the document closed.
fn close(consents: &[ConsentEvent]) -> String {
    let json = serde_json::to_string(consents).expect("serialisable; this is a bug");
    format!("],\"consents\":{json}}}")
}

/// One page of a JSON array's items: a comma before every item but the array's first. An
/// empty page is always a listing's last, so no page follows an empty first one.
fn array_items<T: Serialize>(items: impl Iterator<Item = T>, first_page: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        if i > 0 || !first_page {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &item).expect("serialisable; this is a bug");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streamed pieces put together are `AccountExport` serialised whole: the document type
    /// and the stream cannot drift apart.
    #[test]
    fn the_stream_writes_the_documented_export() {
        let account = Account {
            id: "acct_1".into(),
            name: Some("Shop".into()),
            email: None,
            stripe_customer_id: None,
            rate_limit_per_minute: None,
            restricted_by: None,
            restricted_at: None,
            objected_at: Some(3),
            created_at: 1,
            deleted_at: None,
            purge_after: None,
            purged_at: None,
        };
        let head = || ExportHead {
            object: "account_export",
            exported_at: 7,
            account: account.clone(),
            keys: Vec::new(),
        };
        let event = |id: &str| UsageEvent {
            id: id.into(),
            meter: "created".into(),
            quantity: 1,
            occurred_at: 2,
            description_id: "desc_1".into(),
            request_id: "req_1".into(),
            reported_at: None,
        };
        let archive = vec![ArchivedUsage {
            date: "2026-01-01".into(),
            meter: "created".into(),
            quantity: 3,
        }];
        let request = |id: &str| LoggedRequest {
            object: "request",
            id: id.into(),
            key_id: Some("key_1".into()),
            request_id: Some("req_1".into()),
            method: "GET".into(),
            route: "/v1/account".into(),
            status: 200,
            latency_ms: 4,
            ip: Some("127.0.0.1".into()),
            user_agent: None,
            created_at: 5,
        };
        let audit_event = AuditEvent {
            object: "audit_event",
            id: "aud_1".into(),
            account_id: Some("acct_1".into()),
            actor_kind: crate::store::audit::ActorKind::ApiKey,
            actor_id: Some("key_1".into()),
            action: "consent.objected".into(),
            target: None,
            ip: None,
            user_agent: None,
            details: serde_json::json!({"purpose": "analytics"}),
            created_at: 3,
        };
        let consents = vec![ConsentEvent {
            id: "cns_1".into(),
            purpose: "analytics".into(),
            decision: "objected".into(),
            created_at: 3,
        }];
        let whole = AccountExport {
            head: head(),
            descriptions: Vec::new(),
            usage_events: vec![event("u1"), event("u2"), event("u3")],
            usage_archive: archive.clone(),
            requests: vec![request("r1"), request("r2")],
            audit_events: vec![audit_event.clone()],
            consents: consents.clone(),
        };
        let mut streamed = open(&head()).into_bytes();
        streamed.extend(AFTER_DESCRIPTIONS.as_bytes());
        streamed.extend(array_items([event("u1"), event("u2")].into_iter(), true));
        streamed.extend(array_items([event("u3")].into_iter(), false));
        streamed.extend(after_usage(&archive).into_bytes());
        streamed.extend(array_items([request("r1")].into_iter(), true));
        streamed.extend(array_items([request("r2")].into_iter(), false));
        streamed.extend(AFTER_REQUESTS.as_bytes());
        streamed.extend(array_items([audit_event].into_iter(), true));
        streamed.extend(close(&consents).into_bytes());
        let streamed: serde_json::Value = serde_json::from_slice(&streamed).unwrap();
        assert_eq!(streamed, serde_json::to_value(&whole).unwrap());
    }

    #[test]
    fn pages_join_into_one_json_array() {
        let mut array = b"[".to_vec();
        array.extend(array_items([1, 2].into_iter(), true));
        array.extend(array_items([3].into_iter(), false));
        array.push(b']');
        let parsed: Vec<i64> = serde_json::from_slice(&array).unwrap();
        assert_eq!(parsed, vec![1, 2, 3]);
    }
}

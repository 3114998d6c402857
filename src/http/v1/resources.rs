//! The API's resources as clients see them, each the `Serialize + ToSchema` type a handler
//! returns and the document describes: built from the store's rows, which know nothing of the
//! wire. A field added here is a field of the API.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use crate::describe::lint::Finding;
use crate::store::accounts::RestrictedBy;
use crate::store::audit::ActorKind;
use crate::store::descriptions::Provenance;
use crate::store::keys::Scope;
use crate::store::review::ReviewStatus;
use crate::store::{
    accounts, audit, consents, descriptions, keys, meter_reports, request_log, usage,
};

/// Facts about the image read from its bytes; the bytes themselves are never kept.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImageFacts {
    pub width: u32,
    pub height: u32,
    /// The container format sniffed from the bytes (not the declared content type).
    #[schema(value_type = crate::model::preprocess::ImageKind)]
    pub format: String,
    pub byte_size: u64,
    /// SHA-256 of the image bytes, hex.
    #[schema(example = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    pub sha256: String,
}

/// The description resource.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Description {
    /// Always `description`.
    #[schema(value_type = String, example = "description")]
    pub object: &'static str,
    #[schema(example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// The primary output's current text: the alt text when there is some, else the first of
    /// description, SEO title and keywords (joined with `, `). The model's text fitted to the
    /// request's lengths, or a person's edit.
    #[schema(example = "A red leather shoe on a white background.")]
    pub text: String,
    /// Every output asked for: `alt_text`, `description` and `seo_title` as text, `keywords`
    /// as a list.
    #[schema(value_type = Outputs)]
    pub outputs: Value,
    pub provenance: Provenance,
    /// 1 for the model's text; each edit adds one.
    pub version: i64,
    /// Florence-2's caption level of the alt text; absent for models without levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::model::Detail>)]
    pub detail: Option<String>,
    /// The name of the model that wrote it (`GET /v1/info` lists the loaded ones).
    #[schema(example = "florence-2-base-ft")]
    pub model: String,
    /// The language it is written in, BCP 47.
    #[schema(example = "en")]
    pub language: String,
    /// The product context the request gave; absent when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// The tone the request asked for; absent when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
    /// The caller's `asset_id`, echoed back; absent when none was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<String>,
    /// The caller's `metadata` object, echoed back; absent when none was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<Value>,
    pub image: ImageFacts,
    /// The generation options the request set (`outputs`, `max_chars`, `max_words`,
    /// `keyword_count`, `max_new_tokens`, `num_beams`, `temperature`, `top_p`, and the `seed`
    /// sampling used).
    #[schema(value_type = Object)]
    pub options: Value,
    /// Tokens the model generated, all outputs together (before any fitting).
    pub generated_tokens: u64,
    /// Why generation stopped: `eos` when every output ended by itself, else `length` (an
    /// output reached `max_new_tokens`).
    #[schema(value_type = crate::model::generate::FinishReason)]
    pub finish_reason: String,
    /// Whether fitting shortened an output (`max_chars`, `max_words`, the SEO title's 60
    /// characters, `keyword_count`).
    pub truncated: bool,
    /// What the alt-text linter found in the outputs, worst first (the README lists every
    /// code); empty when nothing. Checked again on every edit. Absent on descriptions stored
    /// before the linter existed, until their next edit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<Vec<Finding>>,
    /// What a person decided: every new description is `unreviewed`, and an edit sends it back
    /// there (the approval covered the words before the edit).
    pub review: Review,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A description's review state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Review {
    pub status: ReviewStatus,
    /// Who decided: a console user id (`usr_…`) or an API key id (`key_…`); absent while
    /// unreviewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "key_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub reviewed_by: Option<String>,
    /// When (Unix milliseconds); absent while unreviewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewed_at: Option<i64>,
}

impl From<descriptions::Description> for Description {
    fn from(row: descriptions::Description) -> Self {
        // Written by this program from `Finding`s; a row that does not parse is shown without
        // them rather than failing the read, and the log says which.
        let findings = row.findings.and_then(|findings| {
            serde_json::from_value(findings)
                .inspect_err(|error| {
                    tracing::warn!(description = %row.id, %error, "stored findings do not parse; answered without them");
                })
                .ok()
        });
        let image = row.image;
        Self {
            object: "description",
            id: row.id.into(),
            text: row.text,
            outputs: row.outputs,
            provenance: row.provenance,
            version: row.version,
            detail: row.detail,
            model: row.model,
            language: row.language,
            context: row.context,
            tone: row.tone,
            asset_id: row.asset_id,
            metadata: row.metadata,
            image: ImageFacts {
                width: image.width,
                height: image.height,
                format: image.format,
                byte_size: image.byte_size,
                sha256: image.sha256,
            },
            options: row.options,
            generated_tokens: row.generated_tokens,
            finish_reason: row.finish_reason,
            truncated: row.truncated,
            findings,
            review: Review {
                status: row.review.status,
                reviewed_by: row.review.by,
                reviewed_at: row.review.at,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The caller's `metadata`: any JSON object, echoed back. Its schema is written by hand: a
/// free-form object has no fields to derive.
pub struct Metadata;

impl utoipa::PartialSchema for Metadata {
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

impl ToSchema for Metadata {}

/// A description's outputs (only those asked for are present).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Outputs {
    /// One sentence for the image's `alt` attribute.
    #[schema(example = "A white stoneware mug with a red rim on a wooden table.")]
    alt_text: Option<String>,
    /// Product copy.
    description: Option<String>,
    /// A page title for search results, at most 60 characters.
    seo_title: Option<String>,
    /// Search keywords.
    keywords: Option<Vec<String>>,
}

/// One earlier or current text of a description.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Version {
    pub version: i64,
    /// The primary output's text in this version.
    pub text: String,
    /// Every output in this version.
    #[schema(value_type = Outputs)]
    pub outputs: Value,
    pub provenance: Provenance,
    pub created_at: i64,
}

impl From<descriptions::Version> for Version {
    fn from(row: descriptions::Version) -> Self {
        Self {
            version: row.version,
            text: row.text,
            outputs: row.outputs,
            provenance: row.provenance,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Account {
    #[schema(example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// Absent once the account is purged.
    pub name: Option<String>,
    pub email: Option<String>,
    pub stripe_customer_id: Option<String>,
    /// Requests per minute for this account; absent: the server's `--rate-limit-per-minute`.
    pub rate_limit_per_minute: Option<i64>,
    /// Set while processing is restricted: new descriptions are refused, reads still work.
    pub restricted_by: Option<RestrictedBy>,
    pub restricted_at: Option<i64>,
    /// Set while the account objects to its usage being used for analytics and service
    /// improvement (Unix milliseconds of the objection); every analytics query leaves the
    /// account out. `PATCH /v1/account {"objected": false}` withdraws the objection.
    pub objected_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When deletion was requested; the account is hidden from then on.
    pub deleted_at: Option<i64>,
    /// When the purge job deletes the account's data.
    pub purge_after: Option<i64>,
    pub purged_at: Option<i64>,
}

impl From<accounts::Account> for Account {
    fn from(row: accounts::Account) -> Self {
        Self {
            id: row.id.into(),
            name: row.name,
            email: row.email,
            stripe_customer_id: row.stripe_customer_id,
            rate_limit_per_minute: row.rate_limit_per_minute,
            restricted_by: row.restricted_by,
            restricted_at: row.restricted_at,
            objected_at: row.objected_at,
            created_at: row.created_at,
            deleted_at: row.deleted_at,
            purge_after: row.purge_after,
            purged_at: row.purged_at,
        }
    }
}

/// A key as listed: never the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    #[schema(example = "key_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// The first characters of the secret, to recognise it.
    #[schema(example = "altk_Q2xhc3Np")]
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl From<keys::ApiKey> for ApiKey {
    fn from(row: keys::ApiKey) -> Self {
        Self {
            id: row.id,
            account_id: row.account_id.into(),
            name: row.name,
            prefix: row.prefix,
            scopes: row.scopes,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// Counts for one UTC day.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    #[schema(example = "2026-11-29")]
    pub date: String,
    /// Descriptions created.
    pub created: i64,
    /// Descriptions retrieved (`GET /v1/descriptions/{id}`).
    pub retrieved: i64,
    /// Requests made with the account's keys (the request log).
    pub requests: i64,
    /// Of those, the ones answered with a status of 400 or more.
    pub errors: i64,
    /// `errors / requests`; 0 on a day without requests.
    pub error_rate: f64,
    /// The median latency in milliseconds, from arrival to the answer's head; absent on a day
    /// without requests.
    pub latency_p50_ms: Option<i64>,
    /// The 95th percentile latency (nearest rank).
    pub latency_p95_ms: Option<i64>,
}

impl UsageDay {
    /// A day's billable counts and its requests (the same day).
    pub fn new(usage: usage::UsageDay, requests: &request_log::RequestDay) -> Self {
        Self {
            date: usage.date,
            created: usage.created,
            retrieved: usage.retrieved,
            requests: requests.requests,
            errors: requests.errors,
            error_rate: rate(requests.errors, requests.requests),
            latency_p50_ms: requests.latency_p50_ms,
            latency_p95_ms: requests.latency_p95_ms,
        }
    }
}

/// `part / whole`, 0 when `whole` is.
pub fn rate(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// One request made with one of the account's keys, as the request log keeps it: never its
/// body, never the key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoggedRequest {
    /// Always `request`.
    #[schema(value_type = String, example = "request")]
    pub object: &'static str,
    #[schema(example = "rlog_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// The key it was made with; absent once the account is purged.
    #[schema(example = "key_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub key_id: Option<String>,
    /// The `x-request-id` of the answer; erased when the account is purged.
    pub request_id: Option<String>,
    #[schema(example = "POST")]
    pub method: String,
    /// The route's template, never the path with its ids or the query.
    #[schema(example = "/v1/descriptions/{id}")]
    pub route: String,
    pub status: i64,
    /// From arrival to the answer's head.
    pub latency_ms: i64,
    /// The client's address (`--trusted-proxies` decides when `X-Forwarded-For` is believed);
    /// erased when the account is purged.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// When it arrived, Unix milliseconds.
    pub created_at: i64,
}

impl From<request_log::LoggedRequest> for LoggedRequest {
    fn from(row: request_log::LoggedRequest) -> Self {
        Self {
            object: "request",
            id: row.id,
            key_id: row.key_id,
            request_id: row.request_id,
            method: row.method,
            route: row.route,
            status: row.status,
            latency_ms: row.latency_ms,
            ip: row.ip,
            user_agent: row.user_agent,
            created_at: row.created_at,
        }
    }
}

/// A security event of the audit log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Always `audit_event`.
    #[schema(value_type = String, example = "audit_event")]
    pub object: &'static str,
    /// `aud_` and a UUIDv7: ids sort by time.
    #[schema(example = "aud_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// The account it is about; absent for operator events about no one account.
    pub account_id: Option<String>,
    pub actor_kind: ActorKind,
    /// The key id (`api_key`), `admin_token` or `cli` (`operator`), the user (`user`).
    pub actor_id: Option<String>,
    /// What happened: `key.created`, `key.revoked`, `account.restricted`,
    /// `account.restriction_lifted`, `account.deletion_requested`, `account.purged`,
    /// `account.created`, `account.updated`, `export.downloaded`, `webhook_secret.rotated`,
    /// `consent.objected`, `consent.given`, `billing.report_retried`, `billing.customer_deleted`
    /// (Stripe deleted the account's customer), and the console's own.
    #[schema(example = "key.created")]
    pub action: String,
    /// What was acted on, when not the account itself.
    pub target: Option<String>,
    /// Where the actor called from; erased when the account is purged.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The facts of the change; never a secret.
    #[schema(value_type = Object)]
    pub details: Value,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl From<audit::StoredAuditEvent> for AuditEvent {
    fn from(row: audit::StoredAuditEvent) -> Self {
        Self {
            object: "audit_event",
            id: row.id,
            account_id: row.account_id.map(Into::into),
            actor_kind: row.actor_kind,
            actor_id: row.actor_id,
            action: row.action,
            target: row.target,
            ip: row.ip,
            user_agent: row.user_agent,
            details: row.details,
            created_at: row.created_at,
        }
    }
}

impl AuditEvent {
    /// As the account sees its own events: where the operator called from is the operator's
    /// business, not the account's.
    pub fn for_account(row: audit::StoredAuditEvent) -> Self {
        let operator = row.actor_kind == ActorKind::Operator;
        let mut event = Self::from(row);
        if operator {
            event.ip = None;
            event.user_agent = None;
        }
        event
    }
}

/// One objection to analytics, or consent given again.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsentEvent {
    #[schema(example = "cns_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// `analytics`: the account's usage used for analytics and service improvement.
    #[schema(example = "analytics")]
    pub purpose: String,
    /// `objected`, or `given` (the objection withdrawn).
    #[schema(example = "objected")]
    pub decision: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

impl From<consents::ConsentEvent> for ConsentEvent {
    fn from(row: consents::ConsentEvent) -> Self {
        Self {
            id: row.id,
            purpose: row.purpose,
            decision: row.decision,
            created_at: row.created_at,
        }
    }
}

/// One ledger row, as the account export shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageEvent {
    pub id: String,
    pub meter: String,
    pub quantity: i64,
    pub occurred_at: i64,
    pub description_id: String,
    pub request_id: String,
    pub reported_at: Option<i64>,
}

impl From<usage::UsageEvent> for UsageEvent {
    fn from(row: usage::UsageEvent) -> Self {
        Self {
            id: row.id,
            meter: row.meter,
            quantity: row.quantity,
            occurred_at: row.occurred_at,
            description_id: row.description_id,
            request_id: row.request_id,
            reported_at: row.reported_at,
        }
    }
}

/// Usage of one day and meter whose ledger rows were purged.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ArchivedUsage {
    pub date: String,
    pub meter: String,
    pub quantity: i64,
}

impl From<usage::ArchivedUsage> for ArchivedUsage {
    fn from(row: usage::ArchivedUsage) -> Self {
        Self {
            date: row.date,
            meter: row.meter,
            quantity: row.quantity,
        }
    }
}

/// A meter report as the admin API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeterReport {
    /// Also the `identifier` of the Stripe meter event.
    #[schema(example = "mr_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// Always `meter_report`.
    #[schema(value_type = String, example = "meter_report")]
    pub object: &'static str,
    pub account_id: String,
    pub stripe_customer_id: String,
    /// `created` or `retrieved`.
    pub meter: String,
    pub event_name: String,
    pub value: i64,
    /// Unix seconds: the meter event's `timestamp`.
    pub event_ts: i64,
    /// `pending`, `sent`, `failed`, `expired` or `needs_reconcile`.
    pub status: String,
    pub attempts: i64,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

impl From<meter_reports::MeterReport> for MeterReport {
    fn from(row: meter_reports::MeterReport) -> Self {
        Self {
            id: row.id,
            object: "meter_report",
            account_id: row.account_id,
            stripe_customer_id: row.stripe_customer_id,
            meter: row.meter,
            event_name: row.event_name,
            value: row.value,
            event_ts: row.event_ts,
            status: row.status,
            attempts: row.attempts,
            last_result: row.last_result,
            last_error: row.last_error,
            created_at: row.created_at,
            sent_at: row.sent_at,
        }
    }
}

/// The list envelopes: `{"object": "list", "data": [...], "has_more"}`, one named schema each.
macro_rules! list {
    ($(#[$doc:meta])* $name:ident of $item:ty, $data:literal, $has_more:literal) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $name {
            /// Always `list`.
            #[schema(value_type = String, example = "list")]
            pub object: &'static str,
            #[doc = $data]
            pub data: Vec<$item>,
            #[doc = $has_more]
            pub has_more: bool,
        }

        impl $name {
            pub fn new(data: impl IntoIterator<Item = impl Into<$item>>, has_more: bool) -> Self {
                Self {
                    object: "list",
                    data: data.into_iter().map(Into::into).collect(),
                    has_more,
                }
            }
        }
    };
}

pub(crate) use list;

list!(
    /// A page of stored descriptions.
    DescriptionPage of Description, "Newest first.",
    "Whether another page follows: ask for it with `starting_after` = the last `id`."
);
list!(
    /// A description's versions.
    VersionList of Version, "Oldest first; the last one is the current text.", "Always false."
);
list!(
    /// A page of accounts.
    AccountList of Account, "Newest first.",
    "Whether another page follows: ask for it with `starting_after` = the last `id`."
);
list!(
    /// An account's keys.
    KeyList of ApiKey, "Oldest first, revoked ones included.", "Always false."
);
list!(
    /// A page of the request log.
    RequestPage of LoggedRequest, "Newest first.",
    "Whether another page follows: ask for it with `starting_after` = the last `id`."
);
list!(
    /// A page of audit events.
    AuditEventPage of AuditEvent, "Newest first.",
    "Whether another page follows: ask for it with `starting_after` = the last `id`."
);
list!(
    /// A page of meter reports.
    MeterReportList of MeterReport, "Oldest first.",
    "Whether another page follows: ask for it with `starting_after` = the last `id`."
);

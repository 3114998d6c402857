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
use crate::store::descriptions::Provenance;
use crate::store::keys::Scope;
use crate::store::review::ReviewStatus;
use crate::store::{accounts, descriptions, keys, meter_reports, usage};

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
}

impl From<usage::UsageDay> for UsageDay {
    fn from(row: usage::UsageDay) -> Self {
        Self {
            date: row.date,
            created: row.created,
            retrieved: row.retrieved,
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
    /// A page of meter reports.
    MeterReportList of MeterReport, "Oldest first.",
    "Whether another page follows: ask for it with `starting_after` = the last `id`."
);

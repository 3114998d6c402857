//! Stored descriptions: written with their usage row in one transaction, read (a billable
//! retrieval), listed, edited with versions kept, deleted. Every query is scoped by account.

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::idempotency::Completion;
use super::ids::{AccountId, DescriptionId};
use super::review::{Review, ReviewStatus, review_from_row};
use super::{Result, Store, StoreError, check_string, now_ms};
use crate::strings::Shape;

/// Who wrote the current text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// The model's text, untouched.
    Ai,
    /// Written by a person.
    Human,
    /// The model's text, edited by a person.
    AiEdited,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Ai => "ai",
            Provenance::Human => "human",
            Provenance::AiEdited => "ai_edited",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        match value {
            "ai" => Ok(Provenance::Ai),
            "human" => Ok(Provenance::Human),
            "ai_edited" => Ok(Provenance::AiEdited),
            other => Err(StoreError::Corrupt(format!("provenance `{other}`"))),
        }
    }
}

/// Facts about the image read from its bytes; the bytes themselves are never kept.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFacts {
    pub width: u32,
    pub height: u32,
    /// The container format sniffed from the bytes (not the declared content type).
    pub format: String,
    pub byte_size: u64,
    /// SHA-256 of the image bytes, hex.
    pub sha256: String,
}

/// A stored description (`http::v1::resources::Description` is what clients see).
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    pub id: DescriptionId,
    /// The current text of the primary output (`describe::outputs::primary`).
    pub text: String,
    /// Every output: `alt_text`, `description`, `seo_title` as text, `keywords` as a list.
    pub outputs: Value,
    pub provenance: Provenance,
    /// 1 for the model's text; each edit adds one.
    pub version: i64,
    /// Florence-2's caption length; `None` for families without one.
    pub detail: Option<String>,
    /// The name of the model that wrote it.
    pub model: String,
    /// BCP 47.
    pub language: String,
    /// The product context the request gave (JSON), if any.
    pub context: Option<Value>,
    pub tone: Option<String>,
    /// The caller's `asset_id`, echoed back; absent when none was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<String>,
    /// The caller's `metadata` object, echoed back; absent when none was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    pub image: ImageFacts,
    /// The generation options the request asked for (`max_chars`, `max_new_tokens`, `num_beams`).
    pub options: Value,
    /// Tokens the model generated (before any `max_chars` cut).
    pub generated_tokens: u64,
    /// Why generation stopped: `eos` or `length`.
    pub finish_reason: String,
    /// Whether `max_chars` shortened the model's text.
    pub truncated: bool,
    /// The linter's findings (a JSON array) and the worst severity as a number (0 none, 1 info,
    /// 2 warning, 3 error); `None` for rows written before the linter, until their next edit.
    pub findings: Option<Value>,
    pub lint_level: Option<i64>,
    /// What a person decided about it.
    pub review: Review,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a new description is written with (its review state starts at the column default).
const INSERT_COLUMNS: &str = "id, text, provenance, version, detail, options, model, asset_id, metadata, image_width, image_height, image_format, image_byte_size, image_sha256, generated_tokens, finish_reason, truncated, created_at, updated_at, outputs, language, context, tone, findings, lint_level";

pub(crate) const COLUMNS: &str = "id, text, provenance, version, detail, options, model, asset_id, metadata, image_width, image_height, image_format, image_byte_size, image_sha256, generated_tokens, finish_reason, truncated, created_at, updated_at, outputs, language, context, tone, findings, lint_level, review_status, reviewed_by, reviewed_at";

/// The outputs column; a row from before outputs existed has its text as alt text.
fn outputs_column(row: &AnyRow, text: &str) -> Result<Value> {
    Ok(json_column(row, "outputs")?.unwrap_or_else(|| serde_json::json!({ "alt_text": text })))
}

fn json_column(row: &AnyRow, name: &str) -> Result<Option<Value>> {
    let text: Option<String> = row.try_get(name)?;
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Corrupt(format!("{name} is not JSON: {e}")))
    })
    .transpose()
}

pub(crate) fn from_row(row: &AnyRow) -> Result<Description> {
    let provenance: String = row.try_get("provenance")?;
    let text: String = row.try_get("text")?;
    let detail: String = row.try_get("detail")?;
    Ok(Description {
        id: DescriptionId::trusted(row.try_get("id")?),
        outputs: outputs_column(row, &text)?,
        text,
        provenance: Provenance::parse(&provenance)?,
        version: row.try_get("version")?,
        detail: (!detail.is_empty()).then_some(detail),
        options: json_column(row, "options")?.unwrap_or(Value::Null),
        model: row.try_get("model")?,
        language: row.try_get("language")?,
        context: json_column(row, "context")?,
        tone: row.try_get("tone")?,
        asset_id: row.try_get("asset_id")?,
        metadata: json_column(row, "metadata")?,
        image: ImageFacts {
            width: row.try_get::<i64, _>("image_width")? as u32,
            height: row.try_get::<i64, _>("image_height")? as u32,
            format: row.try_get("image_format")?,
            byte_size: row.try_get::<i64, _>("image_byte_size")? as u64,
            sha256: row.try_get("image_sha256")?,
        },
        generated_tokens: row.try_get::<i64, _>("generated_tokens")? as u64,
        finish_reason: row.try_get("finish_reason")?,
        truncated: row.try_get::<i64, _>("truncated")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        findings: json_column(row, "findings")?,
        lint_level: row.try_get("lint_level")?,
        review: review_from_row(row)?,
    })
}

/// One earlier or current text of a description.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub version: i64,
    pub text: String,
    pub outputs: Value,
    pub provenance: Provenance,
    pub created_at: i64,
}

fn version_from_row(row: &AnyRow) -> Result<Version> {
    let text: String = row.try_get("text")?;
    Ok(Version {
        version: row.try_get("version")?,
        outputs: outputs_column(row, &text)?,
        text,
        provenance: Provenance::parse(&row.try_get::<String, _>("provenance")?)?,
        created_at: row.try_get("created_at")?,
    })
}

/// What an edit changes: the primary text, the outputs, and the linter's findings on them.
#[derive(Debug, Clone)]
pub struct Revision {
    pub text: String,
    pub outputs: Map<String, Value>,
    pub findings: Value,
    /// The worst finding's severity, 0 (none) to 3 (error).
    pub lint_level: i64,
}

/// Which descriptions a listing shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter<'a> {
    pub asset_id: Option<&'a str>,
    /// Only those whose worst finding is at least this severity (1 info, 2 warning, 3 error).
    pub min_lint_level: Option<i64>,
    /// Only those with a finding of this code.
    pub finding: Option<&'a str>,
    pub review_status: Option<ReviewStatus>,
    /// Only those whose current text contains this (case-insensitive for ASCII letters).
    pub text_contains: Option<&'a str>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    pub descriptions: Vec<Description>,
    pub has_more: bool,
}

/// One description of one account, through `executor` (the pool, or a transaction).
async fn select_description<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    account_id: &AccountId,
    id: &DescriptionId,
) -> Result<Description> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM descriptions WHERE id = $1 AND account_id = $2"
    ))
    .bind(id.as_str())
    .bind(account_id.as_str())
    .fetch_optional(executor)
    .await?
    .ok_or(StoreError::NotFound("description"))?;
    from_row(&row)
}

impl Store {
    /// Stores new descriptions, one `created` ledger row each, and (when given) the idempotency
    /// record's answer, all in one transaction: either all of it exists or none does.
    pub async fn save_created(
        &self,
        account_id: &AccountId,
        request_id: &str,
        descriptions: &[Description],
        completion: Option<Completion<'_>>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for description in descriptions {
            self.insert_created(&mut tx, account_id, request_id, description)
                .await?;
        }
        if let Some(completion) = completion {
            completion.write(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One new description, its first version and its `created` ledger row, inside the
    /// caller's transaction (a request's, or a job item's that also marks the item done).
    pub(crate) async fn insert_created(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        account_id: &AccountId,
        request_id: &str,
        description: &Description,
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO descriptions (account_id, request_id, {INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)"
        ))
        .bind(account_id.as_str())
        .bind(request_id)
        .bind(description.id.as_str())
        .bind(&description.text)
        .bind(description.provenance.as_str())
        .bind(description.version)
        .bind(description.detail.as_deref().unwrap_or_default())
        .bind(description.options.to_string())
        .bind(&description.model)
        .bind(&description.asset_id)
        .bind(description.metadata.as_ref().map(Value::to_string))
        .bind(description.image.width as i64)
        .bind(description.image.height as i64)
        .bind(&description.image.format)
        .bind(description.image.byte_size as i64)
        .bind(&description.image.sha256)
        .bind(description.generated_tokens as i64)
        .bind(&description.finish_reason)
        .bind(description.truncated as i64)
        .bind(description.created_at)
        .bind(description.updated_at)
        .bind(description.outputs.to_string())
        .bind(&description.language)
        .bind(description.context.as_ref().map(Value::to_string))
        .bind(&description.tone)
        .bind(description.findings.as_ref().map(Value::to_string))
        .bind(description.lint_level)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO description_versions (description_id, account_id, version, text, provenance, created_at, outputs) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(description.id.as_str())
        .bind(account_id.as_str())
        .bind(description.version)
        .bind(&description.text)
        .bind(description.provenance.as_str())
        .bind(description.created_at)
        .bind(description.outputs.to_string())
        .execute(&mut **tx)
        .await?;
        self.record_usage(
            tx,
            account_id,
            "created",
            description.id.as_str(),
            request_id,
        )
        .await?;
        Ok(())
    }

    /// One description; with `request_id`, the read is a billable retrieval recorded in the
    /// same transaction.
    pub async fn retrieve_description(
        &self,
        account_id: &AccountId,
        id: &DescriptionId,
        request_id: &str,
    ) -> Result<Description> {
        let mut tx = self.begin_write().await?;
        let description = select_description(&mut *tx, account_id, id).await?;
        self.record_usage(&mut tx, account_id, "retrieved", id.as_str(), request_id)
            .await?;
        tx.commit().await?;
        Ok(description)
    }

    /// A description without billing (the answer to an edit, for instance).
    pub async fn description(
        &self,
        account_id: &AccountId,
        id: &DescriptionId,
    ) -> Result<Description> {
        select_description(self.pool(), account_id, id).await
    }

    /// Newest first; `starting_after` is the last id of the previous page.
    pub async fn list_descriptions(
        &self,
        account_id: &AccountId,
        filter: ListFilter<'_>,
        starting_after: Option<&DescriptionId>,
        limit: i64,
    ) -> Result<Page> {
        let mut sql = format!("SELECT {COLUMNS} FROM descriptions WHERE account_id = $1");
        let mut next = 2;
        let mut condition = |sql: &mut String, clause: &str| {
            sql.push_str(&clause.replace('?', &format!("${next}")));
            next += 1;
        };
        if filter.asset_id.is_some() {
            condition(&mut sql, " AND asset_id = ?");
        }
        if filter.min_lint_level.is_some() {
            condition(&mut sql, " AND lint_level >= ?");
        }
        if filter.finding.is_some() {
            // The JSON array as written by serde_json (no spaces); the code is bound, and the
            // caller checked it is one of the linter's.
            condition(&mut sql, " AND findings LIKE ? ESCAPE '\\'");
        }
        if filter.review_status.is_some() {
            condition(&mut sql, " AND review_status = ?");
        }
        if filter.text_contains.is_some() {
            condition(&mut sql, " AND LOWER(text) LIKE ? ESCAPE '\\'");
        }
        if starting_after.is_some() {
            condition(&mut sql, " AND id < ?");
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${next}"));
        let mut query = sqlx::query(&sql).bind(account_id.as_str());
        if let Some(asset_id) = filter.asset_id {
            query = query.bind(asset_id);
        }
        if let Some(level) = filter.min_lint_level {
            query = query.bind(level);
        }
        if let Some(code) = filter.finding {
            let code = code.replace('_', "\\_");
            query = query.bind(format!("%\"code\":\"{code}\"%"));
        }
        if let Some(status) = filter.review_status {
            query = query.bind(status.as_str());
        }
        if let Some(needle) = filter.text_contains {
            let needle = needle
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            query = query.bind(format!("%{needle}%"));
        }
        if let Some(cursor) = starting_after {
            query = query.bind(cursor.as_str());
        }
        let rows = query.bind(limit + 1).fetch_all(self.pool()).await?;
        let has_more = rows.len() as i64 > limit;
        let descriptions = rows
            .iter()
            .take(limit as usize)
            .map(from_row)
            .collect::<Result<_>>()?;
        Ok(Page {
            descriptions,
            has_more,
        })
    }

    /// A person's edit, the previous versions kept: `change` gets the current description and
    /// gives its revision (the describe layer knows which output is primary and checks the new
    /// text); it runs inside the transaction, so concurrent edits each see the one before.
    pub async fn edit_description(
        &self,
        account_id: &AccountId,
        id: &DescriptionId,
        provenance: Option<Provenance>,
        change: impl FnOnce(&Description) -> Result<Revision>,
    ) -> Result<Description> {
        let mut tx = self.begin_write().await?;
        let current = select_description(&mut *tx, account_id, id).await?;
        // Editing the model's words keeps it `ai_edited`; a person may say they rewrote it.
        let provenance = provenance.unwrap_or(match current.provenance {
            Provenance::Human => Provenance::Human,
            Provenance::Ai | Provenance::AiEdited => Provenance::AiEdited,
        });
        if provenance == Provenance::Ai {
            return Err(StoreError::Invalid(
                "an edit's provenance is `human` or `ai_edited`".into(),
            ));
        }
        let version = current.version;
        let revision = change(&current)?;
        check_string("text", &revision.text, Shape::Text)?;
        let outputs = Value::Object(revision.outputs).to_string();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO description_versions (description_id, account_id, version, text, provenance, created_at, outputs) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(account_id.as_str())
        .bind(version + 1)
        .bind(&revision.text)
        .bind(provenance.as_str())
        .bind(now)
        .bind(&outputs)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE descriptions SET text = $1, provenance = $2, version = $3, updated_at = $4, outputs = $5, findings = $6, lint_level = $7, review_status = 'unreviewed', reviewed_by = NULL, reviewed_at = NULL WHERE id = $8 AND account_id = $9",
        )
        .bind(&revision.text)
        .bind(provenance.as_str())
        .bind(version + 1)
        .bind(now)
        .bind(&outputs)
        .bind(revision.findings.to_string())
        .bind(revision.lint_level)
        .bind(id.as_str())
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.description(account_id, id).await
    }

    /// Every version of a description, oldest first.
    pub async fn description_versions(
        &self,
        account_id: &AccountId,
        id: &DescriptionId,
    ) -> Result<Vec<Version>> {
        let rows = sqlx::query(
            "SELECT version, text, provenance, created_at, outputs FROM description_versions WHERE description_id = $1 AND account_id = $2 ORDER BY version",
        )
        .bind(id.as_str())
        .bind(account_id.as_str())
        .fetch_all(self.pool())
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound("description"));
        }
        rows.iter().map(version_from_row).collect()
    }

    /// Deletes a description, its versions, and the stored Idempotency-Key answers that carry
    /// it (a replay with such a key runs again, as a new request). Its usage rows stay: they are
    /// billing records.
    pub async fn delete_description(
        &self,
        account_id: &AccountId,
        id: &DescriptionId,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM description_versions WHERE description_id = $1 AND account_id = $2",
        )
        .bind(id.as_str())
        .bind(account_id.as_str())
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM descriptions WHERE id = $1 AND account_id = $2")
            .bind(id.as_str())
            .bind(account_id.as_str())
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound("description"));
        }
        // Ids are `desc_` and hex, so the pattern matches this id only (`_` matches itself too).
        sqlx::query("DELETE FROM idempotency_keys WHERE account_id = $1 AND response LIKE $2")
            .bind(account_id.as_str())
            .bind(format!("%\"{id}\"%"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// The versions of several descriptions of one account (for exports), oldest first.
    pub async fn versions_of(
        &self,
        account_id: &AccountId,
        ids: &[DescriptionId],
    ) -> Result<std::collections::HashMap<String, Vec<Version>>> {
        let mut by_description: std::collections::HashMap<String, Vec<Version>> =
            std::collections::HashMap::new();
        if ids.is_empty() {
            return Ok(by_description);
        }
        let placeholders = (0..ids.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT description_id, version, text, provenance, created_at, outputs FROM description_versions WHERE account_id = $1 AND description_id IN ({placeholders}) ORDER BY description_id, version"
        );
        let mut query = sqlx::query(&sql).bind(account_id.as_str());
        for id in ids {
            query = query.bind(id.as_str());
        }
        for row in query.fetch_all(self.pool()).await? {
            let id: String = row.try_get("description_id")?;
            by_description
                .entry(id)
                .or_default()
                .push(version_from_row(&row)?);
        }
        Ok(by_description)
    }
}

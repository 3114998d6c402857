//! The stored descriptions of an account: list, retrieve (billed as a retrieval), edit with
//! versions kept, delete, and the version history.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::describe::lint::{self, Severity};
use crate::describe::review;
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, RequestId, cursor, known, page_limit};
use crate::http::v1::resources::{Description, DescriptionPage, VersionList};
use crate::store::descriptions::{ListFilter, Provenance};
use crate::store::ids::DescriptionId;
use crate::store::keys::Scope;
use crate::store::review::ReviewStatus;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Descriptions per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last description of the previous page.
    #[param(example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
    /// Only the descriptions sent with this `asset_id`.
    #[param(example = "sku-1042")]
    asset_id: Option<String>,
    /// Only descriptions with a linter finding of at least this severity (`error` shows those
    /// a reviewer must fix first).
    min_severity: Option<Severity>,
    /// Only descriptions with a finding of this code (the README lists them).
    #[param(example = "redundant_opening")]
    finding: Option<String>,
    /// Only descriptions in this review state.
    review_status: Option<ReviewStatus>,
}

error_set!(
    pub ListErrors: ApiKeyLayer {
        BadRequest => "Invalid query: an unknown parameter, `limit` outside 1 to 100, a `starting_after` that is not a description id, or an unknown `min_severity`, `finding` or `review_status`.",
    }
);

/// List stored descriptions
///
/// The account's descriptions, newest first, a page at a time: pass the last `id` as
/// `starting_after` for the next page while `has_more` is true. Not billed. Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/descriptions",
    operation_id = "listDescriptions",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of descriptions, newest first.", body = DescriptionPage),
        ListErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<Json<DescriptionPage>, ApiError> {
    caller.require(Scope::Read)?;
    let ApiQuery(query) = query?;
    let limit = page_limit(query.limit)?;
    let starting_after = cursor(query.starting_after, DescriptionId::PREFIX)?
        .map(|id| known(&id, DescriptionId::parse, "description"))
        .transpose()?;
    if let Some(code) = query.finding.as_deref()
        && !lint::RULES.iter().any(|(known, _, _)| *known == code)
    {
        return Err(ApiError::bad_request(
            "invalid_finding",
            format!(
                "`finding` must be one of {}",
                lint::RULES
                    .iter()
                    .map(|(code, _, _)| *code)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let filter = ListFilter {
        asset_id: query.asset_id.as_deref(),
        min_lint_level: query.min_severity.map(|s| review::level(Some(s))),
        finding: query.finding.as_deref(),
        review_status: query.review_status,
        text_contains: None,
    };
    let page = state
        .store
        .list_descriptions(caller.account_id(), filter, starting_after.as_ref(), limit)
        .await?;
    Ok(Json(DescriptionPage::new(page.descriptions, page.has_more)))
}

/// The path of one description.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DescriptionPath {
    /// The description's id.
    #[param(example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    id: String,
}

impl DescriptionPath {
    /// Asked after the scope check: a key without the scope learns nothing from the id's form.
    fn id(&self) -> Result<DescriptionId, ApiError> {
        known(&self.id, DescriptionId::parse, "description")
    }
}

error_set!(
    pub OneErrors: ApiKeyLayer {
        BadRequest => "The `id` is not UTF-8 once percent-decoded (`invalid_path`).",
        NotFound => "No such description in this account.",
    }
);

/// Retrieve a description
///
/// One stored description with its current text. Each retrieval is billed (the `retrieved`
/// meter of `GET /v1/usage`). Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/descriptions/{id}",
    operation_id = "retrieveDescription",
    params(DescriptionPath),
    responses(
        (status = 200, description = "The description.", body = Description),
        OneErrors,
    ),
)]
pub async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<DescriptionPath>,
    RequestId(request_id): RequestId,
) -> Result<Json<Description>, ApiError> {
    caller.require(Scope::Read)?;
    let description = state
        .store
        .retrieve_description(caller.account_id(), &path.id()?, &request_id)
        .await?;
    Ok(Json(description.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The new text of the primary output (the one `text` shows), 1 to 10000 characters.
    pub text: Option<String>,
    /// New values of the outputs named (added when the description has none of that kind):
    /// text of 1 to 10000 characters; `keywords` as a list of strings or comma-separated text.
    #[schema(value_type = Option<Object>, example = json!({"seo_title": "Handmade stoneware mug, 350 ml"}))]
    pub outputs: Option<serde_json::Map<String, serde_json::Value>>,
    /// `ai_edited` (default for model text) or `human` (a rewrite).
    pub provenance: Option<Provenance>,
    /// Approve or reject (or send back to `unreviewed`), recorded with this key as the reviewer
    /// and the time. With a text change in the same request, the edit is saved first and the
    /// decision applies to the new text.
    pub review_status: Option<ReviewStatus>,
}

error_set!(
    pub EditErrors: ApiKeyLayer {
        BadRequest => "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, neither `text` nor `outputs`, a text that is empty or longer than 10000 characters, an unknown output, provenance `ai`, or an `id` that is not UTF-8 once percent-decoded (`invalid_path`).",
        NotFound => "No such description in this account.",
        Conflict => "Another edit of this description was saved at the same moment (code `conflict`); retry.",
    }
);

/// Edit a description
///
/// A person's edit: `text` replaces the primary output, `outputs` the outputs it names; the
/// previous outputs are kept as a version (`GET /v1/descriptions/{id}/versions`); `version` goes
/// up by one and `provenance` becomes `ai_edited` (model text edited) unless `human` is sent.
/// Scope: `manage`.
#[utoipa::path(
    patch,
    path = "/v1/descriptions/{id}",
    operation_id = "editDescription",
    params(DescriptionPath),
    request_body(content = EditRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The description with its new text.", body = Description),
        EditErrors,
    ),
)]
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<DescriptionPath>,
    body: Result<ApiJson<EditRequest>, ApiError>,
) -> Result<Json<Description>, ApiError> {
    caller.require(Scope::Manage)?;
    let ApiJson(edit) = body?;
    let changes_text = edit.text.is_some() || edit.outputs.as_ref().is_some_and(|o| !o.is_empty());
    if !changes_text && edit.review_status.is_none() {
        return Err(ApiError::bad_request(
            "invalid_text",
            "send `text`, `outputs` with at least one output, or `review_status`",
        ));
    }
    if let Some(text) = &edit.text {
        let chars = text.trim().chars().count();
        if chars == 0 || chars > crate::describe::outputs::MAX_EDIT_CHARS {
            return Err(ApiError::bad_request(
                "invalid_text",
                "`text` must be 1 to 10000 characters",
            ));
        }
    }
    let id = path.id()?;
    if changes_text {
        state
            .store
            .edit_description(caller.account_id(), &id, edit.provenance, |current| {
                review::revise(current, edit.text.as_deref(), edit.outputs.as_ref())
            })
            .await?;
    }
    if let Some(status) = edit.review_status {
        let outcome = state
            .store
            .set_review(
                caller.account_id(),
                std::slice::from_ref(&id),
                status,
                caller.key_id(),
                crate::store::review::ReviewGuard::default(),
            )
            .await?;
        if !outcome.not_found.is_empty() {
            return Err(crate::store::StoreError::NotFound("description").into());
        }
    }
    let description = state.store.description(caller.account_id(), &id).await?;
    Ok(Json(description.into()))
}

/// The answer to a deletion.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedDescription {
    /// Always `description`.
    #[schema(value_type = String, example = "description")]
    pub object: &'static str,
    #[schema(example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

/// Delete a description
///
/// Deletes the description and its versions at once, and the stored `Idempotency-Key` answers
/// that carry it (a repeat with such a key runs again). Its usage rows stay: they are billing
/// records and hold no text. Scope: `manage`.
#[utoipa::path(
    delete,
    path = "/v1/descriptions/{id}",
    operation_id = "deleteDescription",
    params(DescriptionPath),
    responses(
        (status = 200, description = "Deleted.", body = DeletedDescription),
        OneErrors,
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<DescriptionPath>,
) -> Result<Json<DeletedDescription>, ApiError> {
    caller.require(Scope::Manage)?;
    let id = path.id()?;
    state
        .store
        .delete_description(caller.account_id(), &id)
        .await?;
    Ok(Json(DeletedDescription {
        object: "description",
        id: id.into(),
        deleted: true,
    }))
}

/// A description's versions
///
/// Every text the description has had, oldest first: version 1 is the model's. Not billed.
/// Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/descriptions/{id}/versions",
    operation_id = "listDescriptionVersions",
    params(DescriptionPath),
    responses(
        (status = 200, description = "The versions, oldest first (`has_more` is always false).", body = VersionList),
        OneErrors,
    ),
)]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<DescriptionPath>,
) -> Result<Json<VersionList>, ApiError> {
    caller.require(Scope::Read)?;
    let versions = state
        .store
        .description_versions(caller.account_id(), &path.id()?)
        .await?;
    Ok(Json(VersionList::new(versions, false)))
}

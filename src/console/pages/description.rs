//! One description under review: its outputs (editable), the linter's findings, its versions;
//! save, approve or reject (an edit sends it back to unreviewed, so "save and approve" edits then
//! approves); delete.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value};

use super::{NoticeQuery, when};
use crate::console::ConsoleState;
use crate::console::capability::{Capability, allows};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::forms::MemberForm;
use crate::console::render::{self, Chrome};
use crate::console::session::Member;
use crate::describe::review;
use crate::store::ids::DescriptionId;
use crate::store::review::{ReviewGuard, ReviewStatus};

pub struct OutputField {
    key: String,
    label: &'static str,
    text: String,
    rows: usize,
}

pub struct FindingView {
    severity: String,
    output: String,
    code: String,
    message: String,
}

pub struct VersionView {
    version: i64,
    provenance: &'static str,
    created: String,
    text: String,
}

#[derive(Template)]
#[template(path = "description.html")]
struct DescriptionPage {
    chrome: Chrome,
    csrf: String,
    id: String,
    status: &'static str,
    reviewed: Option<String>,
    model: String,
    language: String,
    image: String,
    asset_id: String,
    created: String,
    version: i64,
    provenance: &'static str,
    findings: Vec<FindingView>,
    outputs: Vec<OutputField>,
    versions: Vec<VersionView>,
    can_edit: bool,
    can_delete: bool,
}

fn label(key: &str) -> &'static str {
    match key {
        "alt_text" => "Alt text",
        "description" => "Product description",
        "seo_title" => "SEO title",
        "keywords" => "Keywords (comma-separated)",
        _ => "Output",
    }
}

fn parse_id(id: &str) -> ConsoleResult<DescriptionId> {
    DescriptionId::parse(id).ok_or(ConsoleError::NotFound)
}

pub async fn page(
    State(state): State<ConsoleState>,
    member: Member,
    Path(id): Path<String>,
    Query(query): Query<NoticeQuery>,
) -> ConsoleResult<Response> {
    let id = parse_id(&id)?;
    // A console read is not a billable retrieval (the README's billing rules).
    let description = state.store.description(&member.account.id, &id).await?;
    let versions = state
        .store
        .description_versions(&member.account.id, &id)
        .await?;
    let outputs = match &description.outputs {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| OutputField {
                key: key.clone(),
                label: label(key),
                text: match value {
                    Value::Array(words) => words
                        .iter()
                        .map(crate::describe::outputs::as_text)
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => crate::describe::outputs::as_text(other),
                },
                rows: if key == "description" { 8 } else { 3 },
            })
            .collect(),
        _ => Vec::new(),
    };
    let findings = match &description.findings {
        Some(Value::Array(findings)) => findings
            .iter()
            .map(|f| FindingView {
                severity: f["severity"].as_str().unwrap_or_default().to_string(),
                output: f["output"].as_str().unwrap_or_default().to_string(),
                code: f["code"].as_str().unwrap_or_default().to_string(),
                message: f["message"].as_str().unwrap_or_default().to_string(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let image = &description.image;
    Ok(render::page(&DescriptionPage {
        chrome: Chrome::member("Description", &member, "/console/library")
            .with_notice(query.notice.as_deref()),
        csrf: member.session.csrf_token.clone(),
        id: description.id.to_string(),
        status: description.review.status.as_str(),
        reviewed: description.review.at.map(|at| {
            format!(
                "{} {}",
                description.review.by.clone().unwrap_or_default(),
                when(at)
            )
        }),
        model: description.model.clone(),
        language: description.language.clone(),
        image: format!(
            "{} × {} {}, {} bytes (not kept)",
            image.width, image.height, image.format, image.byte_size
        ),
        asset_id: description.asset_id.clone().unwrap_or_default(),
        created: when(description.created_at),
        version: description.version,
        provenance: description.provenance.as_str(),
        findings,
        outputs,
        versions: versions
            .iter()
            .rev()
            .map(|v| VersionView {
                version: v.version,
                provenance: v.provenance.as_str(),
                created: when(v.created_at),
                text: v.text.clone(),
            })
            .collect(),
        can_edit: allows(member.role, Capability::Describe) && member.may_process().is_ok(),
        can_delete: allows(member.role, Capability::Administer),
    }))
}

/// The outputs the form changed, in the shape `review::revise` takes.
fn changed_outputs(current: &Value, form: &[(String, String)]) -> Map<String, Value> {
    let mut changes = Map::new();
    let Value::Object(current) = current else {
        return changes;
    };
    for (key, value) in form {
        let Some(output) = key.strip_prefix("out.") else {
            continue;
        };
        let Some(before) = current.get(output) else {
            continue;
        };
        let after = match before {
            Value::Array(_) => Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .map(|w| Value::String(w.to_string()))
                    .collect(),
            ),
            _ => Value::String(value.replace("\r\n", "\n").trim().to_string()),
        };
        if &after != before {
            changes.insert(output.to_string(), after);
        }
    }
    changes
}

pub async fn save(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    MemberForm { member, form }: MemberForm<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    member.may_process()?;
    let id = parse_id(&id)?;
    let action = form
        .iter()
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let current = state.store.description(&member.account.id, &id).await?;
    let changes = changed_outputs(&current.outputs, &form);
    if !changes.is_empty() {
        state
            .store
            .edit_description(&member.account.id, &id, None, |current| {
                review::revise(current, None, Some(&changes))
            })
            .await?;
    }
    let (status, notice) = match action.as_str() {
        "save_approve" | "approve" => (Some(ReviewStatus::Approved), "approved"),
        "reject" => (Some(ReviewStatus::Rejected), "rejected"),
        _ => (None, "saved"),
    };
    if let Some(status) = status {
        state
            .store
            .set_review(
                &member.account.id,
                std::slice::from_ref(&id),
                status,
                member.reviewer(),
                ReviewGuard::default(),
            )
            .await?;
    }
    Ok(Redirect::to(&format!("/console/descriptions/{id}?notice={notice}")).into_response())
}

pub async fn delete(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    let id = parse_id(&id)?;
    state
        .store
        .delete_description(&member.account.id, &id)
        .await?;
    Ok(Redirect::to("/console/library?notice=deleted").into_response())
}

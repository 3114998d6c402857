//! The library: the account's descriptions newest first, searched by text, filtered by review
//! status and asset id, paged by cursor; and bulk approve or reject (approval skips texts with
//! error-level findings unless the reviewer says otherwise). Reading here is not billed.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::when;
use crate::console::ConsoleState;
use crate::console::capability::{Capability, allows};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::forms::MemberForm;
use crate::console::render::{self, Chrome};
use crate::console::session::Member;
use crate::store::descriptions::ListFilter;
use crate::store::ids::DescriptionId;
use crate::store::review::{ReviewGuard, ReviewStatus};

const PAGE_SIZE: i64 = 50;
/// Characters of the text shown in a row.
const SHORT_CHARS: usize = 120;

#[derive(Deserialize, Default)]
pub struct LibraryQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    asset_id: String,
    after: Option<String>,
    notice: Option<String>,
}

pub struct Row {
    id: String,
    short: String,
    status: &'static str,
    checks: String,
    asset_id: String,
    created: String,
}

#[derive(Template)]
#[template(path = "library.html")]
struct LibraryPage {
    chrome: Chrome,
    csrf: String,
    q: String,
    asset_id: String,
    /// Each status and whether it is the one filtered by.
    statuses: Vec<(&'static str, bool)>,
    filtered: bool,
    can_describe: bool,
    rows: Vec<Row>,
    next: Option<String>,
}

fn checks(findings: Option<&serde_json::Value>) -> String {
    let Some(serde_json::Value::Array(findings)) = findings else {
        return "not checked".into();
    };
    let count = |severity: &str| {
        findings
            .iter()
            .filter(|f| f["severity"] == severity)
            .count()
    };
    match (count("error"), count("warning")) {
        (0, 0) => "fine".into(),
        (0, w) => format!("{w} warning{}", if w == 1 { "" } else { "s" }),
        (e, _) => format!("{e} error{}", if e == 1 { "" } else { "s" }),
    }
}

fn short(text: &str) -> String {
    if text.chars().count() <= SHORT_CHARS {
        return text.to_string();
    }
    let cut: String = text.chars().take(SHORT_CHARS).collect();
    format!("{}…", cut.trim_end())
}

pub async fn page(
    State(state): State<ConsoleState>,
    member: Member,
    Query(query): Query<LibraryQuery>,
) -> ConsoleResult<Response> {
    let status = ReviewStatus::parse(&query.status);
    let q = query.q.trim();
    let asset_id = query.asset_id.trim();
    let filter = ListFilter {
        asset_id: (!asset_id.is_empty()).then_some(asset_id),
        review_status: status,
        text_contains: (!q.is_empty()).then_some(q),
        ..ListFilter::default()
    };
    let after = query.after.as_deref().and_then(DescriptionId::parse);
    let page = state
        .store
        .list_descriptions(&member.account.id, filter, after.as_ref(), PAGE_SIZE)
        .await?;
    let next = (page.has_more)
        .then(|| page.descriptions.last())
        .flatten()
        .map(|last| {
            let mut url = format!("/console/library?after={}", last.id);
            for (name, value) in [
                ("q", q),
                ("status", query.status.as_str()),
                ("asset_id", asset_id),
            ] {
                if !value.is_empty() {
                    url.push_str(&format!("&{name}={}", percent(value)));
                }
            }
            url
        });
    let rows = page
        .descriptions
        .iter()
        .map(|d| Row {
            id: d.id.to_string(),
            short: short(&d.text),
            status: d.review.status.as_str(),
            checks: checks(d.findings.as_ref()),
            asset_id: d.asset_id.clone().unwrap_or_default(),
            created: when(d.created_at),
        })
        .collect();
    Ok(render::page(&LibraryPage {
        chrome: Chrome::member("Library", &member, "/console/library")
            .with_notice(query.notice.as_deref()),
        csrf: member.session.csrf_token.clone(),
        q: q.to_string(),
        asset_id: asset_id.to_string(),
        statuses: ReviewStatus::ALL
            .iter()
            .map(|s| (s.as_str(), Some(*s) == status))
            .collect(),
        filtered: !q.is_empty() || status.is_some() || !asset_id.is_empty(),
        can_describe: allows(member.role, Capability::Describe),
        rows,
        next,
    }))
}

/// Query-string encoding for the values a filter may hold.
fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Approve or reject the selected descriptions (form fields: `action`, repeated `id`,
/// `include_errors`).
pub async fn bulk(
    State(state): State<ConsoleState>,
    MemberForm { member, form }: MemberForm<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    member.may_process()?;
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let status = match field("action") {
        Some("approve") => ReviewStatus::Approved,
        Some("reject") => ReviewStatus::Rejected,
        _ => return Err(ConsoleError::BadRequest("choose Approve or Reject".into())),
    };
    let ids: Vec<DescriptionId> = form
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| DescriptionId::parse(v))
        .collect();
    if ids.is_empty() {
        return Err(ConsoleError::BadRequest(
            "select at least one description".into(),
        ));
    }
    if ids.len() > PAGE_SIZE as usize {
        return Err(ConsoleError::BadRequest(format!(
            "select at most {PAGE_SIZE} descriptions at once"
        )));
    }
    let guard = ReviewGuard {
        skip_lint_errors: field("include_errors") != Some("yes"),
    };
    let outcome = state
        .store
        .set_review(&member.account.id, &ids, status, member.reviewer(), guard)
        .await?;
    let notice = if outcome.skipped.is_empty() {
        "reviewed"
    } else {
        "reviewed-skipped"
    };
    Ok(Redirect::to(&format!("/console/library?notice={notice}")).into_response())
}

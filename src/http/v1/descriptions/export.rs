//! `GET /v1/descriptions/export`: every description of the account, newest first, streamed as
//! JSON Lines or CSV a page at a time. Not billed.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::describe::outputs;
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::ApiQuery;
use crate::http::v1::resources::Description;
use crate::http::v1::{EXPORT_PAGE, paged};
use crate::store::audit::{AuditEvent, action};
use crate::store::descriptions::{self, ListFilter};
use crate::store::ids::DescriptionId;
use crate::store::keys::Scope;

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    #[default]
    Jsonl,
    Csv,
}

impl ExportFormat {
    fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            ExportFormat::Jsonl => "descriptions.jsonl",
            ExportFormat::Csv => "descriptions.csv",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `jsonl` (default): one description per line, as `GET /v1/descriptions/{id}` answers it;
    /// `csv`: a header row, then one row per description.
    format: Option<ExportFormat>,
    /// Only the descriptions sent with this `asset_id`.
    #[param(example = "sku-1042")]
    asset_id: Option<String>,
}

const CSV_HEADER: [&str; 25] = [
    "id",
    "asset_id",
    "text",
    "provenance",
    "version",
    "detail",
    "model",
    "image_width",
    "image_height",
    "image_format",
    "image_byte_size",
    "image_sha256",
    "generated_tokens",
    "truncated",
    "created_at",
    "updated_at",
    "metadata",
    // Product copy, after the columns of old exports so that their positions hold.
    "language",
    "alt_text",
    "description",
    "seo_title",
    "keywords",
    "tone",
    "context",
    // The linter's finding codes, worst first, space-separated (the JSONL has the messages).
    "findings",
];

fn csv_rows(descriptions: &[descriptions::Description], header: bool) -> Result<Vec<u8>, String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| e.to_string();
    if header {
        writer.write_record(CSV_HEADER).map_err(failed)?;
    }
    for d in descriptions {
        // Keywords as one cell, joined with `, ` as the `text` of a keywords-only description.
        let output = |name: &str| {
            d.outputs
                .get(name)
                .map(outputs::as_text)
                .unwrap_or_default()
        };
        writer
            .write_record([
                d.id.to_string(),
                d.asset_id.clone().unwrap_or_default(),
                d.text.clone(),
                d.provenance.as_str().to_string(),
                d.version.to_string(),
                d.detail.clone().unwrap_or_default(),
                d.model.clone(),
                d.image.width.to_string(),
                d.image.height.to_string(),
                d.image.format.clone(),
                d.image.byte_size.to_string(),
                d.image.sha256.clone(),
                d.generated_tokens.to_string(),
                d.truncated.to_string(),
                d.created_at.to_string(),
                d.updated_at.to_string(),
                d.metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                d.language.clone(),
                output("alt_text"),
                output("description"),
                output("seo_title"),
                output("keywords"),
                d.tone.clone().unwrap_or_default(),
                d.context
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                finding_codes(d.findings.as_ref()),
            ])
            .map_err(failed)?;
    }
    writer.into_inner().map_err(|e| e.error().to_string())
}

fn finding_codes(findings: Option<&serde_json::Value>) -> String {
    findings
        .and_then(|f| f.as_array())
        .into_iter()
        .flatten()
        .filter_map(|f| f["code"].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn jsonl_rows(descriptions: Vec<descriptions::Description>) -> Vec<u8> {
    let mut out = Vec::new();
    for description in descriptions {
        serde_json::to_writer(&mut out, &Description::from(description))
            .expect("serialisable; this is a bug");
        out.push(b'\n');
    }
    out
}

error_set!(
    pub ExportErrors: ApiKeyLayer {
        BadRequest => "Invalid query: an unknown parameter or `format`.",
    }
);

/// Export every description
///
/// Every description of the account, newest first, streamed as JSON Lines or CSV
/// (`Content-Disposition: attachment`). Memory stays bounded whatever the account's size. A
/// database failure after the answer started cuts the stream short (no final chunk), so an
/// incomplete file is detectable. Recorded in the audit log (`export.downloaded`). Not billed.
/// Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/descriptions/export",
    operation_id = "exportDescriptions",
    params(ExportQuery),
    responses(
        (status = 200, description = "The descriptions, streamed.", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        ), headers(
            ("content-disposition" = String, description = "`attachment; filename=\"descriptions.jsonl\"` (or `.csv`)."),
        )),
        ExportErrors,
    ),
)]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<ApiQuery<ExportQuery>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let ApiQuery(query) = query?;
    let format = query.format.unwrap_or_default();
    let (store, account_id) = (state.store.clone(), caller.account_id().clone());
    let asset_id = query.asset_id;
    let format_name = match format {
        ExportFormat::Jsonl => "jsonl",
        ExportFormat::Csv => "csv",
    };
    let event = AuditEvent::new(
        Some(&account_id),
        &caller.actor(),
        action::EXPORT_DOWNLOADED,
    )
    .details(serde_json::json!({ "export": "descriptions", "format": format_name }));
    store.record_audit(&event).await?;
    let pages = paged(move |cursor: Option<DescriptionId>| {
        let (store, account_id, asset_id) = (store.clone(), account_id.clone(), asset_id.clone());
        async move {
            let first = cursor.is_none();
            let page = store
                .list_descriptions(
                    &account_id,
                    ListFilter {
                        asset_id: asset_id.as_deref(),
                        ..ListFilter::default()
                    },
                    cursor.as_ref(),
                    EXPORT_PAGE,
                )
                .await
                .map_err(|e| e.to_string())?;
            let next = page
                .has_more
                .then(|| page.descriptions.last().map(|d| d.id.clone()))
                .flatten();
            let chunk = match format {
                ExportFormat::Jsonl => jsonl_rows(page.descriptions),
                ExportFormat::Csv => csv_rows(&page.descriptions, first)?,
            };
            Ok((chunk, next))
        }
    });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", format.file_name()),
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}

//! Describing in the browser: one or many images uploaded in a form go through the describe
//! service exactly as `POST /v1/descriptions` does (same validation, model path, stored
//! description and usage row: billed as created). The bytes live in this request only.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::FieldErrors;
use crate::console::ConsoleState;
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::forms::MemberMultipart;
use crate::console::render::{self, Chrome};
use crate::console::session::Member;
use crate::describe::service::{Answer, Call, Rendered};
use crate::describe::{DescribeError, DescribeOptions, DescribeRequest, ImageSource};
use crate::engine::EngineError;

/// Images one form may carry (each is a separate description).
const MAX_IMAGES: usize = 20;

const OUTPUTS: &[(&str, &str)] = &[
    ("alt_text", "Alt text"),
    ("description", "Product description"),
    ("seo_title", "SEO title"),
    ("keywords", "Keywords"),
];

#[derive(Template)]
#[template(path = "describe.html")]
struct DescribePage {
    chrome: Chrome,
    csrf: String,
    errors: FieldErrors,
    models: Vec<String>,
    outputs: &'static [(&'static str, &'static str)],
}

fn describe_page(state: &ConsoleState, member: &Member, errors: FieldErrors) -> DescribePage {
    DescribePage {
        chrome: Chrome::member("Describe", member, "/console/describe"),
        csrf: member.session.csrf_token.clone(),
        errors,
        models: state
            .describe
            .models()
            .iter()
            .map(|m| m.name.clone())
            .collect(),
        outputs: OUTPUTS,
    }
}

pub async fn page(State(state): State<ConsoleState>, member: Member) -> Response {
    render::page(&describe_page(&state, &member, FieldErrors::default()))
}

/// What a failure means for the person at the form.
fn describe_error(error: DescribeError) -> ConsoleError {
    match error {
        DescribeError::Invalid(invalid) => ConsoleError::BadRequest(invalid.message),
        DescribeError::ImageTooLarge { .. } => ConsoleError::BadRequest(error.to_string()),
        DescribeError::Engine(
            EngineError::Overloaded { retry_after }
            | EngineError::Draining { retry_after }
            | EngineError::QueueTimeout { retry_after },
        ) => ConsoleError::Busy(retry_after),
        DescribeError::Engine(EngineError::Image(image)) => {
            ConsoleError::BadRequest(format!("this file is not an image we can read: {image}"))
        }
        DescribeError::Store(store) => ConsoleError::Store(store),
        other => ConsoleError::Internal(other.to_string()),
    }
}

pub async fn upload(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    MemberMultipart {
        member,
        mut multipart,
    }: MemberMultipart,
) -> ConsoleResult<Response> {
    member.may_process()?;
    let mut options = DescribeOptions::default();
    let mut outputs = Vec::new();
    let mut images = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ConsoleError::BadRequest(e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "images" {
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
            if !bytes.is_empty() {
                images.push(bytes);
            }
            if images.len() > MAX_IMAGES {
                return Err(ConsoleError::BadRequest(format!(
                    "describe at most {MAX_IMAGES} images at once; for more, use a bulk job"
                )));
            }
            continue;
        }
        let value = field
            .text()
            .await
            .map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
        let value = value.trim().to_string();
        match name.as_str() {
            "model" if !value.is_empty() => options.model = Some(value),
            "language" if !value.is_empty() => options.language = Some(value),
            "asset_id" if !value.is_empty() => options.asset_id = Some(value),
            "outputs" => outputs.push(value),
            _ => {}
        }
    }
    if images.is_empty() {
        let mut errors = FieldErrors::default();
        errors.add("images", "Choose at least one image.");
        return Ok(render::with_status(
            StatusCode::BAD_REQUEST,
            &describe_page(&state, &member, errors),
        ));
    }
    if images.len() > 1 {
        // An asset id names one image.
        options.asset_id = None;
    }
    if !outputs.is_empty() {
        options.outputs = Some(outputs);
    }
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("console")
        .to_string();
    let mut made = Vec::new();
    for bytes in images {
        let request = DescribeRequest {
            source: ImageSource::Bytes(bytes),
            options: options.clone(),
        };
        let valid = state
            .describe
            .validate(vec![request])
            .map_err(|invalid| ConsoleError::BadRequest(invalid.message))?
            .pop()
            .expect("one request in, one out");
        let call = Call {
            account_id: &member.account.id,
            request_id: &request_id,
            idempotency_key: None,
            route: "/console/describe",
        };
        let answer = state
            .describe
            .describe_one(call, valid, |description| Rendered {
                status: 201,
                body: description.id.to_string(),
            })
            .await
            .map_err(describe_error)?;
        if let Answer::Done { rendered, .. } = answer {
            made.push(rendered.body);
        }
    }
    let to = match made.as_slice() {
        [one] => format!("/console/descriptions/{one}?notice=described"),
        _ => "/console/library?notice=described".to_string(),
    };
    Ok(Redirect::to(&to).into_response())
}

//! The console's pages, one file per area; what they share: field errors for forms that are
//! shown again, and the plain message page.

pub mod auth;
pub mod describe;
pub mod description;
pub mod keys;
pub mod library;
pub mod members;
pub mod mfa;
pub mod security;

use askama::Template;
use axum::http::StatusCode;
use axum::response::Response;

use super::render::{self, Chrome};

/// One field's problem, in words; `field` is the input's id, so the summary links to it.
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// A form's problems, listed in a summary at the top (focused by the script, announced as an
/// alert) and beside each field (`aria-invalid`, `aria-describedby`).
#[derive(Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push(FieldError {
            field,
            message: message.into(),
        });
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }
}

/// `?notice=` on a page a redirect led to: a code from `render::NOTICES`, never shown as given.
#[derive(serde::Deserialize, Default)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

pub struct Link {
    pub href: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub paragraphs: Vec<String>,
    pub link: Option<Link>,
}

/// A page of a title, some paragraphs and at most one link onward.
pub fn message(
    status: StatusCode,
    chrome: Chrome,
    paragraphs: &[&str],
    link: Option<(&str, &str)>,
) -> Response {
    render::with_status(
        status,
        &MessagePage {
            chrome,
            paragraphs: paragraphs.iter().map(|p| p.to_string()).collect(),
            link: link.map(|(href, label)| Link {
                href: href.to_string(),
                label: label.to_string(),
            }),
        },
    )
}

/// Milliseconds since the epoch as `2026-12-07 19:05 UTC`.
pub fn when(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let (hour, minute) = (secs.rem_euclid(86_400) / 3600, secs.rem_euclid(3600) / 60);
    format!(
        "{} {hour:02}:{minute:02} UTC",
        crate::store::usage::format_day(days)
    )
}

//! The console's errors and the page each becomes: the status a browser (and a test) can read,
//! and words that tell a person what to do next. Store errors map as in the API.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::render;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No live session: to the login page.
    #[error("log in to continue")]
    LoggedOut,
    /// Somewhere the session must go first (the second factor, its enrolment).
    #[error("continue at {0}")]
    Redirect(&'static str),
    /// Logged in, but this needs a role the member does not have.
    #[error("your role in this account does not allow this; ask an owner or admin")]
    Forbidden,
    /// A state-changing request without this session's form token, or from another site.
    #[error("this form expired or came from another site: reload the page and try again")]
    Csrf,
    /// Sensitive: the password (or a code) must be entered again first.
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("too many attempts: try again in {} seconds", .0.as_secs().max(1))]
    Throttled(Duration),
    /// Processing is restricted: describing and editing are refused until it is lifted.
    #[error(
        "processing is restricted for this account: lift the restriction in Privacy to describe or edit"
    )]
    Restricted,
    #[error("the service is busy: try again in a few seconds")]
    Busy(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::LoggedOut | ConsoleError::Redirect(_) => StatusCode::SEE_OTHER,
            ConsoleError::Forbidden | ConsoleError::Csrf | ConsoleError::Restricted => {
                StatusCode::FORBIDDEN
            }
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Store(error) => match error {
                StoreError::NotFound(_) => StatusCode::NOT_FOUND,
                StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
                StoreError::Conflict(_) => StatusCode::CONFLICT,
                StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ConsoleError::Throttled(wait) | ConsoleError::Busy(wait) => Some(*wait),
            ConsoleError::Store(StoreError::Unavailable(_)) => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    /// What the page says: the error's own words, except where they would show internals.
    fn message(&self) -> String {
        match self {
            ConsoleError::Store(StoreError::NotFound(_)) | ConsoleError::NotFound => {
                "There is nothing here. It may have been deleted, or it belongs to another account.".into()
            }
            ConsoleError::Store(StoreError::Invalid(message) | StoreError::Conflict(message)) => {
                message.clone()
            }
            ConsoleError::Store(StoreError::Unavailable(_)) => {
                "The database is busy. Try again in a few seconds.".into()
            }
            ConsoleError::Store(_) | ConsoleError::Internal(_) => {
                "Something went wrong on our side. Try again; if it keeps happening, tell your operator.".into()
            }
            other => {
                let mut text = other.to_string();
                if let Some(first) = text.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                text
            }
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if let ConsoleError::LoggedOut = self {
            return Redirect::to("/console/login").into_response();
        }
        if let ConsoleError::Redirect(to) = self {
            return Redirect::to(to).into_response();
        }
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "console request failed");
        }
        let mut response = render::error_page(status, &self.message());
        if let Some(wait) = self.retry_after() {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&wait.as_secs().max(1).to_string()).expect("digits"),
            );
        }
        response
    }
}

impl From<super::password::PasswordError> for ConsoleError {
    fn from(error: super::password::PasswordError) -> Self {
        ConsoleError::Internal(error.to_string())
    }
}

impl From<super::mail::MailError> for ConsoleError {
    fn from(error: super::mail::MailError) -> Self {
        ConsoleError::Internal(error.to_string())
    }
}

pub type ConsoleResult<T> = Result<T, ConsoleError>;

//! Turning a page into a response: the chrome every page shares (title, navigation for the
//! member's role, the form token, a notice), the security headers every console answer carries,
//! and the error page.

use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::assets;
use super::capability::{Capability, allows};
use super::session::Member;

/// The strict policy: nothing from elsewhere, no inline script or style. `blob:` images are the
/// browser's own preview of a file being described (the server never sees them as images).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// The signed-in part of the chrome.
pub struct Who {
    pub user: String,
    pub account: String,
    pub role: &'static str,
    pub csrf: String,
    pub nav: Vec<NavLink>,
}

pub struct Chrome {
    pub title: String,
    pub css: String,
    pub js: String,
    pub favicon: String,
    pub who: Option<Who>,
    pub notice: Option<&'static str>,
    /// A warning shown on every page (restricted processing, deletion scheduled).
    pub banner: Option<String>,
}

/// Navigation: label, path, and the capability that shows it.
const NAV: &[(&str, &str, Capability)] = &[
    ("/console/library", "Library", Capability::Read),
    ("/console/describe", "Describe", Capability::Describe),
    ("/console/keys", "API keys", Capability::ManageKeys),
    ("/console/members", "Members", Capability::Administer),
    ("/console/security", "Security", Capability::Read),
];

/// Notices a redirect may ask for by code (`?notice=`): fixed words, never text from the URL.
const NOTICES: &[(&str, &str)] = &[
    ("saved", "Saved."),
    ("deleted", "The description was deleted."),
    ("approved", "Approved."),
    ("rejected", "Rejected."),
    ("reviewed", "Review saved."),
    (
        "reviewed-skipped",
        "Review saved. Descriptions with error findings were not approved: fix them, or tick \"Approve those with error findings too\".",
    ),
    (
        "key-revoked",
        "The key was revoked; requests with it now get 401.",
    ),
    ("invited", "Invitation created."),
    ("invitation-revoked", "The invitation was revoked."),
    ("member-changed", "The member's role was changed."),
    ("member-removed", "The member was removed."),
    (
        "password-changed",
        "Your password was changed; your other sessions were logged out.",
    ),
    ("session-revoked", "The session was logged out."),
    ("verified", "Your email is confirmed. Log in to continue."),
    ("reset", "Your password was reset. Log in with the new one."),
    ("check-email", "Check your email for the link."),
    ("logged-out", "You are logged out."),
    (
        "mfa-enrolled",
        "Two-factor authentication is on. Keep your recovery codes somewhere safe.",
    ),
    ("joined", "You joined the account."),
    ("described", "Described. Review the text below."),
];

pub fn notice(code: Option<&str>) -> Option<&'static str> {
    let code = code?;
    NOTICES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, words)| *words)
}

impl Chrome {
    pub fn public(title: impl Into<String>) -> Chrome {
        Chrome {
            title: title.into(),
            css: assets::css(),
            js: assets::js(),
            favicon: assets::favicon(),
            who: None,
            notice: None,
            banner: None,
        }
    }

    /// The chrome of a signed-in page; `current` is the path whose link is marked current.
    pub fn member(title: impl Into<String>, member: &Member, current: &str) -> Chrome {
        let nav = NAV
            .iter()
            .filter(|(_, _, capability)| allows(member.role, *capability))
            .map(|&(href, label, _)| NavLink {
                href,
                label,
                current: href == current,
            })
            .collect();
        let banner = if member.account.deleted_at.is_some() {
            Some("This account is scheduled for deletion.".to_string())
        } else {
            member.account.restricted_by.map(|_| {
                "Processing is restricted for this account: describing and editing are paused. Your data can still be read, exported and deleted.".to_string()
            })
        };
        Chrome {
            who: Some(Who {
                user: member.user.name.clone(),
                account: member.account.name.clone().unwrap_or_default(),
                role: member.role.as_str(),
                csrf: member.session.csrf_token.clone(),
                nav,
            }),
            banner,
            ..Chrome::public(title)
        }
    }

    pub fn with_notice(mut self, code: Option<&str>) -> Chrome {
        self.notice = notice(code);
        self
    }
}

/// A rendered page; a template error is logged and becomes the 500 page.
pub fn page(template: &impl Template) -> Response {
    with_status(StatusCode::OK, template)
}

pub fn with_status(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a console template failed to render");
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be shown.",
            )
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    status: u16,
    message: &'a str,
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        chrome: Chrome::public(status.canonical_reason().unwrap_or("Error")),
        status: status.as_u16(),
        message,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, message.to_string()).into_response(),
    }
}

/// The headers of every console answer: the CSP, no sniffing, no framing, no referrer beyond
/// this origin, and no caching of pages (they hold personal data) unless the handler chose
/// otherwise (the hashed assets).
pub async fn secure_headers(mut response: Response) -> Response {
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A page whose URL holds a token says `no-referrer` itself.
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

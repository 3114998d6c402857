//! A member's own security: the second factor's state, changing the password (which logs out
//! every other session), and the list of sessions with a way to end each.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{FieldErrors, NoticeQuery, when};
use crate::console::error::ConsoleResult;
use crate::console::forms::MemberForm;
use crate::console::mail::messages;
use crate::console::render::{self, Chrome};
use crate::console::session::{self, Client, Member};
use crate::console::{ConsoleState, password};
use crate::store::console_sessions::SessionStage;

pub struct SessionRow {
    id: String,
    agent: String,
    ip: String,
    created: String,
    last_seen: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "security.html")]
struct SecurityPage {
    chrome: Chrome,
    csrf: String,
    errors: FieldErrors,
    mfa: bool,
    require_mfa: bool,
    recovery_left: i64,
    sessions: Vec<SessionRow>,
}

async fn security_page(
    state: &ConsoleState,
    member: &Member,
    errors: FieldErrors,
    notice: Option<&str>,
) -> ConsoleResult<SecurityPage> {
    let sessions = state.store.user_sessions(&member.user.id).await?;
    Ok(SecurityPage {
        chrome: Chrome::member("Security", member, "/console/security").with_notice(notice),
        csrf: member.session.csrf_token.clone(),
        errors,
        mfa: member.user.mfa_enrolled_at.is_some(),
        require_mfa: member.account.require_mfa,
        recovery_left: state.store.unused_recovery_codes(&member.user.id).await?,
        sessions: sessions
            .into_iter()
            .map(|s| SessionRow {
                current: s.id_hash == member.session.id_hash,
                id: s.id_hash,
                agent: s.user_agent.unwrap_or_else(|| "unknown".into()),
                ip: s.ip.unwrap_or_else(|| "unknown".into()),
                created: when(s.created_at),
                last_seen: when(s.last_seen_at),
            })
            .collect(),
    })
}

pub async fn page(
    State(state): State<ConsoleState>,
    member: Member,
    Query(query): Query<NoticeQuery>,
) -> ConsoleResult<Response> {
    Ok(render::page(
        &security_page(
            &state,
            &member,
            FieldErrors::default(),
            query.notice.as_deref(),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
}

pub async fn change_password(
    State(state): State<ConsoleState>,
    client: Client,
    MemberForm { member, form }: MemberForm<PasswordForm>,
) -> ConsoleResult<Response> {
    let mut errors = FieldErrors::default();
    let right = state
        .console
        .passwords
        .verify(
            form.current.clone(),
            Some(member.user.password_hash.clone()),
        )
        .await?;
    if !right {
        errors.add("current", "Your current password is not right.");
    }
    if let Err(problem) = password::check_new(&form.new, &member.user.email) {
        errors.add("new", problem);
    }
    if !errors.is_empty() {
        return Ok(render::with_status(
            StatusCode::BAD_REQUEST,
            &security_page(&state, &member, errors, None).await?,
        ));
    }
    let hash = state.console.passwords.hash(form.new.clone()).await?;
    // Ends every session, this one included; this browser gets a new one.
    state.store.set_password(&member.user.id, &hash).await?;
    let new = session::new_session(
        &state,
        &member.user,
        &member.account.id,
        SessionStage::Full,
        client.ip.as_deref(),
        client.user_agent.as_deref(),
    );
    let cookie = state.store.create_session(&new).await?;
    let (subject, body) = messages::password_changed();
    state
        .console
        .mail
        .send(&member.user.email, &subject, body)
        .await?;
    Ok((
        [(header::SET_COOKIE, session::session_cookie(&cookie))],
        Redirect::to("/console/security?notice=password-changed"),
    )
        .into_response())
}

pub async fn revoke_session(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    if !state
        .store
        .revoke_user_session(&member.user.id, &id)
        .await?
    {
        return Err(crate::console::error::ConsoleError::NotFound);
    }
    Ok(Redirect::to("/console/security?notice=session-revoked").into_response())
}

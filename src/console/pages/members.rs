//! The team: members and their roles (changed or removed by owners and admins, never above
//! their own role, never the last owner), invitations (mailed and shown for copying, revocable),
//! and the page an invitation link opens.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{FieldErrors, NoticeQuery, message, when};
use crate::console::ConsoleState;
use crate::console::capability::may_grant;
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::forms::MemberForm;
use crate::console::mail::messages;
use crate::console::password;
use crate::console::render::{self, Chrome};
use crate::console::session::Member;
use crate::store::StoreError;
use crate::store::ids::UserId;
use crate::store::invitations::Claimant;
use crate::store::users::{NewUser, Role};

const INVITATION_LIFETIME_MS: i64 = 7 * 24 * 60 * 60 * 1000;

pub struct MemberRow {
    id: String,
    name: String,
    email: String,
    role: &'static str,
    mfa: bool,
    is_me: bool,
    /// The roles the viewer may give, each with whether it is this member's.
    options: Vec<(&'static str, bool)>,
}

pub struct InvitationRow {
    id: String,
    email: String,
    role: &'static str,
    expires: String,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    chrome: Chrome,
    csrf: String,
    errors: FieldErrors,
    members: Vec<MemberRow>,
    invitations: Vec<InvitationRow>,
    /// The roles the viewer may invite with, each with whether it is preselected (viewer).
    grantable: Vec<(&'static str, bool)>,
    invitation_link: Option<String>,
}

async fn members_page(
    state: &ConsoleState,
    member: &Member,
    errors: FieldErrors,
    invitation_link: Option<String>,
    notice: Option<&str>,
) -> ConsoleResult<MembersPage> {
    let members = state.store.members(&member.account.id).await?;
    let invitations = state.store.open_invitations(&member.account.id).await?;
    let grantable: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|&role| may_grant(member.role, role))
        .collect();
    Ok(MembersPage {
        chrome: Chrome::member("Members", member, "/console/members").with_notice(notice),
        csrf: member.session.csrf_token.clone(),
        errors,
        members: members
            .into_iter()
            .map(|m| MemberRow {
                is_me: m.user_id == member.user.id,
                id: m.user_id.to_string(),
                name: m.name,
                email: m.email,
                role: m.role.as_str(),
                mfa: m.mfa_enrolled,
                options: grantable
                    .iter()
                    .map(|r| (r.as_str(), *r == m.role))
                    .collect(),
            })
            .collect(),
        invitations: invitations
            .into_iter()
            .map(|i| InvitationRow {
                id: i.id,
                email: i.email,
                role: i.role.as_str(),
                expires: when(i.expires_at),
            })
            .collect(),
        grantable: grantable
            .iter()
            .map(|r| (r.as_str(), *r == Role::Viewer))
            .collect(),
        invitation_link,
    })
}

pub async fn page(
    State(state): State<ConsoleState>,
    member: Member,
    Query(query): Query<NoticeQuery>,
) -> ConsoleResult<Response> {
    Ok(render::page(
        &members_page(
            &state,
            &member,
            FieldErrors::default(),
            None,
            query.notice.as_deref(),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

pub async fn invite(
    State(state): State<ConsoleState>,
    MemberForm { member, form }: MemberForm<InviteForm>,
) -> ConsoleResult<Response> {
    let role =
        Role::parse(&form.role).ok_or_else(|| ConsoleError::BadRequest("choose a role".into()))?;
    if !may_grant(member.role, role) {
        return Err(ConsoleError::Forbidden);
    }
    let created = state
        .store
        .create_invitation(
            &member.account.id,
            &form.email,
            role,
            &member.user.id,
            INVITATION_LIFETIME_MS,
        )
        .await;
    let (invitation, token) = match created {
        Ok(created) => created,
        Err(StoreError::Invalid(problem) | StoreError::Conflict(problem)) => {
            let mut errors = FieldErrors::default();
            errors.add("email", problem);
            return Ok(render::with_status(
                StatusCode::BAD_REQUEST,
                &members_page(&state, &member, errors, None, None).await?,
            ));
        }
        Err(other) => return Err(other.into()),
    };
    let link = state.link(&format!("/invite/{token}"));
    let (subject, body) = messages::invitation(
        &member.user.name,
        &invitation.account_name,
        role.as_str(),
        &link,
    );
    state
        .console
        .mail
        .send(&invitation.email, &subject, body)
        .await?;
    let mut response = render::page(
        &members_page(
            &state,
            &member,
            FieldErrors::default(),
            Some(link),
            Some("invited"),
        )
        .await?,
    );
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

fn target(id: &str) -> ConsoleResult<UserId> {
    UserId::parse(id).ok_or(ConsoleError::NotFound)
}

/// The member being changed: in this account, not the one asking, not above the one asking.
async fn changeable(state: &ConsoleState, member: &Member, id: &str) -> ConsoleResult<UserId> {
    let user_id = target(id)?;
    if user_id == member.user.id {
        return Err(ConsoleError::BadRequest(
            "you cannot change your own membership here".into(),
        ));
    }
    let their_role = state
        .store
        .role_in(&member.account.id, &user_id)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    if their_role > member.role {
        return Err(ConsoleError::Forbidden);
    }
    Ok(user_id)
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

pub async fn change_role(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    MemberForm { member, form }: MemberForm<RoleForm>,
) -> ConsoleResult<Response> {
    let role =
        Role::parse(&form.role).ok_or_else(|| ConsoleError::BadRequest("choose a role".into()))?;
    if !may_grant(member.role, role) {
        return Err(ConsoleError::Forbidden);
    }
    let user_id = changeable(&state, &member, &id).await?;
    state
        .store
        .change_membership(&member.account.id, &user_id, Some(role))
        .await?;
    Ok(Redirect::to("/console/members?notice=member-changed").into_response())
}

pub async fn remove(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    let user_id = changeable(&state, &member, &id).await?;
    state
        .store
        .change_membership(&member.account.id, &user_id, None)
        .await?;
    Ok(Redirect::to("/console/members?notice=member-removed").into_response())
}

pub async fn revoke_invitation(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    state
        .store
        .revoke_invitation(&member.account.id, &id)
        .await?;
    Ok(Redirect::to("/console/members?notice=invitation-revoked").into_response())
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    chrome: Chrome,
    errors: FieldErrors,
    token: String,
    account: String,
    role: &'static str,
    email: String,
    existing: bool,
    name: String,
}

fn invitation_gone() -> Response {
    message(
        StatusCode::NOT_FOUND,
        Chrome::public("This invitation no longer works"),
        &[
            "It was accepted already, revoked, or it expired. Ask the person who invited you for a new one.",
        ],
        None,
    )
}

async fn open_invitation(
    state: &ConsoleState,
    token: &str,
) -> ConsoleResult<Option<InvitationPage>> {
    let Some(invitation) = state.store.invitation_by_token(token).await? else {
        return Ok(None);
    };
    if !invitation.is_open(crate::store::now_ms()) {
        return Ok(None);
    }
    let existing = state
        .store
        .user_by_email(&invitation.email)
        .await?
        .is_some();
    Ok(Some(InvitationPage {
        chrome: Chrome::public(format!("Join {}", invitation.account_name)),
        errors: FieldErrors::default(),
        token: token.to_string(),
        account: invitation.account_name,
        role: invitation.role.as_str(),
        email: invitation.email,
        existing,
        name: String::new(),
    }))
}

pub async fn invitation_page(
    State(state): State<ConsoleState>,
    Path(token): Path<String>,
) -> ConsoleResult<Response> {
    let mut response = match open_invitation(&state, &token).await? {
        Some(page) => render::page(&page),
        None => invitation_gone(),
    };
    response.headers_mut().insert(
        axum::http::header::REFERRER_POLICY,
        axum::http::HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    adult: Option<String>,
}

/// Accepting: an existing user proves it is them with their password; a new one chooses a name
/// and password (the invitation reached their mailbox, so the address counts as verified).
/// Either way they log in afterwards, with the second factor their new account asks for.
pub async fn accept_invitation(
    State(state): State<ConsoleState>,
    Path(token): Path<String>,
    Form(form): Form<AcceptForm>,
) -> ConsoleResult<Response> {
    let Some(mut page) = open_invitation(&state, &token).await? else {
        return Ok(invitation_gone());
    };
    let claimant = if page.existing {
        let user = state
            .store
            .user_by_email(&page.email)
            .await?
            .ok_or(ConsoleError::NotFound)?;
        let right = state
            .console
            .passwords
            .verify(form.password.clone(), Some(user.password_hash.clone()))
            .await?;
        if !right {
            page.errors.add("password", "That password is not right.");
            return Ok(render::with_status(StatusCode::BAD_REQUEST, &page));
        }
        Claimant::Existing(user.id)
    } else {
        if form.name.trim().is_empty() {
            page.errors.add("name", "Enter your name.");
        }
        if let Err(problem) = password::check_new(&form.password, &page.email) {
            page.errors.add("password", problem);
        }
        if form.adult.as_deref() != Some("yes") {
            page.errors.add(
                "adult",
                "Confirm that you are 18 or older: altimage is not for people under 18.",
            );
        }
        if !page.errors.is_empty() {
            page.name = form.name.clone();
            return Ok(render::with_status(StatusCode::BAD_REQUEST, &page));
        }
        Claimant::New(NewUser {
            email: page.email.clone(),
            name: form.name.clone(),
            password_hash: state.console.passwords.hash(form.password.clone()).await?,
        })
    };
    match state.store.claim_invitation(&token, claimant).await? {
        Some((user_id, account_id, _)) => {
            state.store.set_last_account(&user_id, &account_id).await?;
            Ok(Redirect::to("/console/login?notice=joined").into_response())
        }
        None => Ok(invitation_gone()),
    }
}

//! API keys in the console: listed without their secrets, created (the secret shown on the
//! answer page, once), revoked at once.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::{FieldErrors, NoticeQuery, when};
use crate::console::ConsoleState;
use crate::console::error::ConsoleResult;
use crate::console::forms::MemberForm;
use crate::console::render::{self, Chrome};
use crate::console::session::Member;
use crate::store::StoreError;
use crate::store::keys::Scope;

pub struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    scopes: String,
    created: String,
    last_used: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    csrf: String,
    errors: FieldErrors,
    created: Option<String>,
    keys: Vec<KeyRow>,
}

async fn keys_page(
    state: &ConsoleState,
    member: &Member,
    errors: FieldErrors,
    created: Option<String>,
    notice: Option<&str>,
) -> ConsoleResult<KeysPage> {
    let keys = state.store.list_keys(&member.account.id).await?;
    Ok(KeysPage {
        chrome: Chrome::member("API keys", member, "/console/keys").with_notice(notice),
        csrf: member.session.csrf_token.clone(),
        errors,
        created,
        keys: keys
            .into_iter()
            .map(|k| KeyRow {
                scopes: k
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                created: when(k.created_at),
                last_used: k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
                revoked: k.revoked_at.is_some(),
                id: k.id,
                name: k.name,
                prefix: k.prefix,
            })
            .collect(),
    })
}

pub async fn page(
    State(state): State<ConsoleState>,
    member: Member,
    axum::extract::Query(query): axum::extract::Query<NoticeQuery>,
) -> ConsoleResult<Response> {
    Ok(render::page(
        &keys_page(
            &state,
            &member,
            FieldErrors::default(),
            None,
            query.notice.as_deref(),
        )
        .await?,
    ))
}

pub async fn create(
    State(state): State<ConsoleState>,
    MemberForm { member, form }: MemberForm<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    let name = form
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let scopes: Vec<Scope> = form
        .iter()
        .filter(|(k, _)| k == "scopes")
        .filter_map(|(_, v)| Scope::parse(v).ok())
        .collect();
    match state
        .store
        .create_key(&member.account.id, name, &scopes, &member.actor())
        .await
    {
        Ok(created) => {
            let mut response = render::page(
                &keys_page(
                    &state,
                    &member,
                    FieldErrors::default(),
                    Some(created.secret),
                    None,
                )
                .await?,
            );
            // The secret is on this page: never cached, never shown again.
            response.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            Ok(response)
        }
        Err(StoreError::Invalid(problem)) => {
            let mut errors = FieldErrors::default();
            errors.add("name", problem);
            Ok(render::with_status(
                StatusCode::BAD_REQUEST,
                &keys_page(&state, &member, errors, None, None).await?,
            ))
        }
        Err(other) => Err(other.into()),
    }
}

pub async fn revoke(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    MemberForm { member, .. }: MemberForm<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    state
        .store
        .revoke_key(&member.account.id, &id, &member.actor())
        .await?;
    Ok(Redirect::to("/console/keys?notice=key-revoked").into_response())
}

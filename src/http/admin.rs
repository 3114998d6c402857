//! `/v1/admin/`: accounts and their keys, restriction and deletion, for the operator holding
//! `--admin-token`. The same operations exist in the CLI (`altimage accounts`, `altimage keys`).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::library::{json_body, query};
use crate::store::accounts::{AccountUpdate, NewAccount, RestrictedBy};
use crate::store::keys::{ApiKey, Scope};

/// Distinguishes an absent field (`None`: leave it) from `null` (`Some(None)`: clear it).
fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub name: String,
    pub email: String,
    /// The Stripe customer that is billed for this account's usage.
    pub stripe_customer_id: Option<String>,
    /// Overrides `--rate-limit-per-minute` for this account.
    pub rate_limit_per_minute: Option<i64>,
}

pub async fn create_account(
    State(state): State<AppState>,
    body: Result<Json<CreateAccount>, JsonRejection>,
) -> Response {
    let run = async {
        let new = json_body(body)?;
        let account = state
            .store
            .create_account(NewAccount {
                name: new.name,
                email: new.email,
                stripe_customer_id: new.stripe_customer_id,
                rate_limit_per_minute: new.rate_limit_per_minute,
            })
            .await?;
        tracing::info!(account_id = %account.id, "account created");
        Ok::<_, ApiError>((StatusCode::CREATED, Json(account)))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    starting_after: Option<String>,
}

pub async fn list_accounts(State(state): State<AppState>, uri: Uri) -> Response {
    let run = async {
        let query: ListQuery = query(&uri)?;
        let limit = query.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                "`limit` must be between 1 and 100",
            ));
        }
        let (accounts, has_more) = state
            .store
            .list_accounts(limit, query.starting_after.as_deref())
            .await?;
        Ok(Json(
            json!({"object": "list", "data": accounts, "has_more": has_more}),
        ))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

pub async fn show_account(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let run = async { Ok::<_, ApiError>(Json(state.store.account(&id).await?)) };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    pub name: Option<String>,
    pub email: Option<String>,
    /// `null` removes the mapping.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub stripe_customer_id: Option<Option<String>>,
    /// `null` returns to `--rate-limit-per-minute`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>)]
    pub rate_limit_per_minute: Option<Option<i64>>,
    /// Restrict processing (new descriptions refused) or lift any restriction.
    pub restricted: Option<bool>,
}

pub async fn update_account(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<UpdateAccount>, JsonRejection>,
) -> Response {
    let run = async {
        let update = json_body(body)?;
        let mut account = state
            .store
            .update_account(
                &id,
                AccountUpdate {
                    name: update.name,
                    email: update.email,
                    stripe_customer_id: update.stripe_customer_id,
                    rate_limit_per_minute: update.rate_limit_per_minute,
                },
            )
            .await?;
        if let Some(restricted) = update.restricted {
            account = state
                .store
                .set_restricted(&id, restricted, RestrictedBy::Admin)
                .await?;
        }
        Ok::<_, ApiError>(Json(account))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

pub async fn delete_account(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let run = async {
        let account = state
            .store
            .request_deletion(&id, state.access.deletion_grace)
            .await?;
        tracing::info!(account_id = %account.id, "account deletion requested by the operator");
        Ok::<_, ApiError>((StatusCode::ACCEPTED, Json(account)))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label to recognise the key by (default `default`).
    pub name: Option<String>,
    /// Default: all of `describe`, `read`, `manage`.
    pub scopes: Option<Vec<String>>,
}

/// A new key with its secret, shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedKeyBody {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The secret to send as `Authorization: Bearer KEY`. Only a hash is stored: it cannot be
    /// shown again.
    #[schema(example = "altk_Q2xhc3NpY2FsbHkgdGhpcyBpcyBub3QgYSByZWFsIGtleQ")]
    pub key: String,
}

pub fn parse_scopes(scopes: Option<&[String]>) -> Result<Vec<Scope>, ApiError> {
    match scopes {
        None => Ok(Scope::ALL.to_vec()),
        Some(names) => names
            .iter()
            .map(|name| Scope::parse(name).map_err(ApiError::from))
            .collect(),
    }
}

pub async fn create_key(
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Response {
    let run = async {
        let request = json_body(body)?;
        let scopes = parse_scopes(request.scopes.as_deref())?;
        let created = state
            .store
            .create_key(
                &account_id,
                request.name.as_deref().unwrap_or("default"),
                &scopes,
            )
            .await?;
        tracing::info!(account_id, key_id = %created.key.id, "key created");
        let body = CreatedKeyBody {
            api_key: created.key,
            key: created.secret,
        };
        Ok::<_, ApiError>((StatusCode::CREATED, Json(body)))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

pub async fn list_keys(State(state): State<AppState>, Path(account_id): Path<String>) -> Response {
    let run = async {
        let keys = state.store.list_keys(&account_id).await?;
        Ok::<_, ApiError>(Json(
            json!({"object": "list", "data": keys, "has_more": false}),
        ))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Path((account_id, key_id)): Path<(String, String)>,
) -> Response {
    let run = async {
        let key = state.store.revoke_key(&account_id, &key_id).await?;
        tracing::info!(account_id, key_id, "key revoked");
        Ok::<_, ApiError>(Json(key))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

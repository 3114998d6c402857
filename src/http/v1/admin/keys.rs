//! `/v1/admin/accounts/{id}/keys[/{key_id}]`: create (the secret shown once), list and revoke an
//! account's API keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AccountPath, OneAccount};
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::operator;
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, known};
use crate::http::v1::resources::{ApiKey, KeyList};
use crate::store::ids::AccountId;
use crate::store::keys::Scope;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label to recognise the key by (default `default`).
    pub name: Option<String>,
    /// Default: all of `describe`, `read`, `manage`.
    pub scopes: Option<Vec<String>>,
}

/// A new key with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyBody {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The secret to send as `Authorization: Bearer KEY`. Only a hash is stored: it cannot be
    /// shown again.
    #[schema(example = "altk_Q2xhc3NpY2FsbHkgdGhpcyBpcyBub3QgYSByZWFsIGtleQ")]
    pub key: String,
}

/// The scopes a new key asks for; all of them when none are named.
pub fn parse_scopes(scopes: Option<&[String]>) -> Result<Vec<Scope>, ApiError> {
    match scopes {
        None => Ok(Scope::ALL.to_vec()),
        Some(names) => names
            .iter()
            .map(|name| Scope::parse(name).map_err(ApiError::from))
            .collect(),
    }
}

error_set!(
    pub CreateErrors: OneAccount {
        BadRequest => "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, an unknown or empty list of scopes, a `name` that is empty or over 100 characters, or an `id` that is not UTF-8 once percent-decoded (`invalid_path`).",
        NotFound => "No such account, or it is being deleted; or the admin API is off (no `--admin-token`).",
    }
);

/// Create an API key
///
/// A new key for the account. The secret (`key`) is in this answer only: just its hash is
/// stored.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{id}/keys",
    operation_id = "adminCreateKey",
    params(AccountPath),
    request_body(content = CreateKey, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, with its secret.", body = CreatedKeyBody),
        CreateErrors,
    ),
)]
pub async fn create_key(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiPath(path): ApiPath<AccountPath>,
    body: Result<ApiJson<CreateKey>, ApiError>,
) -> Result<(StatusCode, Json<CreatedKeyBody>), ApiError> {
    let ApiJson(request) = body?;
    let scopes = parse_scopes(request.scopes.as_deref())?;
    let name = request.name.as_deref().unwrap_or("default");
    let account_id = path.id()?;
    let created = state
        .store
        .create_key(&account_id, name, &scopes, &operator(&client))
        .await?;
    tracing::info!(%account_id, key_id = %created.key.id, "key created");
    let body = CreatedKeyBody {
        api_key: created.key.into(),
        key: created.secret,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// List an account's keys
///
/// Every key of the account, revoked ones included; never the secrets.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts/{id}/keys",
    operation_id = "adminListKeys",
    params(AccountPath),
    responses(
        (status = 200, description = "The keys (`has_more` is always false).", body = KeyList),
        OneAccount,
    ),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<AccountPath>,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state.store.list_keys(&path.id()?).await?;
    Ok(Json(KeyList::new(keys, false)))
}

/// The path of one key.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The account's id.
    #[param(example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    id: String,
    /// The key's id.
    #[param(example = "key_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    key_id: String,
}

error_set!(
    pub RevokeErrors: OneAccount {
        NotFound => "No such key in this account, or the admin API is off (no `--admin-token`).",
    }
);

/// Revoke an API key
///
/// The next request with the key is refused with 401. Revoking again changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/admin/accounts/{id}/keys/{key_id}",
    operation_id = "adminRevokeKey",
    params(KeyPath),
    responses(
        (status = 200, description = "The key, with `revoked_at`.", body = ApiKey),
        RevokeErrors,
    ),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiPath(path): ApiPath<KeyPath>,
) -> Result<Json<ApiKey>, ApiError> {
    let account_id = known(&path.id, AccountId::parse, "account")?;
    let key = state
        .store
        .revoke_key(&account_id, &path.key_id, &operator(&client))
        .await?;
    tracing::info!(account_id = path.id, key_id = path.key_id, "key revoked");
    Ok(Json(key.into()))
}

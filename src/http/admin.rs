//! `/v1/admin/`: accounts and their keys, restriction and deletion, for the operator holding
//! `--admin-token`. The same operations exist in the CLI (`altimage accounts`, `altimage keys`).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, PathParams, cursor, query};
use super::library::page_limit;
use super::openapi::{AccountList, AdminErrors, KeyList};
use crate::store::accounts::{Account, AccountUpdate, NewAccount, RestrictedBy};
use crate::store::keys::{ApiKey, Scope};

/// Distinguishes an absent field (`None`: leave it) from `null` (`Some(None)`: clear it).
fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The operations of this module, for [`admin_returns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOperation {
    CreateAccount,
    ListAccounts,
    ShowAccount,
    UpdateAccount,
    DeleteAccount,
    CreateKey,
    ListKeys,
    RevokeKey,
}

/// Whether `operation` can answer with `error`; checked against the annotations below by
/// tests/it/openapi.rs. Exhaustive on purpose, like `descriptions::create_returns`.
pub fn admin_returns(operation: AdminOperation, error: &ApiError) -> bool {
    use AdminOperation::*;
    match error {
        // The admin-token layer (`auth::require_admin`).
        ApiError::Unauthorized { .. } => true,
        // The database did not answer in time, or failed.
        ApiError::Unavailable { .. } | ApiError::Internal(_) => true,
        // Every admin route: not mounted without `--admin-token` (the fallback answers). With
        // an id: no such account (or key), or, for keys, an account being deleted.
        ApiError::NotFound(_) => true,
        // The HTTP layer around the handlers (405, 408, 501): documented once, for every route.
        ApiError::Protocol { .. } => false,
        // The JSON body (malformed, unknown field), the store's checks (name, email, rate
        // limit, scopes, key name, an account being deleted), the query string, or an id that
        // is not UTF-8 (`PathParams`): every operation.
        ApiError::BadRequest { .. } => true,
        // The `stripe_customer_id` belongs to another account.
        ApiError::Conflict { .. } => matches!(operation, CreateAccount | UpdateAccount),
        // No API key, so no scopes, no restriction and no rate limit on admin routes.
        ApiError::Forbidden { .. }
        | ApiError::RateLimited { .. }
        | ApiError::UnsupportedMediaType(_)
        | ApiError::TooLarge { .. }
        | ApiError::BadImage { .. }
        | ApiError::ImageUrlFailed { .. }
        | ApiError::Overloaded { .. } => false,
    }
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

#[utoipa::path(
    post,
    path = "/v1/admin/accounts",
    operation_id = "adminCreateAccount",
    tag = "admin",
    summary = "Create an account",
    description = "A new account without keys; create one with \
        `POST /v1/admin/accounts/{id}/keys`.",
    request_body(content = CreateAccount, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The account.", body = Account),
        (status = 400, description = "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, a `name` that is empty or over 200 characters, an `email` without `@`, or `rate_limit_per_minute` outside 1 to 1000000.", body = ErrorBody),
        (status = 404, description = "The admin API is off: the server runs without `--admin-token`.", body = ErrorBody),
        (status = 409, description = "The `stripe_customer_id` belongs to another account (code `conflict`).", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn create_account(
    State(state): State<AppState>,
    body: Result<ApiJson<CreateAccount>, ApiError>,
) -> Response {
    let run = async {
        let ApiJson(new) = body?;
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
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Accounts per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last account of the previous page.
    #[param(example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/accounts",
    operation_id = "adminListAccounts",
    tag = "admin",
    summary = "List accounts",
    description = "Every account that is not purged (deleted ones included, with `deleted_at`), \
        newest first, a page at a time.",
    params(ListQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page of accounts.", body = AccountList),
        (status = 400, description = "Invalid query: an unknown parameter, or `limit` outside 1 to 100.", body = ErrorBody),
        (status = 404, description = "The admin API is off: the server runs without `--admin-token`.", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn list_accounts(State(state): State<AppState>, uri: Uri) -> Response {
    let run = async {
        let query: ListQuery = query(&uri)?;
        let limit = page_limit(query.limit)?;
        let (accounts, has_more) = state
            .store
            .list_accounts(limit, cursor(query.starting_after, "acct")?.as_deref())
            .await?;
        Ok(Json(
            json!({"object": "list", "data": accounts, "has_more": has_more}),
        ))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[utoipa::path(
    get,
    path = "/v1/admin/accounts/{id}",
    operation_id = "adminShowAccount",
    tag = "admin",
    summary = "Show an account",
    description = "Any account that is not purged, deleted or not.",
    params(("id" = String, Path, description = "The account's id.", example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The account.", body = Account),
        (status = 400, description = "An `id` that is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such account (purged or never created), or the admin API is off (no `--admin-token`).", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn show_account(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Response {
    let run = async { Ok::<_, ApiError>(Json(state.store.account(&id).await?)) };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
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

#[utoipa::path(
    patch,
    path = "/v1/admin/accounts/{id}",
    operation_id = "adminUpdateAccount",
    tag = "admin",
    summary = "Change an account",
    description = "Name, email, Stripe customer, rate limit, restriction: absent fields stay as \
        they are; `null` clears `stripe_customer_id` or `rate_limit_per_minute`. `restricted` \
        restricts processing (by the operator: the account cannot lift it) or lifts any \
        restriction.",
    params(("id" = String, Path, description = "The account's id.", example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    request_body(content = UpdateAccount, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The account, as it is now.", body = Account),
        (status = 400, description = "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, an invalid `name`, `email` or `rate_limit_per_minute`, an account being deleted, or an `id` that is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such account (purged or never created), or the admin API is off (no `--admin-token`).", body = ErrorBody),
        (status = 409, description = "The `stripe_customer_id` belongs to another account (code `conflict`).", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn update_account(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
    body: Result<ApiJson<UpdateAccount>, ApiError>,
) -> Response {
    let run = async {
        let ApiJson(update) = body?;
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
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[utoipa::path(
    delete,
    path = "/v1/admin/accounts/{id}",
    operation_id = "adminDeleteAccount",
    tag = "admin",
    summary = "Delete an account",
    description = "As `DELETE /v1/account`: keys revoked and data hidden at once, purged after \
        `--deletion-grace-days`. Asking again keeps the first dates.",
    params(("id" = String, Path, description = "The account's id.", example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    security(("admin_token" = [])),
    responses(
        (status = 202, description = "Deletion accepted; the account with `deleted_at` and `purge_after`.", body = Account),
        (status = 400, description = "An `id` that is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such account (purged or never created), or the admin API is off (no `--admin-token`).", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn delete_account(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Response {
    let run = async {
        let account = state
            .store
            .request_deletion(&id, state.access.deletion_grace)
            .await?;
        tracing::info!(account_id = %account.id, "account deletion requested by the operator");
        Ok::<_, ApiError>((StatusCode::ACCEPTED, Json(account)))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
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

#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{id}/keys",
    operation_id = "adminCreateKey",
    tag = "admin",
    summary = "Create an API key",
    description = "A new key for the account. The secret (`key`) is in this answer only: just \
        its hash is stored.",
    params(("id" = String, Path, description = "The account's id.", example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    request_body(content = CreateKey, content_type = "application/json"),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "The key, with its secret.", body = CreatedKeyBody),
        (status = 400, description = "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, an unknown or empty list of scopes, a `name` that is empty or over 100 characters, or an `id` that is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such account, or it is being deleted; or the admin API is off (no `--admin-token`).", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn create_key(
    State(state): State<AppState>,
    PathParams(account_id): PathParams<String>,
    body: Result<ApiJson<CreateKey>, ApiError>,
) -> Response {
    let run = async {
        let ApiJson(request) = body?;
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
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[utoipa::path(
    get,
    path = "/v1/admin/accounts/{id}/keys",
    operation_id = "adminListKeys",
    tag = "admin",
    summary = "List an account's keys",
    description = "Every key of the account, revoked ones included; never the secrets.",
    params(("id" = String, Path, description = "The account's id.", example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The keys (`has_more` is always false).", body = KeyList),
        (status = 400, description = "An `id` that is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such account (purged or never created), or the admin API is off (no `--admin-token`).", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    PathParams(account_id): PathParams<String>,
) -> Response {
    let run = async {
        let keys = state.store.list_keys(&account_id).await?;
        Ok::<_, ApiError>(Json(
            json!({"object": "list", "data": keys, "has_more": false}),
        ))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[utoipa::path(
    delete,
    path = "/v1/admin/accounts/{id}/keys/{key_id}",
    operation_id = "adminRevokeKey",
    tag = "admin",
    summary = "Revoke an API key",
    description = "The next request with the key is refused with 401. Revoking again changes \
        nothing.",
    params(
        ("id" = String, Path, description = "The account's id.", example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f"),
        ("key_id" = String, Path, description = "The key's id.", example = "key_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The key, with `revoked_at`.", body = ApiKey),
        (status = 400, description = "An `id` that is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such key in this account, or the admin API is off (no `--admin-token`).", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    PathParams((account_id, key_id)): PathParams<(String, String)>,
) -> Response {
    let run = async {
        let key = state.store.revoke_key(&account_id, &key_id).await?;
        tracing::info!(account_id, key_id, "key revoked");
        Ok::<_, ApiError>(Json(key))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

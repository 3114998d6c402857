//! `/v1/admin/accounts[/{id}]`: create, list, show, change and delete accounts.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};

use super::{AccountPath, AdminRoute, OneAccount};
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::operator;
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, cursor, page_limit};
use crate::http::v1::resources::{Account, AccountList};
use crate::store::accounts::{AccountUpdate, NewAccount, RestrictedBy};

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    pub name: String,
    pub email: String,
    /// The Stripe customer that is billed for this account's usage.
    pub stripe_customer_id: Option<String>,
    /// Overrides `--rate-limit-per-minute` for this account.
    pub rate_limit_per_minute: Option<i64>,
}

error_set!(
    pub CreateErrors: AdminRoute {
        BadRequest => "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, a `name` that is empty or over 200 characters, an `email` without `@`, or `rate_limit_per_minute` outside 1 to 1000000.",
        Conflict => "The `stripe_customer_id` belongs to another account (code `conflict`).",
    }
);

/// Create an account
///
/// A new account without keys; create one with `POST /v1/admin/accounts/{id}/keys`.
#[utoipa::path(
    post,
    path = "/v1/admin/accounts",
    operation_id = "adminCreateAccount",
    request_body(content = CreateAccount, content_type = "application/json"),
    responses(
        (status = 201, description = "The account.", body = Account),
        CreateErrors,
    ),
)]
pub async fn create_account(
    State(state): State<AppState>,
    client: ClientInfo,
    body: Result<ApiJson<CreateAccount>, ApiError>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    let ApiJson(new) = body?;
    let new = NewAccount {
        name: new.name,
        email: new.email,
        stripe_customer_id: new.stripe_customer_id,
        rate_limit_per_minute: new.rate_limit_per_minute,
    };
    let account = state.store.create_account(new, &operator(&client)).await?;
    tracing::info!(account_id = %account.id, "account created");
    Ok((StatusCode::CREATED, Json(account.into())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Accounts per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last account of the previous page.
    #[param(example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
}

error_set!(
    pub ListErrors: AdminRoute {
        BadRequest => "Invalid query: an unknown parameter, `limit` outside 1 to 100, or a `starting_after` that is not an account id.",
    }
);

/// List accounts
///
/// Every account that is not purged (deleted ones included, with `deleted_at`), newest first, a
/// page at a time.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts",
    operation_id = "adminListAccounts",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of accounts.", body = AccountList),
        ListErrors,
    ),
)]
pub async fn list_accounts(
    State(state): State<AppState>,
    query: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<Json<AccountList>, ApiError> {
    let ApiQuery(query) = query?;
    let limit = page_limit(query.limit)?;
    let (accounts, has_more) = state
        .store
        .list_accounts(limit, cursor(query.starting_after, "acct")?.as_deref())
        .await?;
    Ok(Json(AccountList::new(accounts, has_more)))
}

/// Show an account
///
/// Any account that is not purged, deleted or not.
#[utoipa::path(
    get,
    path = "/v1/admin/accounts/{id}",
    operation_id = "adminShowAccount",
    params(AccountPath),
    responses(
        (status = 200, description = "The account.", body = Account),
        OneAccount,
    ),
)]
pub async fn show_account(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<AccountPath>,
) -> Result<Json<Account>, ApiError> {
    Ok(Json(state.store.account(&path.id()?).await?.into()))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
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

error_set!(
    pub UpdateErrors: OneAccount {
        BadRequest => "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, an invalid `name`, `email` or `rate_limit_per_minute`, an account being deleted, or an `id` that is not UTF-8 once percent-decoded (`invalid_path`).",
        Conflict => "The `stripe_customer_id` belongs to another account (code `conflict`).",
    }
);

/// Change an account
///
/// Name, email, Stripe customer, rate limit, restriction: absent fields stay as they are;
/// `null` clears `stripe_customer_id` or `rate_limit_per_minute`. `restricted` restricts
/// processing (by the operator: the account cannot lift it) or lifts any restriction.
#[utoipa::path(
    patch,
    path = "/v1/admin/accounts/{id}",
    operation_id = "adminUpdateAccount",
    params(AccountPath),
    request_body(content = UpdateAccount, content_type = "application/json"),
    responses(
        (status = 200, description = "The account, as it is now.", body = Account),
        UpdateErrors,
    ),
)]
pub async fn update_account(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiPath(path): ApiPath<AccountPath>,
    body: Result<ApiJson<UpdateAccount>, ApiError>,
) -> Result<Json<Account>, ApiError> {
    let ApiJson(update) = body?;
    let id = path.id()?;
    let actor = operator(&client);
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
            &actor,
        )
        .await?;
    if let Some(restricted) = update.restricted {
        account = state
            .store
            .set_restricted(&id, restricted, RestrictedBy::Admin, &actor)
            .await?;
    }
    Ok(Json(account.into()))
}

/// Delete an account
///
/// As `DELETE /v1/account`: keys revoked and data hidden at once, purged after
/// `--deletion-grace-days`. Asking again keeps the first dates.
#[utoipa::path(
    delete,
    path = "/v1/admin/accounts/{id}",
    operation_id = "adminDeleteAccount",
    params(AccountPath),
    responses(
        (status = 202, description = "Deletion accepted; the account with `deleted_at` and `purge_after`.", body = Account),
        OneAccount,
    ),
)]
pub async fn delete_account(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiPath(path): ApiPath<AccountPath>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    let account = state
        .store
        .request_deletion(&path.id()?, state.access.deletion_grace, &operator(&client))
        .await?;
    tracing::info!(account_id = %account.id, "account deletion requested by the operator");
    Ok((StatusCode::ACCEPTED, Json(account.into())))
}

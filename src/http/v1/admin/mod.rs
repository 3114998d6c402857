//! `/v1/admin/`: the operator's routes behind `--admin-token` (accounts, their keys, meter
//! reports, the audit log, request analytics). They exist only when a token is set.

pub mod accounts;
pub mod analytics;
pub mod audit;
pub mod billing;
pub mod keys;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error_set;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::error_set::AdminLayer;
use crate::http::extract::known;
use crate::store::ids::AccountId;

/// The routes behind the admin token.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(accounts::create_account, accounts::list_accounts))
        .routes(routes!(
            accounts::show_account,
            accounts::update_account,
            accounts::delete_account
        ))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(billing::list_reports))
        .routes(routes!(billing::retry_report))
        .routes(routes!(audit::list_audit_events))
        .routes(routes!(analytics::requests))
}

error_set!(
    /// Every admin route: the token layer, and a 404 while the admin API is off.
    pub AdminRoute: AdminLayer {
        NotFound => "The admin API is off: the server runs without `--admin-token`.",
    }
);

error_set!(
    /// An admin route that names one account.
    pub OneAccount: AdminRoute {
        BadRequest => "An `id` that is not UTF-8 once percent-decoded (`invalid_path`).",
        NotFound => "No such account (purged or never created), or the admin API is off (no `--admin-token`).",
    }
);

/// The path of one account.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountPath {
    /// The account's id.
    #[param(example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub id: String,
}

impl AccountPath {
    pub fn id(&self) -> Result<AccountId, ApiError> {
        known(&self.id, AccountId::parse, "account")
    }
}

//! `/v1/descriptions`: describe images (`create`), read the wire forms (`body`), the stored
//! descriptions (`stored`) and their export (`export`). Each route is registered once, here.

pub mod body;
pub mod create;
pub mod export;
pub mod stored;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

/// The routes behind the API key.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create::create, stored::list))
        .routes(routes!(create::create_batch))
        .routes(routes!(export::export))
        .routes(routes!(stored::retrieve, stored::edit, stored::delete))
        .routes(routes!(stored::versions))
}

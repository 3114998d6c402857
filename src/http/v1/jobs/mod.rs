//! `/v1/jobs`: bulk jobs. Submit (`create`: JSON, CSV or JSON Lines), follow and cancel
//! (`read`), stream the results (`results`), and the webhooks' secret and deliveries
//! (`webhooks`); what clients see is `resources`. Each route is registered once, here.

pub mod create;
pub mod read;
pub mod resources;
pub mod results;
pub mod webhooks;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

/// The routes behind the API key.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create::create, read::list))
        .routes(routes!(read::retrieve))
        .routes(routes!(read::cancel))
        .routes(routes!(results::results))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::rotate_secret))
}

//! `/v1/admin/analytics/requests`: the operator's aggregate of API traffic per day and route,
//! from the request log, without the accounts that object to analytics or whose processing is
//! restricted, and without any account, key, address or user agent.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminRoute;
use crate::error_set;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::v1::resources::rate;
use crate::store::now_ms;
use crate::store::usage::{MS_PER_DAY, format_day, parse_day};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// The first day, `YYYY-MM-DD` UTC, inclusive (default: 29 days before `to`).
    #[param(example = "2026-11-01")]
    from: Option<String>,
    /// The last day, inclusive (default: today). At most 366 days after `from`.
    #[param(example = "2026-11-30")]
    to: Option<String>,
}

/// Requests on one route on one day, summed over the accounts that allow analytics.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteDay {
    /// `YYYY-MM-DD`, UTC.
    #[schema(example = "2026-11-29")]
    pub date: String,
    /// The route template.
    #[schema(example = "/v1/descriptions")]
    pub route: String,
    pub requests: i64,
    /// Answered with a status of 400 or more.
    pub errors: i64,
    pub error_rate: f64,
    pub latency_p50_ms: Option<i64>,
    pub latency_p95_ms: Option<i64>,
}

/// The aggregate.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestAnalytics {
    /// Always `request_analytics`.
    #[schema(value_type = String, example = "request_analytics")]
    pub object: &'static str,
    pub from: String,
    pub to: String,
    /// Days and routes with requests, oldest first, then by route.
    pub data: Vec<RouteDay>,
}

error_set!(
    pub AnalyticsErrors: AdminRoute {
        BadRequest => "Invalid query: an unknown parameter, a date that is not `YYYY-MM-DD`, `from` after `to`, or more than 366 days.",
    }
);

/// API traffic per day and route
///
/// Requests, errors and latency percentiles per UTC day and route, summed over every account
/// except those that object to analytics (`objected_at`) or whose processing is restricted,
/// whenever their requests were made. No account, key, address or user agent is in it.
#[utoipa::path(
    get,
    path = "/v1/admin/analytics/requests",
    operation_id = "adminRequestAnalytics",
    params(AnalyticsQuery),
    responses(
        (status = 200, description = "The aggregate.", body = RequestAnalytics),
        AnalyticsErrors,
    ),
)]
pub async fn requests(
    State(state): State<AppState>,
    query: Result<ApiQuery<AnalyticsQuery>, ApiError>,
) -> Result<Json<RequestAnalytics>, ApiError> {
    let ApiQuery(query) = query?;
    let day = |value: Option<&str>, default: i64, name: &str| match value {
        None => Ok(default),
        Some(text) => parse_day(text).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_date",
                format!("`{name}` must be a date as YYYY-MM-DD, got `{text}`"),
            )
        }),
    };
    let today = now_ms().div_euclid(MS_PER_DAY);
    let to = day(query.to.as_deref(), today, "to")?;
    let from = day(query.from.as_deref(), to - 29, "from")?;
    let rows = state.store.request_analytics(from, to).await?;
    Ok(Json(RequestAnalytics {
        object: "request_analytics",
        from: format_day(from),
        to: format_day(to),
        data: rows
            .into_iter()
            .map(|row| RouteDay {
                error_rate: rate(row.errors, row.requests),
                date: row.date,
                route: row.route,
                requests: row.requests,
                errors: row.errors,
                latency_p50_ms: row.latency_p50_ms,
                latency_p95_ms: row.latency_p95_ms,
            })
            .collect(),
    }))
}

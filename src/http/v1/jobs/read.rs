//! A job as it goes: list the account's jobs, retrieve one, cancel one.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::resources::{Job, JobPage};
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::{ApiPath, ApiQuery, cursor, known, page_limit};
use crate::store::ids::JobId;
use crate::store::keys::Scope;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Jobs per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last job of the previous page.
    #[param(example = "job_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
}

error_set!(
    pub ListErrors: ApiKeyLayer {
        BadRequest => "Invalid query: an unknown parameter, `limit` outside 1 to 100, or a `starting_after` that is not a job id.",
    }
);

/// List jobs
///
/// The account's jobs, newest first, a page at a time: pass the last `id` as `starting_after`
/// for the next page while `has_more` is true. Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "listJobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs, newest first.", body = JobPage),
        ListErrors,
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<ApiQuery<ListQuery>, ApiError>,
) -> Result<Json<JobPage>, ApiError> {
    caller.require(Scope::Read)?;
    let ApiQuery(query) = query?;
    let limit = page_limit(query.limit)?;
    let starting_after = cursor(query.starting_after, JobId::PREFIX)?
        .map(|id| known(&id, JobId::parse, "job"))
        .transpose()?;
    let (jobs, has_more) = state
        .store
        .list_jobs(caller.account_id(), starting_after.as_ref(), limit)
        .await?;
    Ok(Json(JobPage::new(jobs, has_more)))
}

/// The path of one job.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// The job's id.
    #[param(example = "job_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    id: String,
}

impl JobPath {
    /// Asked after the scope check: a key without the scope learns nothing from the id's form.
    pub fn id(&self) -> Result<JobId, ApiError> {
        known(&self.id, JobId::parse, "job")
    }
}

error_set!(
    pub OneErrors: ApiKeyLayer {
        BadRequest => "The `id` is not UTF-8 once percent-decoded (`invalid_path`).",
        NotFound => "No such job in this account.",
    }
);

/// Retrieve a job
///
/// The job with its status and counts. Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "retrieveJob",
    params(JobPath),
    responses(
        (status = 200, description = "The job.", body = Job),
        OneErrors,
    ),
)]
pub async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
) -> Result<Json<Job>, ApiError> {
    caller.require(Scope::Read)?;
    let job = state
        .store
        .get_job(caller.account_id(), &path.id()?)
        .await?;
    Ok(Json(job.into()))
}

/// Cancel a job
///
/// Items not finished are never started (an item being described now is dropped unstored);
/// what is done stays done, stored and billed. A webhook `job.cancelled` follows when the job
/// has a `webhook_url`. Cancelling a finished job answers it as it is. Scope: `describe`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    operation_id = "cancelJob",
    params(JobPath),
    responses(
        (status = 200, description = "The job, `cancelled` (or as it finished).", body = Job),
        OneErrors,
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
) -> Result<Json<Job>, ApiError> {
    caller.require(Scope::Describe)?;
    let (job, _) = state
        .store
        .cancel_job(caller.account_id(), &path.id()?)
        .await?;
    Ok(Json(job.into()))
}

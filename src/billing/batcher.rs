//! Ledger → outbox: groups unreported usage rows per account, meter and UTC hour into immutable
//! meter reports (one report = one Stripe meter event), and creates Stripe customers when asked.
//! Billing supplies the rules (meter event names, Stripe's time window); the SQL is
//! `Store::build_meter_reports` in `store::meter_reports`.

use super::{BillingError, MeterNames};
use crate::store::Store;
use crate::store::meter_reports::BatchReport;

/// Stripe refuses timestamps older than 35 days; leave a day of margin.
pub const MAX_EVENT_AGE_SECS: i64 = 34 * 86_400;

/// Turns every unreported ledger row of an account with a Stripe customer into meter reports
/// named by `meters`; usage too old for Stripe becomes an `expired` report for an operator.
pub async fn build_reports(
    store: &Store,
    meters: &MeterNames,
) -> Result<BatchReport, BillingError> {
    Ok(store
        .build_meter_reports(&meters.by_kind(), MAX_EVENT_AGE_SECS)
        .await?)
}

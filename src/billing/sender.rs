//! Outbox → Stripe: claims due meter reports with a lease, sends each outside any transaction,
//! and moves the row on by the outcome (sent, retry with backoff, failed). What each outcome
//! writes is decided here; the SQL (and the operator's view of dead reports and their retry) is
//! in `store::meter_reports`.

use super::BillingError;
use super::batcher::MAX_EVENT_AGE_SECS;
use super::stripe::{MeterEvent, Outcome};
use crate::store::Store;
use crate::store::meter_reports::{ClaimedReport, Finalized, ReportFinal};

/// An in-doubt row older than this stops retrying: Stripe's identifier dedup lasts "at least
/// 24 hours", so a later resend could be counted twice. An operator reconciles it.
const IN_DOUBT_LIMIT_MS: i64 = 20 * 3_600_000;

/// A report as the sender holds it between claim and finalize.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub event: MeterEvent,
    pub attempts: i64,
}

impl From<ClaimedReport> for Claimed {
    fn from(row: ClaimedReport) -> Self {
        Claimed {
            event: MeterEvent {
                identifier: row.id.clone(),
                event_name: row.event_name,
                customer: row.stripe_customer_id,
                value: row.value,
                timestamp: row.event_ts,
                idempotency_key: format!("{}:{}", row.id, row.key_gen),
            },
            id: row.id,
            attempts: row.attempts,
        }
    }
}

/// Claims up to `limit` due reports for `owner` until `lease_ms` from now (database clock), as
/// meter events ready to send: the report's id is the event's identifier, and its key
/// generation makes the Idempotency-Key.
pub async fn claim(
    store: &Store,
    owner: &str,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Claimed>, BillingError> {
    let rows = store.claim_meter_reports(owner, lease_ms, limit).await?;
    Ok(rows.into_iter().map(Claimed::from).collect())
}

/// Whether the report is too old for Stripe to take (it refuses timestamps past 35 days).
pub fn too_old(claimed: &Claimed, now_secs: i64) -> bool {
    now_secs - claimed.event.timestamp > MAX_EVENT_AGE_SECS
}

/// What the row does next after `outcome`; `retry_delay_ms` is when it is due again.
pub fn report_final(outcome: &Outcome, retry_delay_ms: i64) -> ReportFinal<'_> {
    let result = outcome.label();
    match outcome {
        Outcome::Sent { livemode } => ReportFinal::Sent {
            livemode: *livemode,
            result,
        },
        Outcome::Duplicate => ReportFinal::Sent {
            livemode: None,
            result,
        },
        Outcome::Retry {
            new_key,
            in_doubt,
            reason,
        } => ReportFinal::Retry {
            delay_ms: retry_delay_ms,
            new_key: *new_key,
            in_doubt: *in_doubt,
            in_doubt_limit_ms: IN_DOUBT_LIMIT_MS,
            result,
            error: reason,
        },
        // Not the row's fault: give the attempt back; the replica pauses, the row stays due.
        Outcome::CircuitOpen { reason } => ReportFinal::GiveBack {
            delay_ms: retry_delay_ms,
            result,
            error: reason,
        },
        Outcome::Failed { reason } => ReportFinal::Failed {
            result,
            error: reason,
        },
    }
}

/// Moves a claimed row on by its outcome. Guarded by the lease owner: when another replica took
/// the row over after the lease ran out, this changes nothing (its resend is deduplicated).
pub async fn finalize(
    store: &Store,
    owner: &str,
    claimed: &Claimed,
    outcome: &Outcome,
    retry_delay_ms: i64,
) -> Result<Finalized, BillingError> {
    Ok(store
        .finalize_meter_report(owner, &claimed.id, report_final(outcome, retry_delay_ms))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_maps_to_what_the_row_does_next() {
        let sent = Outcome::Sent {
            livemode: Some(true),
        };
        assert_eq!(
            report_final(&sent, 5),
            ReportFinal::Sent {
                livemode: Some(true),
                result: "sent"
            }
        );
        assert_eq!(
            report_final(&Outcome::Duplicate, 5),
            ReportFinal::Sent {
                livemode: None,
                result: "duplicate"
            }
        );
        let in_doubt = Outcome::Retry {
            new_key: true,
            in_doubt: true,
            reason: "502".into(),
        };
        assert_eq!(
            report_final(&in_doubt, 5),
            ReportFinal::Retry {
                delay_ms: 5,
                new_key: true,
                in_doubt: true,
                in_doubt_limit_ms: IN_DOUBT_LIMIT_MS,
                result: "in_doubt",
                error: "502"
            }
        );
        let circuit = Outcome::CircuitOpen {
            reason: "401".into(),
        };
        assert_eq!(
            report_final(&circuit, 0),
            ReportFinal::GiveBack {
                delay_ms: 0,
                result: "circuit_open",
                error: "401"
            }
        );
        let failed = Outcome::Failed {
            reason: "no such customer".into(),
        };
        assert_eq!(
            report_final(&failed, 5),
            ReportFinal::Failed {
                result: "failed",
                error: "no such customer"
            }
        );
    }
}

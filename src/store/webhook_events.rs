//! Processed Stripe webhook events (`stripe_webhook_events`): each event id is recorded once, in
//! the same transaction as its effect on accounts and meter reports, so a redelivery does nothing.
//! Which effect an event has is billing's decision ([`WebhookEffect`]).

use sqlx::Row;

use super::audit::{self, Actor, AuditEvent, action};
use super::ids::AccountId;
use super::{Result, Store};

/// What an event does besides being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookEffect<'a> {
    /// Nothing: recorded so a redelivery is not looked at again.
    None,
    /// Stripe deleted this customer: its accounts are unmapped and their pending reports failed.
    CustomerDeleted { customer: &'a str },
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Seen before: nothing done.
    Duplicate,
    /// Not an event billing acts on; recorded so a redelivery is not looked at again.
    Ignored,
    /// `customer.deleted`: the accounts unmapped and the pending reports failed.
    CustomerDeleted { accounts: u64, reports: u64 },
}

impl Store {
    /// Records event `event_id` of type `event_type` and applies `effect`, in one transaction:
    /// an id recorded before changes nothing ([`Applied::Duplicate`]).
    pub async fn apply_webhook_event(
        &self,
        event_id: &str,
        event_type: &str,
        effect: WebhookEffect<'_>,
    ) -> Result<Applied> {
        let now = self.backend().now_ms();
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO stripe_webhook_events (event_id, type, received_at) VALUES ($1, $2, {now}) ON CONFLICT (event_id) DO NOTHING"
        ))
        .bind(event_id)
        .bind(event_type)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Applied::Duplicate);
        }
        let applied = match effect {
            WebhookEffect::CustomerDeleted { customer } => {
                // Later events for a deleted customer fail at Stripe, asynchronously: keep the usage
                // in the ledger (unreported, for manual invoicing or a new customer) instead.
                let unmapped = sqlx::query(&format!(
                    "UPDATE accounts SET stripe_customer_id = NULL, stripe_customer_deleted_at = {now} WHERE stripe_customer_id = $1 RETURNING id"
                ))
                .bind(customer)
                .fetch_all(&mut *tx)
                .await?;
                let accounts = unmapped.len() as u64;
                let stripe = Actor {
                    id: Some(event_id.to_string()),
                    ..Actor::stripe()
                };
                for row in unmapped {
                    let account_id = AccountId::trusted(row.try_get("id")?);
                    let event = AuditEvent::new(
                        Some(&account_id),
                        &stripe,
                        action::BILLING_CUSTOMER_DELETED,
                    )
                    .details(serde_json::json!({ "stripe_customer_id": customer }));
                    audit::record(&mut tx, &event).await?;
                }
                let reports = sqlx::query(
                    "UPDATE meter_reports SET status = 'failed', last_result = 'customer_deleted', last_error = 'the Stripe customer was deleted', lease_owner = NULL, lease_until = NULL \
                     WHERE stripe_customer_id = $1 AND status = 'pending'",
                )
                .bind(customer)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tracing::warn!(
                    customer,
                    accounts,
                    reports,
                    "Stripe deleted a customer: its accounts are unmapped, their usage waits"
                );
                Applied::CustomerDeleted { accounts, reports }
            }
            WebhookEffect::None => Applied::Ignored,
        };
        tx.commit().await?;
        Ok(applied)
    }
}

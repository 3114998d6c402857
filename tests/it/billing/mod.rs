//! Stripe metered billing: end to end against the stateful fake Stripe (`end_to_end`), and the
//! batcher and sender on both databases directly (`outbox`).

mod end_to_end;
mod outbox;

use sqlx::Row;

/// The `n` column of the one row `sql` selects.
async fn count(store: &altimage::store::Store, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

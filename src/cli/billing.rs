//! `serve`'s Stripe billing flags and their conversion into the billing loop's and the webhook's
//! settings.

use std::time::Duration;

use clap::Args;

use crate::billing::webhook::WebhookConfig;
use crate::billing::{BillingConfig, BillingError, MeterNames};

/// Stripe metered billing. Without a secret key billing is off: usage is still recorded in the
/// ledger (and shown by /v1/usage), nothing is sent.
#[derive(Debug, Clone, Args)]
pub struct BillingArgs {
    /// Stripe secret key (`sk_…`, or a restricted `rk_…` allowed to write meter events and, with
    /// --stripe-create-customers, customers). Unset, the conventional STRIPE_SECRET_KEY variable
    /// is read; neither set: billing is off.
    #[arg(long, env = "ALTIMAGE_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Webhook endpoint secret (`whsec_…`); unset, STRIPE_WEBHOOK_SECRET is read. Set,
    /// `POST /v1/stripe/webhook` accepts signed events (`customer.deleted` unmaps the account);
    /// unset, the route does not exist.
    #[arg(long, env = "ALTIMAGE_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,

    /// How far a webhook signature's timestamp may be from now. Longer tolerates clock skew;
    /// shorter narrows the window for replaying a captured delivery.
    #[arg(
        long,
        env = "ALTIMAGE_STRIPE_WEBHOOK_TOLERANCE_SECS",
        default_value_t = 300
    )]
    pub stripe_webhook_tolerance_secs: u64,

    /// Stripe API base URL. Only tests and proxies change it.
    #[arg(
        long,
        env = "ALTIMAGE_STRIPE_API_BASE",
        default_value = "https://api.stripe.com/"
    )]
    pub stripe_api_base: String,

    /// Time limit of one Stripe request. A report's lease is twice this plus 10 s, so a longer
    /// limit also delays another replica's takeover after a crash.
    #[arg(long, env = "ALTIMAGE_STRIPE_TIMEOUT_MS", default_value_t = 20_000)]
    pub stripe_timeout_ms: u64,

    /// How often usage is grouped into meter reports and sent. Shorter: usage shows in Stripe
    /// sooner; longer: fewer Stripe calls (at most one per account, meter and hour per flush).
    #[arg(long, env = "ALTIMAGE_BILLING_FLUSH_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub billing_flush_secs: u64,

    /// Longest wait between two attempts of one report (backoff starts at 2 s and doubles, with
    /// jitter). Shorter recovers sooner after an outage; longer spares a struggling Stripe.
    #[arg(long, env = "ALTIMAGE_BILLING_RETRY_MAX_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub billing_retry_max_secs: u64,

    /// Meter event name for descriptions created (the meter's `event_name` in Stripe).
    #[arg(
        long,
        env = "ALTIMAGE_STRIPE_METER_CREATED",
        default_value = "alt_text_description_created"
    )]
    pub stripe_meter_created: String,

    /// Meter event name for descriptions retrieved.
    #[arg(
        long,
        env = "ALTIMAGE_STRIPE_METER_RETRIEVED",
        default_value = "alt_text_description_retrieved"
    )]
    pub stripe_meter_retrieved: String,

    /// Create a Stripe customer for each account with usage and none mapped. Off: an operator
    /// maps one (admin API or `altimage accounts`), and the account's usage waits until then.
    #[arg(long, env = "ALTIMAGE_STRIPE_CREATE_CUSTOMERS")]
    pub stripe_create_customers: bool,
}

/// The flag (or its ALTIMAGE_ variable), else the variable Stripe's own tools and docs use, so
/// an environment already set up for Stripe works unchanged.
fn flag_or_env(flag: &Option<String>, conventional: &str) -> Option<String> {
    flag.clone()
        .or_else(|| std::env::var(conventional).ok())
        .filter(|value| !value.trim().is_empty())
}

impl BillingArgs {
    /// The loop's settings, or `None` when billing is off (no key).
    pub fn config(&self) -> Result<Option<BillingConfig>, BillingError> {
        let Some(secret_key) = flag_or_env(&self.stripe_secret_key, "STRIPE_SECRET_KEY") else {
            return Ok(None);
        };
        for (flag, name) in [
            ("--stripe-meter-created", &self.stripe_meter_created),
            ("--stripe-meter-retrieved", &self.stripe_meter_retrieved),
        ] {
            if name.is_empty() || name.len() > 100 {
                return Err(BillingError::Config(format!(
                    "{flag} must be 1 to 100 characters (Stripe's limit for event names)"
                )));
            }
        }
        if self.stripe_meter_created == self.stripe_meter_retrieved {
            return Err(BillingError::Config(
                "--stripe-meter-created and --stripe-meter-retrieved must differ: one Stripe meter per event name".into(),
            ));
        }
        Ok(Some(BillingConfig {
            secret_key,
            api_base: self.stripe_api_base.clone(),
            timeout: Duration::from_millis(self.stripe_timeout_ms.max(100)),
            flush_interval: Duration::from_secs(self.billing_flush_secs),
            retry_max: Duration::from_secs(self.billing_retry_max_secs),
            meters: MeterNames {
                created: self.stripe_meter_created.clone(),
                retrieved: self.stripe_meter_retrieved.clone(),
            },
            create_customers: self.stripe_create_customers,
        }))
    }

    /// The webhook settings, or `None` without a secret.
    pub fn webhook(&self) -> Option<WebhookConfig> {
        let secret = flag_or_env(&self.stripe_webhook_secret, "STRIPE_WEBHOOK_SECRET")?;
        Some(WebhookConfig {
            secret,
            tolerance: Duration::from_secs(self.stripe_webhook_tolerance_secs),
        })
    }
}

//! `altimage serve`: start-up order (listener, database, model, warm-up, engine), then graceful
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::billing::Billing;
use crate::config::ServeArgs;
use crate::describe::{DescribeService, Validator};
use crate::engine::{Engine, EngineConfig};
use crate::fetch::{FetchPolicy, ImageFetcher};
use crate::http::ops::{Info, InfoLimits};
use crate::http::ratelimit::RateLimiter;
use crate::http::server::ConnectionLimits;
use crate::http::{Access, AppState, HttpLimits, router, success_statuses};
use crate::metrics::Metrics;
use crate::model::preprocess::ImageLimits;
use crate::store::retention::{RetentionPolicy, purge_loop};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let load = args.model.load_options()?;
    // Checked before anything slow starts, so a bad billing flag fails in a second.
    let billing_config = args.billing.config()?;
    let prepare_threads = match args.prepare_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    };
    let retry_after = Duration::from_secs(args.retry_after_secs);
    let config = EngineConfig {
        max_concurrent_images: args.max_concurrent_images,
        max_batch_size: args.max_batch_size,
        max_batch_tokens: args.max_batch_tokens,
        max_batch_delay: Duration::from_millis(args.max_batch_delay_ms),
        max_queue_time: Duration::from_millis(args.max_queue_time_ms),
        workers: args.workers,
        prepare_threads,
        image_limits: ImageLimits {
            max_pixels: args.max_image_pixels,
        },
        max_num_beams: args.max_num_beams,
        retry_after,
    };
    let metrics = Arc::new(Metrics::new(args.max_batch_size, &success_statuses()));
    let connection_limits = ConnectionLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
        retry_after,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--listen, env ALTIMAGE_LISTEN)",
                args.listen
            )
        })?;
    // Until the model is loaded and warmed up, answer probes (live 200, ready 503) instead of
    // refusing connections, so orchestrators can tell "starting" from "dead".
    let (started_sender, started_receiver) = tokio::sync::oneshot::channel::<()>();
    let starting = {
        let std_listener = listener.into_std()?;
        let early = tokio::net::TcpListener::from_std(std_listener.try_clone()?)?;
        let router = crate::http::starting_router(metrics.clone(), retry_after);
        let task = tokio::spawn(crate::http::server::serve(
            early,
            router,
            connection_limits,
            metrics.clone(),
            async move {
                let _ = started_receiver.await;
            },
        ));
        (task, std_listener)
    };
    let address = starting.1.local_addr()?;
    // The database first: a wrong URL should fail in a second, not after the model loaded.
    let store = crate::manage::open_store(&args.store).await?;
    if !args.no_bootstrap {
        crate::manage::bootstrap(&store, &args.store.data_dir, &address.to_string()).await?;
    }
    tracing::info!(%address, database = store.backend().name(), "listening; loading the model");
    // Loading and warm-up block for seconds to minutes: keep them off the async workers.
    let engine = {
        let (config, load, metrics) = (config.clone(), load.clone(), metrics.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _guard = runtime.enter();
            Engine::start(config, &load, metrics)
        })
        .await
        .context("model start-up panicked")??
    };
    let fetcher = ImageFetcher::new(FetchPolicy {
        max_bytes: args.max_image_bytes,
        timeout: Duration::from_millis(args.image_url_timeout_ms),
        allow_private: args.allow_private_image_urls,
        ..FetchPolicy::default()
    });
    let model_name = args
        .model
        .model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| args.model.model_dir.display().to_string());
    let info = Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        model: model_name.clone(),
        device: args.model.device.to_string(),
        dtype: format!("{:?}", args.model.dtype).to_lowercase(),
        workers: args.workers,
        healthy_workers: 0,
        ready: false,
        database: store.backend().name().to_string(),
        admin_api: args.admin_token.as_deref().is_some_and(|t| !t.is_empty()),
        billing: billing_config.is_some(),
        limits: InfoLimits {
            max_batch_size: config.max_batch_size,
            max_batch_tokens: config.max_batch_tokens,
            max_batch_delay_ms: args.max_batch_delay_ms,
            max_queue_time_ms: args.max_queue_time_ms,
            max_concurrent_images: config.max_concurrent_images,
            max_body_bytes: args.max_body_bytes,
            max_image_bytes: args.max_image_bytes,
            max_image_pixels: args.max_image_pixels,
            max_images_per_request: args.max_images_per_request,
            max_connections: args.max_connections,
            header_read_timeout_secs: args.header_read_timeout_secs,
            body_read_timeout_secs: args.body_read_timeout_secs,
            max_new_tokens: engine.card().max_new_tokens,
            max_num_beams: config.max_num_beams.min(engine.card().max_num_beams),
            rate_limit_per_minute: args.rate_limit_per_minute,
        },
    };
    let access = Access {
        rate_limiter: RateLimiter::new(),
        rate_limit_per_minute: args.rate_limit_per_minute,
        admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
        deletion_grace: Duration::from_secs(args.deletion_grace_days * 86_400),
    };
    let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
    let purge = tokio::spawn(purge_loop(
        store.clone(),
        // With billing off nothing is ever reported, so the 2-year rule applies to every ledger
        // row; with billing on, unreported rows wait for the sender.
        RetentionPolicy::standard(billing_config.is_some()),
        Duration::from_secs(args.purge_interval_secs),
        jobs_stopped,
    ));
    let billing = match billing_config {
        Some(config) => {
            tracing::info!(api_base = %config.api_base, "billing on: usage is reported to Stripe");
            Some(Billing::start(store.clone(), config, metrics.clone())?)
        }
        None => {
            tracing::info!(
                "billing off (no --stripe-secret-key or STRIPE_SECRET_KEY): usage is recorded, not sent"
            );
            None
        }
    };
    let describe = DescribeService::new(
        engine.clone(),
        store.clone(),
        Arc::new(fetcher),
        Validator::new(engine.card().clone(), config.max_num_beams),
        model_name,
        args.max_image_bytes,
    );
    let state = AppState {
        describe,
        engine: engine.clone(),
        store: store.clone(),
        access: Arc::new(access),
        limits: HttpLimits {
            max_body_bytes: args.max_body_bytes,
            max_images_per_request: args.max_images_per_request,
            body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
        },
        info: Arc::new(info),
        billing: billing.as_ref().map(|(handle, _)| handle.clone()),
        stripe_webhook: args.billing.webhook().map(Arc::new),
    };
    let _ = started_sender.send(());
    starting.0.await.context("start-up server panicked")?;
    let listener = tokio::net::TcpListener::from_std(starting.1)?;
    tracing::info!(address = %listener.local_addr()?, "ready");

    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_secs);
    let drain_engine = engine.clone();
    let (drained_sender, mut drained_receiver) = tokio::sync::watch::channel(false);
    let drained = async move {
        crate::shutdown::signal().await;
        tracing::info!(
            timeout_secs = shutdown_timeout.as_secs(),
            "draining: new work refused, finishing in-flight work"
        );
        if !drain_engine.drain(shutdown_timeout).await {
            tracing::warn!("shutdown timeout reached with work still in flight");
        }
        let _ = drained_sender.send(true);
    };
    let server = crate::http::server::serve(
        listener,
        router(state),
        connection_limits,
        metrics.clone(),
        drained,
    );
    // After the drain, connections that still hang (a client that never reads) must not keep
    // the process alive past the timeout the operator chose.
    let hard_stop = async move {
        let _ = drained_receiver.wait_for(|done| *done).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tokio::select! {
        () = server => {}
        _ = hard_stop => tracing::warn!("connections still open after the drain; exiting"),
    }
    let _ = stop_jobs.send(true);
    let _ = purge.await;
    if let Some((handle, task)) = billing {
        // Requests in flight to Stripe finish (each is bounded by --stripe-timeout-ms); claimed
        // reports not yet sent are released for the next process.
        handle.shutdown();
        let _ = task.await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

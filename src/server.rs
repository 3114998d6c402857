//! `altimage serve`: start-up order (certificate, listener, database, bootstrap, model + warm-up,
//! engine, retention, billing, bulk jobs, request log), then graceful shutdown; and the database
//! start-up helpers that the operator commands share.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::billing::Billing;
use crate::cli::StoreArgs;
use crate::cli::serve::ServeArgs;
use crate::describe::{DescribeService, ServedModel};
use crate::engine::Engine;
use crate::fetch::ImageFetcher;
use crate::http::request_log::RequestLog;
use crate::http::tls::Tls;
use crate::http::{AppState, router, success_statuses};
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::accounts::NewAccount;
use crate::store::keys::Scope;
use crate::store::retention::{RetentionPolicy, purge_loop};

/// The file a first start writes the bootstrap key to.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-api-key";

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Every model's files found and names checked before anything slow starts.
    let names = args.model.model_names()?;
    let loads = args
        .model
        .model_dir
        .iter()
        .map(|dir| args.model.load_options_for(dir))
        .collect::<Result<Vec<_>, _>>()?;
    // Checked before anything slow starts, so a bad billing flag fails in a second.
    let billing_config = args.billing.config()?;
    let config = args.engine.config();
    let retry_after = config.retry_after;
    let metrics = Arc::new(Metrics::new(config.max_batch_size, &success_statuses()));
    let connection_limits = args.http.connection_limits(retry_after);
    // Stops the background tasks (retention, certificate reloads, the request log's writer)
    // once the server has stopped.
    let (stop_jobs, jobs_stopped) = tokio::sync::watch::channel(false);
    // A certificate that does not load fails start-up at once, naming the flag.
    let (tls, tls_task) = match args.security.tls_files() {
        Some(files) => {
            let (tls, task) = Tls::start(files, metrics.clone(), jobs_stopped.clone())?;
            (Some(tls), Some(task))
        }
        None => (None, None),
    };
    let web = Arc::new(args.security.web_policy());
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
        let router = crate::http::starting_router(metrics.clone(), retry_after).layer(
            axum::middleware::from_fn_with_state(
                web.clone(),
                crate::http::headers::security_headers,
            ),
        );
        let task = tokio::spawn(crate::http::server::serve(
            early,
            router,
            connection_limits,
            metrics.clone(),
            tls.clone(),
            async move {
                let _ = started_receiver.await;
            },
        ));
        (task, std_listener)
    };
    let address = starting.1.local_addr()?;
    // The database first: a wrong URL should fail in a second, not after the model loaded.
    let store = open_store(&args.store).await?;
    let console = args
        .console
        .build(
            &args.store.data_dir,
            Duration::from_secs(args.access.deletion_grace_days * 86_400),
        )?
        .map(Arc::new);
    if !args.no_bootstrap {
        bootstrap(&store, &args.store.data_dir, &address.to_string()).await?;
    }
    tracing::info!(%address, tls = tls.is_some(), database = store.backend().name(), "listening; loading the model");
    // Loading and warm-up block for seconds to minutes: keep them off the async workers. Each
    // model gets its own engine: workers, queue and admission.
    let mut models = Vec::with_capacity(loads.len());
    for (name, load) in names.into_iter().zip(loads) {
        let (config, metrics) = (config.clone(), metrics.model(&name));
        let runtime = tokio::runtime::Handle::current();
        tracing::info!(model = %name, dir = %load.model_dir.display(), "loading");
        let engine = tokio::task::spawn_blocking(move || {
            let _guard = runtime.enter();
            Engine::start(config, &load, metrics)
        })
        .await
        .context("model start-up panicked")?
        .with_context(|| format!("model `{name}` (--model-dir)"))?;
        models.push(ServedModel { name, engine });
    }
    let fetcher = ImageFetcher::new(args.fetch.config());
    let cards: Vec<_> = models
        .iter()
        .map(|m| (m.name.clone(), m.engine.card().clone()))
        .collect();
    let info = args.info(store.backend().name(), billing_config.is_some(), &cards);
    let purge = tokio::spawn(purge_loop(
        store.clone(),
        // With billing off nothing is ever reported, so the 2-year rule applies to every ledger
        // row; with billing on, unreported rows wait for the sender.
        RetentionPolicy::standard(billing_config.is_some()),
        args.retention.purge_interval(),
        jobs_stopped.clone(),
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
    let fetcher = Arc::new(fetcher);
    let describe = DescribeService::new(
        models.clone(),
        store.clone(),
        fetcher.clone(),
        config.max_num_beams,
        args.fetch.max_image_bytes,
    );
    // Every replica runs job items and webhook deliveries; leases keep them from doubling.
    let (jobs, jobs_task) = Jobs::start(
        store.clone(),
        describe.clone(),
        fetcher,
        metrics.clone(),
        args.jobs.config(),
    );
    let request_log = (!args.security.no_request_log)
        .then(|| RequestLog::start(store.clone(), metrics.clone(), jobs_stopped.clone()));
    let mut access = args.access.config();
    access.trusted_proxies = args.security.trusted_proxies();
    let state = AppState {
        describe,
        metrics: metrics.clone(),
        store: store.clone(),
        access: Arc::new(access),
        limits: args.http.config(),
        info: Arc::new(info),
        billing: billing.as_ref().map(|(handle, _)| handle.clone()),
        stripe_webhook: args.billing.webhook().map(Arc::new),
        jobs: jobs.clone(),
        console,
        request_log: request_log.as_ref().map(|(log, _)| log.clone()),
        web,
    };
    let _ = started_sender.send(());
    starting.0.await.context("start-up server panicked")?;
    let listener = tokio::net::TcpListener::from_std(starting.1)?;
    tracing::info!(address = %listener.local_addr()?, "ready");

    let shutdown_timeout = args.shutdown_timeout();
    let drain_models = models.clone();
    let drain_jobs = jobs.clone();
    let (drained_sender, mut drained_receiver) = tokio::sync::watch::channel(false);
    let drained = async move {
        crate::shutdown::signal().await;
        tracing::info!(
            timeout_secs = shutdown_timeout.as_secs(),
            "draining: new work refused, finishing in-flight work"
        );
        // Job items stop being claimed; those running finish within the engines' drain.
        drain_jobs.shutdown();
        // Together, so that one timeout bounds them all.
        let drained = futures_util::future::join_all(
            drain_models
                .iter()
                .map(|m| m.engine.drain(shutdown_timeout)),
        )
        .await;
        if drained.contains(&false) {
            tracing::warn!("shutdown timeout reached with work still in flight");
        }
        let _ = drained_sender.send(true);
    };
    let server = crate::http::server::serve(
        listener,
        router(state),
        connection_limits,
        metrics.clone(),
        tls,
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
    if let Some((_, task)) = request_log {
        // The requests answered are written before the database closes.
        let _ = task.await;
    }
    if let Some(task) = tls_task {
        let _ = task.await;
    }
    jobs.shutdown();
    let _ = jobs_task.await;
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

/// Creates the data directory (owner-only), opens the database and applies the migrations.
pub async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    let options = args.options();
    if options.url.starts_with("sqlite:") {
        create_private_dir(&args.data_dir)?;
    }
    let store = Store::connect(&options).await?;
    store.migrate().await?;
    tracing::debug!(backend = store.backend().name(), "database ready");
    Ok(store)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).with_context(|| {
        format!(
            "cannot create the data directory {} (--data-dir, env ALTIMAGE_DATA_DIR)",
            dir.display()
        )
    })
}

/// On an empty database: one account and one all-scope key, the key written to a file only the
/// owner can read (never to the log), and a ready-to-paste request logged.
pub async fn bootstrap(store: &Store, data_dir: &Path, listen: &str) -> anyhow::Result<()> {
    let first = NewAccount {
        name: "default".into(),
        email: "owner@localhost".into(),
        ..NewAccount::default()
    };
    let Some((account, created)) = store
        .create_first_account(first, "bootstrap", &Scope::ALL)
        .await?
    else {
        return Ok(());
    };
    create_private_dir(data_dir)?;
    let path = data_dir.join(BOOTSTRAP_KEY_FILE);
    write_private(&path, &format!("{}\n", created.secret))?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let example = format!(
        "curl -s -H \"Authorization: Bearer $(cat {})\" -H 'Content-Type: image/png' --data-binary @IMAGE.png http://{listen}/v1/descriptions",
        path.display()
    );
    tracing::info!(
        account_id = %account.id,
        key_file = %path.display(),
        example = %example,
        "empty database: created a first account and API key (turn this off with --no-bootstrap)"
    );
    Ok(())
}

fn write_private(path: &PathBuf, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

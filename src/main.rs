//! altimage command line: `serve`, `describe`, `migrate`, `accounts`, `keys`, `jobs`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use altimage::cli::serve::ServeArgs;
use altimage::cli::{Cli, Command, LogFormat, admin};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    let outcome = match &cli.command {
        Command::Describe(args) => altimage::cli::describe::run(args),
        Command::Serve(args) => serve(args.clone()),
        Command::Migrate(args) => admin::migrate(args).map(|()| ExitCode::SUCCESS),
        Command::Accounts(command) => admin::accounts(command).map(|()| ExitCode::SUCCESS),
        Command::Keys(command) => admin::keys(command).map(|()| ExitCode::SUCCESS),
        Command::Jobs(command) => altimage::cli::jobs::run(command),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(altimage::server::run(args))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr so that `describe`'s records on stdout stay machine-readable.
fn init_logging(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

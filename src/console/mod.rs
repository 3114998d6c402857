//! The console for people, in the same binary over the same store: sign-up, login with a second
//! factor, the library and review of descriptions, describing in the browser, API keys, members
//! and security. Pages are rendered on the server and work without JavaScript; every asset is
//! embedded. Mounted under `/console` when `--console` is on.

pub mod assets;
pub mod capability;
pub mod error;
pub mod forms;
pub mod mail;
pub mod pages;
pub mod password;
pub mod render;
pub mod routes;
pub mod seal;
pub mod session;
pub mod throttle;
pub mod totp;

use std::sync::Arc;
use std::time::Duration;

use crate::describe::DescribeService;
use crate::store::Store;

/// Who may create an account from the sign-up page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignupMode {
    /// Anyone with an email address.
    Open,
    /// Only people holding an invitation (the first owner comes from `altimage accounts
    /// create-owner`).
    Invite,
    /// Nobody: the page says so.
    Closed,
}

/// The console's settings (from `cli::console_serve::ConsoleArgs`).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The origin people reach the server at (`https://altimage.example.com`): links in mail,
    /// and the `Origin` that state-changing requests must carry.
    pub public_origin: String,
    pub signup: SignupMode,
    /// A session unused this long ends.
    pub idle: Duration,
    /// A session ends this long after login, used or not.
    pub lifetime: Duration,
    /// Between an account's deletion request and its purge (`--deletion-grace-days`).
    pub deletion_grace: Duration,
}

/// What the console holds beside the API's state. Built once at start-up.
pub struct Console {
    pub config: ConsoleConfig,
    pub seal: seal::SealKey,
    pub mail: mail::Mailer,
    pub passwords: password::Passwords,
}

/// What every console handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pub console: Arc<Console>,
    pub store: Store,
    pub describe: DescribeService,
}

impl ConsoleState {
    pub fn link(&self, path_and_query: &str) -> String {
        format!(
            "{}/console{path_and_query}",
            self.console.config.public_origin
        )
    }
}

pub use routes::router;

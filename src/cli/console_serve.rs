//! `serve`'s console flags and their conversion into the console's settings, checked before
//! anything slow starts (a wrong mail setting fails in a second, not after the model loaded).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::console::{Console, ConsoleConfig, SignupMode};

/// The console for people: whether it runs, who may sign up, how mail leaves, how long
/// sessions last.
#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// Serve the console under /console (sign-up, login with MFA, library and review, keys,
    /// members). Needs --public-url and a way to send mail (--smtp-url or --mail-outbox-dir).
    #[arg(long, env = "ALTIMAGE_CONSOLE")]
    pub console: bool,

    /// The origin people reach this server at, such as https://altimage.example.com: links in
    /// mail point there, and state-changing console requests must come from it. HTTPS, unless
    /// the host is loopback (session cookies are Secure).
    #[arg(long, env = "ALTIMAGE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Who may create an account on the sign-up page: `open` (anyone; fine behind a firewall,
    /// an invitation to abuse on a public GPU server), `invite` (invitations only; the first
    /// owner comes from `altimage accounts create-owner`), `closed`.
    #[arg(long, env = "ALTIMAGE_SIGNUP", value_enum, default_value_t = SignupMode::Invite)]
    pub signup: SignupMode,

    /// SMTP server for the console's mail, such as smtps://user:password@mail.example.com
    /// (or smtp://host:587?tls=required). Takes precedence over --mail-outbox-dir.
    #[arg(long, env = "ALTIMAGE_SMTP_URL")]
    pub smtp_url: Option<String>,

    /// Write the console's mail as .eml files into this directory instead of sending it: for
    /// tests, and for operators without SMTP who hand out links themselves.
    #[arg(long, env = "ALTIMAGE_MAIL_OUTBOX_DIR")]
    pub mail_outbox_dir: Option<PathBuf>,

    /// The sender of the console's mail.
    #[arg(
        long,
        env = "ALTIMAGE_MAIL_FROM",
        default_value = "altimage <no-reply@localhost>"
    )]
    pub mail_from: String,

    /// The 256-bit key (64 hex digits) that seals members' second-factor secrets; created in
    /// --data-dir on first start when absent. Back it up with the database: without it nobody
    /// can pass MFA. Replicas must share it.
    #[arg(long, env = "ALTIMAGE_CONSOLE_SECRET_FILE")]
    pub console_secret_file: Option<PathBuf>,

    /// A console session unused this long ends. Shorter is safer on shared computers; longer
    /// asks people to log in less often.
    #[arg(long, env = "ALTIMAGE_CONSOLE_IDLE_MINUTES", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub console_idle_minutes: u64,

    /// A console session ends this long after login, however active: a stolen cookie is worth
    /// at most this long.
    #[arg(long, env = "ALTIMAGE_CONSOLE_SESSION_HOURS", default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=168))]
    pub console_session_hours: u64,
}

/// The origin of `url` (scheme, host, port), refused unless HTTPS or loopback.
pub fn public_origin(url: &str) -> anyhow::Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let (scheme, rest) = trimmed.split_once("://").with_context(|| {
        format!("--public-url `{url}` must look like https://altimage.example.com")
    })?;
    let scheme = scheme.to_ascii_lowercase();
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        anyhow::bail!(
            "--public-url `{url}` must be an origin only (scheme, host and port), such as https://altimage.example.com"
        );
    }
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default().to_string(),
        None => rest
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase(),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme.as_str() {
        "https" => {}
        "http" if loopback => {}
        "http" => anyhow::bail!(
            "--public-url `{url}` is plain HTTP on a host that is not loopback: browsers drop Secure session cookies there. Serve HTTPS (a proxy in front, or --tls-cert) and give its https:// URL"
        ),
        other => anyhow::bail!("--public-url `{url}` has scheme `{other}`: use https://"),
    }
    Ok(format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

impl ConsoleArgs {
    /// The console, or `None` with `--console` off.
    pub fn build(
        &self,
        data_dir: &Path,
        deletion_grace: Duration,
    ) -> anyhow::Result<Option<Console>> {
        if !self.console {
            return Ok(None);
        }
        let public_url = self
            .public_url
            .as_deref()
            .context("--console needs --public-url (the https:// address people open), for links in mail and the cross-site check")?;
        let config = ConsoleConfig {
            public_origin: public_origin(public_url)?,
            signup: self.signup,
            idle: Duration::from_secs(self.console_idle_minutes * 60),
            lifetime: Duration::from_secs(self.console_session_hours * 3600),
            deletion_grace,
        };
        let key_file = self
            .console_secret_file
            .clone()
            .unwrap_or_else(|| data_dir.join("console-secret"));
        Ok(Some(Console {
            config,
            seal: crate::console::seal::SealKey::load_or_create(&key_file)?,
            mail: crate::console::mail::Mailer::new(
                self.smtp_url.as_deref(),
                self.mail_outbox_dir.clone(),
                &self.mail_from,
            )?,
            // Four argon2 hashes at once: 76 MiB at most, and logins cannot starve inference.
            passwords: crate::console::password::Passwords::new(4),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_is_an_https_origin_or_loopback() {
        assert_eq!(
            public_origin("https://Alt.Example.com/").unwrap(),
            "https://alt.example.com"
        );
        assert_eq!(
            public_origin("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            public_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert_eq!(
            public_origin("http://[::1]:8080").unwrap(),
            "http://[::1]:8080"
        );
        for bad in [
            "http://alt.example.com",
            "https://alt.example.com/console",
            "ftp://x",
            "alt.example.com",
            "https://",
        ] {
            let error = public_origin(bad).unwrap_err().to_string();
            assert!(error.contains("--public-url"), "{bad}: {error}");
        }
    }
}

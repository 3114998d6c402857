//! Mail the console sends (verification, password reset, invitations, security notices), over
//! SMTP (`--smtp-url`) or into an outbox directory as `.eml` files (`--mail-outbox-dir`: tests,
//! and operators without SMTP who hand links out themselves). Transactional mail only: it is
//! sent whatever the user's communication preferences.

use std::path::PathBuf;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the address `{0}` cannot receive mail")]
    Address(String),
    #[error("the mail could not be built: {0}")]
    Build(String),
    #[error("the mail could not be sent: {0} (check --smtp-url or --mail-outbox-dir)")]
    Send(String),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(AsyncFileTransport<Tokio1Executor>),
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

impl Mailer {
    /// SMTP when a URL is given (`smtps://user:pass@host` or `smtp://host:25?tls=required`),
    /// else the outbox directory (created if missing).
    pub fn new(
        smtp_url: Option<&str>,
        outbox: Option<PathBuf>,
        from: &str,
    ) -> anyhow::Result<Mailer> {
        use anyhow::Context as _;
        let from: Mailbox = from.parse().with_context(|| {
            format!(
                "--mail-from `{from}` is not a mailbox such as `altimage <no-reply@example.com>`"
            )
        })?;
        let transport = match (smtp_url, outbox) {
            (Some(url), _) => Transport::Smtp(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("--smtp-url is not a valid SMTP URL (smtps://user:password@host:465)")?
                    .build(),
            ),
            (None, Some(dir)) => {
                std::fs::create_dir_all(&dir).with_context(|| {
                    format!(
                        "cannot create the mail outbox {} (--mail-outbox-dir)",
                        dir.display()
                    )
                })?;
                Transport::Outbox(AsyncFileTransport::<Tokio1Executor>::new(dir))
            }
            (None, None) => anyhow::bail!(
                "the console sends mail (verification, password reset, invitations): set --smtp-url, or --mail-outbox-dir to write it to files"
            ),
        };
        Ok(Mailer { transport, from })
    }

    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Address(to.to_string()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Build(e.to_string()))?;
        match &self.transport {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError::Send(e.to_string())),
            Transport::Outbox(outbox) => outbox
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| MailError::Send(e.to_string())),
        }
    }
}

/// The mails' words, in one place.
pub mod messages {
    pub fn verify(name: &str, link: &str) -> (String, String) {
        (
            "Confirm your email for altimage".into(),
            format!(
                "Hello {name},\n\nconfirm your email address to finish setting up your altimage account:\n\n{link}\n\nThe link works once, for 24 hours. If you did not sign up, ignore this mail: nothing happens without the link.\n"
            ),
        )
    }

    pub fn already_registered(link: &str) -> (String, String) {
        (
            "Someone tried to sign up with your email".into(),
            format!(
                "Someone (perhaps you) tried to create an altimage account with this address, which already has one.\n\nIf it was you, log in instead; if you forgot your password, reset it here:\n\n{link}\n\nIf it was not you, you can ignore this mail.\n"
            ),
        )
    }

    pub fn reset(link: &str) -> (String, String) {
        (
            "Reset your altimage password".into(),
            format!(
                "Someone (perhaps you) asked to reset the password of this altimage account.\n\nChoose a new password here (the link works once, for one hour):\n\n{link}\n\nResetting logs you out everywhere. If you did not ask, ignore this mail: your password stays as it is.\n"
            ),
        )
    }

    pub fn password_changed() -> (String, String) {
        (
            "Your altimage password was changed".into(),
            "The password of your altimage account was just changed, and every session was logged out.\n\nIf this was not you, reset your password now and tell your account's owner.\n".into(),
        )
    }

    pub fn invitation(inviter: &str, account: &str, role: &str, link: &str) -> (String, String) {
        (
            format!("{inviter} invited you to {account} on altimage"),
            format!(
                "{inviter} invited you to join {account} on altimage as {role}.\n\nAccept the invitation here (the link works once, for 7 days):\n\n{link}\n"
            ),
        )
    }

    pub fn recovery_code_used(remaining: i64) -> (String, String) {
        (
            "A recovery code was used to log in to altimage".into(),
            format!(
                "One of your recovery codes was just used to log in; {remaining} remain.\n\nIf this was not you, change your password and set up your authenticator again in Security.\n"
            ),
        )
    }
}

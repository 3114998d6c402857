//! The second factor: the login challenge (a TOTP code, accepted once, or a recovery code) and
//! enrolment (the secret shown three ways, proven by one code, then ten recovery codes shown
//! once). Either success rotates the session to a full one.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::FieldErrors;
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::mail::messages;
use crate::console::render::{self, Chrome};
use crate::console::session::{self, Client, Pending};
use crate::console::{ConsoleState, throttle, totp};
use crate::store::console_sessions::SessionStage;

const RECOVERY_CODES: usize = 10;

fn unix_now() -> u64 {
    (crate::store::now_ms() / 1000) as u64
}

/// The form people type a recovery code in does not matter: case, spaces and dashes are ignored.
pub fn normalise_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Ten codes of ten base32 characters (50 bits each), shown as `abcde-fghij`.
fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 7];
            getrandom::fill(&mut bytes).expect("the OS random source failed");
            let code = totp::base32(&bytes).to_ascii_lowercase();
            format!("{}-{}", &code[..5], &code[5..10])
        })
        .collect()
}

/// Replaces the pending session by a full one and sets its cookie.
async fn promote(
    state: &ConsoleState,
    pending: &Pending,
    client: &Client,
) -> ConsoleResult<header::HeaderValue> {
    let new = session::new_session(
        state,
        &pending.user,
        &pending.session.account_id,
        SessionStage::Full,
        client.ip.as_deref(),
        client.user_agent.as_deref(),
    );
    let cookie = state.store.rotate_session(&pending.cookie, &new).await?;
    Ok(session::session_cookie(&cookie))
}

#[derive(Template)]
#[template(path = "mfa_challenge.html")]
struct ChallengePage {
    chrome: Chrome,
    errors: FieldErrors,
}

pub async fn challenge_page(pending: Pending) -> ConsoleResult<Response> {
    if pending.session.stage != SessionStage::Password {
        return Err(ConsoleError::LoggedOut);
    }
    Ok(render::page(&ChallengePage {
        chrome: Chrome::public("Two-factor authentication"),
        errors: FieldErrors::default(),
    }))
}

#[derive(Deserialize)]
pub struct ChallengeForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery: String,
}

pub async fn challenge(
    State(state): State<ConsoleState>,
    pending: Pending,
    client: Client,
    Form(form): Form<ChallengeForm>,
) -> ConsoleResult<Response> {
    if pending.session.stage != SessionStage::Password {
        return Err(ConsoleError::LoggedOut);
    }
    let user = &pending.user;
    let key = format!("mfa:{}", user.id);
    let address = throttle::address_key(client.ip.as_deref());
    if let Some(wait) = throttle::wait(&state.store, &[Some(key.clone()), address.clone()]).await? {
        return Err(ConsoleError::Throttled(wait));
    }
    let passed = if !form.recovery.trim().is_empty() {
        let used = state
            .store
            .use_recovery_code(&user.id, &normalise_recovery_code(&form.recovery))
            .await?;
        if used {
            let remaining = state.store.unused_recovery_codes(&user.id).await?;
            let (subject, body) = messages::recovery_code_used(remaining);
            state.console.mail.send(&user.email, &subject, body).await?;
        }
        used
    } else {
        let sealed = user.totp_secret.as_deref().ok_or(ConsoleError::LoggedOut)?;
        let secret = state
            .console
            .seal
            .open(sealed, user.id.as_str())
            .map_err(|e| ConsoleError::Internal(e.to_string()))?;
        match totp::matching_step(&secret, &form.code, unix_now()) {
            // Accepted once: the same code (or an older one) again is refused.
            Some(step) => state.store.accept_totp_step(&user.id, step).await?,
            None => false,
        }
    };
    if !passed {
        throttle::fail(&state.store, &key, address.as_deref()).await?;
        let mut errors = FieldErrors::default();
        errors.add(
            "code",
            "That code is not right, or it was used already. Wait for the next code and try again.",
        );
        return Ok(render::with_status(
            StatusCode::BAD_REQUEST,
            &ChallengePage {
                chrome: Chrome::public("Two-factor authentication"),
                errors,
            },
        ));
    }
    state.store.clear_login_failures(&key).await?;
    let cookie = promote(&state, &pending, &client).await?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/console/library"),
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "mfa_setup.html")]
struct SetupPage {
    chrome: Chrome,
    errors: FieldErrors,
    /// The new secret sealed for this user, carried by the form until a code proves it.
    sealed: String,
    secret_grouped: String,
    uri: String,
    qr_svg: String,
}

fn setup_page_for(
    state: &ConsoleState,
    pending: &Pending,
    secret: &[u8],
    errors: FieldErrors,
) -> SetupPage {
    let uri = totp::otpauth_uri(secret, &pending.user.email);
    SetupPage {
        chrome: Chrome::public("Set up two-factor authentication"),
        errors,
        sealed: state.console.seal.seal(secret, pending.user.id.as_str()),
        secret_grouped: totp::grouped(&totp::base32(secret)),
        qr_svg: totp::qr_svg(&uri),
        uri,
    }
}

/// Enrolment is for a session that must enrol; someone enrolled already resets it from
/// Security (not by reaching this page).
fn may_enrol(pending: &Pending) -> bool {
    pending.session.stage == SessionStage::Enrol && pending.user.mfa_enrolled_at.is_none()
}

pub async fn setup_page(
    State(state): State<ConsoleState>,
    pending: Pending,
) -> ConsoleResult<Response> {
    if !may_enrol(&pending) {
        return Err(ConsoleError::LoggedOut);
    }
    let secret = totp::new_secret();
    Ok(render::page(&setup_page_for(
        &state,
        &pending,
        &secret,
        FieldErrors::default(),
    )))
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    sealed: String,
    #[serde(default)]
    code: String,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    chrome: Chrome,
    codes: Vec<String>,
}

pub async fn setup(
    State(state): State<ConsoleState>,
    pending: Pending,
    client: Client,
    Form(form): Form<SetupForm>,
) -> ConsoleResult<Response> {
    if !may_enrol(&pending) {
        return Err(ConsoleError::LoggedOut);
    }
    let secret = state
        .console
        .seal
        .open(&form.sealed, pending.user.id.as_str())
        .map_err(|_| ConsoleError::BadRequest("the setup form was changed; start again".into()))?;
    let Some(step) = totp::matching_step(&secret, &form.code, unix_now()) else {
        let mut errors = FieldErrors::default();
        errors.add(
            "code",
            "That code does not match. Check the app's clock and enter the code it shows now.",
        );
        return Ok(render::with_status(
            StatusCode::BAD_REQUEST,
            &setup_page_for(&state, &pending, &secret, errors),
        ));
    };
    let codes = new_recovery_codes();
    let hashed: Vec<String> = codes.iter().map(|c| normalise_recovery_code(c)).collect();
    state
        .store
        .enrol_totp(&pending.user.id, &form.sealed, step, &hashed)
        .await?;
    let cookie = promote(&state, &pending, &client).await?;
    let mut response = render::page(&RecoveryCodesPage {
        chrome: Chrome::public("Your recovery codes").with_notice(Some("mfa-enrolled")),
        codes,
    });
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

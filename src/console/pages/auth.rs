//! Getting in: sign-up (with the 18+ statement and email verification), login (password, then
//! the second factor or its enrolment), logout, and password reset by an emailed link. Answers
//! never tell whether an email has an account.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{FieldErrors, NoticeQuery, message};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::mail::messages;
use crate::console::render::{self, Chrome};
use crate::console::session::{self, Client, SESSION_COOKIE, read_cookie};
use crate::console::{ConsoleState, SignupMode, password, throttle};
use crate::store::StoreError;
use crate::store::console_sessions::SessionStage;
use crate::store::email_tokens::TokenPurpose;
use crate::store::users::{NewUser, User};

const VERIFY_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;
const RESET_LIFETIME_MS: i64 = 60 * 60 * 1000;

pub async fn home(State(state): State<ConsoleState>, headers: HeaderMap) -> Redirect {
    let idle = state.console.config.idle.as_millis() as i64;
    let live = match read_cookie(&headers, SESSION_COOKIE) {
        Some(cookie) => state.store.live_session(&cookie, idle).await.ok().flatten(),
        None => None,
    };
    match live {
        Some(_) => Redirect::to("/console/library"),
        None => Redirect::to("/console/login"),
    }
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    chrome: Chrome,
    mode: SignupMode,
    errors: FieldErrors,
    name: String,
    company: String,
    email: String,
}

pub async fn signup_page(State(state): State<ConsoleState>) -> Response {
    render::page(&SignupPage {
        chrome: Chrome::public("Get started"),
        mode: state.console.config.signup,
        errors: FieldErrors::default(),
        name: String::new(),
        company: String::new(),
        email: String::new(),
    })
}

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    company: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    adult: Option<String>,
}

pub async fn signup(
    State(state): State<ConsoleState>,
    Form(form): Form<SignupForm>,
) -> ConsoleResult<Response> {
    if state.console.config.signup != SignupMode::Open {
        return Err(ConsoleError::Forbidden);
    }
    let mut errors = FieldErrors::default();
    if form.name.trim().is_empty() {
        errors.add("name", "Enter your name.");
    }
    if !form.email.contains('@') {
        errors.add(
            "email",
            "Enter your email address, such as name@example.com.",
        );
    }
    if let Err(problem) = password::check_new(&form.password, &form.email) {
        errors.add("password", problem);
    }
    if form.adult.as_deref() != Some("yes") {
        errors.add(
            "adult",
            "Confirm that you are 18 or older: altimage is not for people under 18.",
        );
    }
    let again = |errors: FieldErrors| {
        render::with_status(
            StatusCode::BAD_REQUEST,
            &SignupPage {
                chrome: Chrome::public("Get started"),
                mode: SignupMode::Open,
                errors,
                name: form.name.clone(),
                company: form.company.clone(),
                email: form.email.clone(),
            },
        )
    };
    if !errors.is_empty() {
        return Ok(again(errors));
    }
    if let Some(existing) = state.store.user_by_email(&form.email).await? {
        // The same answer as a new sign-up; the owner of the address learns of the attempt.
        let (subject, body) = messages::already_registered(&state.link("/password/forgot"));
        state
            .console
            .mail
            .send(&existing.email, &subject, body)
            .await?;
        return Ok(check_your_email());
    }
    let hash = state.console.passwords.hash(form.password.clone()).await?;
    let created = state
        .store
        .create_user_with_account(
            NewUser {
                email: form.email.clone(),
                name: form.name.clone(),
                password_hash: hash,
            },
            Some(form.company.clone()),
            false,
        )
        .await;
    let (user_id, _) = match created {
        Ok(ids) => ids,
        Err(StoreError::Invalid(problem)) => {
            let mut errors = FieldErrors::default();
            let field = if problem.contains("email") {
                "email"
            } else if problem.contains("company") {
                "company"
            } else {
                "name"
            };
            errors.add(field, problem);
            return Ok(again(errors));
        }
        // Two sign-ups racing with one address: the second is told to check its mail too.
        Err(StoreError::Conflict(_)) => return Ok(check_your_email()),
        Err(other) => return Err(other.into()),
    };
    let user = state.store.user(&user_id).await?;
    send_verification(&state, &user).await?;
    Ok(check_your_email())
}

async fn send_verification(state: &ConsoleState, user: &User) -> ConsoleResult<()> {
    let token = state
        .store
        .create_email_token(&user.id, TokenPurpose::Verify, VERIFY_LIFETIME_MS)
        .await?;
    let (subject, body) =
        messages::verify(&user.name, &state.link(&format!("/verify?token={token}")));
    state.console.mail.send(&user.email, &subject, body).await?;
    Ok(())
}

fn check_your_email() -> Response {
    message(
        StatusCode::OK,
        Chrome::public("Check your email"),
        &[
            "We sent a link to the address you gave. Open it to confirm your email, then log in.",
            "No mail after a few minutes? Look in your spam folder, or sign up again.",
        ],
        Some(("/console/login", "Go to login")),
    )
}

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyPage {
    chrome: Chrome,
    token: String,
}

/// The link only shows a button: mail scanners that open links must not use up the token.
pub async fn verify_page(Query(query): Query<TokenQuery>) -> Response {
    render::page(&VerifyPage {
        chrome: Chrome::public("Confirm your email"),
        token: query.token,
    })
}

pub async fn verify(
    State(state): State<ConsoleState>,
    Form(form): Form<TokenQuery>,
) -> ConsoleResult<Response> {
    match state
        .store
        .consume_email_token(&form.token, TokenPurpose::Verify)
        .await?
    {
        Some(user_id) => {
            state.store.mark_email_verified(&user_id).await?;
            Ok(Redirect::to("/console/login?notice=verified").into_response())
        }
        None => Ok(link_expired()),
    }
}

fn link_expired() -> Response {
    message(
        StatusCode::BAD_REQUEST,
        Chrome::public("This link no longer works"),
        &[
            "The link was used already or has expired. Log in to get a new confirmation link, or ask for a new password reset.",
        ],
        Some(("/console/login", "Go to login")),
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    errors: FieldErrors,
    email: String,
}

pub async fn login_page(Query(query): Query<NoticeQuery>) -> Response {
    render::page(&LoginPage {
        chrome: Chrome::public("Log in").with_notice(query.notice.as_deref()),
        errors: FieldErrors::default(),
        email: String::new(),
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

fn login_failed(status: StatusCode, email: &str, problem: &str) -> Response {
    let mut errors = FieldErrors::default();
    errors.add("email", problem);
    render::with_status(
        status,
        &LoginPage {
            chrome: Chrome::public("Log in"),
            errors,
            email: email.to_string(),
        },
    )
}

pub async fn login(
    State(state): State<ConsoleState>,
    client: Client,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> ConsoleResult<Response> {
    let user_key = throttle::user_key(&form.email);
    let address_key = throttle::address_key(client.ip.as_deref());
    if let Some(wait) =
        throttle::wait(&state.store, &[Some(user_key.clone()), address_key.clone()]).await?
    {
        let mut response = login_failed(
            StatusCode::TOO_MANY_REQUESTS,
            &form.email,
            &format!(
                "Too many failed attempts. Try again in {} seconds.",
                wait.as_secs().max(1)
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, wait.as_secs().max(1).into());
        return Ok(response);
    }
    let user = state.store.user_by_email(&form.email).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let right = state
        .console
        .passwords
        .verify(form.password.clone(), stored)
        .await?;
    let Some(user) = user.filter(|_| right) else {
        throttle::fail(&state.store, &user_key, address_key.as_deref()).await?;
        return Ok(login_failed(
            StatusCode::BAD_REQUEST,
            &form.email,
            "The email or the password is wrong.",
        ));
    };
    state.store.clear_login_failures(&user_key).await?;
    if user.email_verified_at.is_none() {
        send_verification(&state, &user).await?;
        return Ok(message(
            StatusCode::FORBIDDEN,
            Chrome::public("Confirm your email first"),
            &[
                "Your email address is not confirmed yet. We sent you a new link: open it, then log in.",
            ],
            None,
        ));
    }
    let memberships = state.store.memberships(&user.id).await?;
    let account = user
        .last_account_id
        .as_ref()
        .and_then(|last| memberships.iter().find(|m| &m.account_id == last))
        .or_else(|| memberships.first());
    let Some(account) = account else {
        return Ok(message(
            StatusCode::FORBIDDEN,
            Chrome::public("No account"),
            &["You are not a member of any account any more. Ask an owner for a new invitation."],
            None,
        ));
    };
    let account_row = state.store.account(&account.account_id).await?;
    let stage = if user.mfa_enrolled_at.is_some() {
        SessionStage::Password
    } else if account_row.require_mfa {
        SessionStage::Enrol
    } else {
        SessionStage::Full
    };
    let new = session::new_session(
        &state,
        &user,
        &account.account_id,
        stage,
        client.ip.as_deref(),
        client.user_agent.as_deref(),
    );
    // A cookie the browser already had (planted or old) is replaced, never promoted.
    let cookie = match read_cookie(&headers, SESSION_COOKIE) {
        Some(old) => state.store.rotate_session(&old, &new).await?,
        None => state.store.create_session(&new).await?,
    };
    let next = match stage {
        SessionStage::Password => "/console/login/mfa",
        SessionStage::Enrol => "/console/mfa/setup",
        SessionStage::Full => "/console/library",
    };
    Ok((
        [(header::SET_COOKIE, session::session_cookie(&cookie))],
        Redirect::to(next),
    )
        .into_response())
}

pub async fn logout(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
) -> ConsoleResult<Response> {
    if let Some(cookie) = read_cookie(&headers, SESSION_COOKIE) {
        state
            .store
            .delete_session_by_hash(&crate::store::secrets::sha256_hex(&cookie))
            .await?;
    }
    Ok((
        [(header::SET_COOKIE, session::clear_session_cookie())],
        Redirect::to("/console/login?notice=logged-out"),
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "forgot.html")]
struct ForgotPage {
    chrome: Chrome,
}

pub async fn forgot_page() -> Response {
    render::page(&ForgotPage {
        chrome: Chrome::public("Reset your password"),
    })
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

pub async fn forgot(
    State(state): State<ConsoleState>,
    Form(form): Form<ForgotForm>,
) -> ConsoleResult<Response> {
    if let Some(user) = state.store.user_by_email(&form.email).await? {
        let token = state
            .store
            .create_email_token(&user.id, TokenPurpose::Reset, RESET_LIFETIME_MS)
            .await?;
        let (subject, body) =
            messages::reset(&state.link(&format!("/password/reset?token={token}")));
        state.console.mail.send(&user.email, &subject, body).await?;
    }
    Ok(check_your_email())
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    chrome: Chrome,
    errors: FieldErrors,
    token: String,
}

pub async fn reset_page(Query(query): Query<TokenQuery>) -> Response {
    let mut response = render::page(&ResetPage {
        chrome: Chrome::public("Choose a new password"),
        errors: FieldErrors::default(),
        token: query.token,
    });
    // The token is in this page's URL: no referrer may carry it elsewhere.
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

pub async fn reset(
    State(state): State<ConsoleState>,
    Form(form): Form<ResetForm>,
) -> ConsoleResult<Response> {
    // The policy needs the email; a token that names nobody is refused below either way.
    if let Err(problem) = password::check_new(&form.password, "") {
        let mut errors = FieldErrors::default();
        errors.add("password", problem);
        return Ok(render::with_status(
            StatusCode::BAD_REQUEST,
            &ResetPage {
                chrome: Chrome::public("Choose a new password"),
                errors,
                token: form.token,
            },
        ));
    }
    let Some(user_id) = state
        .store
        .consume_email_token(&form.token, TokenPurpose::Reset)
        .await?
    else {
        return Ok(link_expired());
    };
    let user = state.store.user(&user_id).await?;
    let hash = state.console.passwords.hash(form.password).await?;
    // Every session ends; the second factor is still asked at the next login.
    state.store.set_password(&user.id, &hash).await?;
    state.store.mark_email_verified(&user.id).await?;
    let (subject, body) = messages::password_changed();
    state.console.mail.send(&user.email, &subject, body).await?;
    Ok(Redirect::to("/console/login?notice=reset").into_response())
}

//! The session cookie and the extractors that turn it into who is asking: [`Member`] (logged in,
//! with the role the route table asks for) and [`Pending`] (the password was right, the second
//! factor is still due). Sessions live in the store (`store::console_sessions`).

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};

use super::ConsoleState;
use super::capability::allows;
use super::error::ConsoleError;
use super::routes::{Access, access_of};
use crate::store::accounts::Account;
use crate::store::console_sessions::{ConsoleSession, NewSession, SessionStage};
use crate::store::users::{Role, User};

/// `__Host-`: the browser accepts it only with `Secure`, `Path=/` and no `Domain`, so no
/// sibling subdomain can set or shadow it.
pub const SESSION_COOKIE: &str = "__Host-altimage_session";

/// `last_seen_at` is written at most this often per session.
const TOUCH_RESOLUTION_MS: i64 = 60_000;

pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty() && value.len() <= 128)
}

/// `Set-Cookie` for a session: no `Max-Age`, so the browser forgets it when it closes; the
/// server's idle and absolute timeouts end it sooner. `Lax` so that the return from a
/// top-level redirect (Stripe) arrives logged in.
pub fn session_cookie(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax"
    ))
    .expect("a token is URL-safe base64")
}

pub fn clear_session_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    ))
    .expect("ASCII")
}

/// The client's address and agent, as recorded with a session (for the sessions list) and used
/// as a throttling key.
pub struct Client {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Client { ip, user_agent })
    }
}

/// A new session row for `user` in `account` at `stage`.
pub fn new_session<'a>(
    state: &ConsoleState,
    user: &'a User,
    account: &'a crate::store::ids::AccountId,
    stage: SessionStage,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
) -> NewSession<'a> {
    let lifetime = match stage {
        // The second factor is due within minutes, not hours.
        SessionStage::Password | SessionStage::Enrol => 10 * 60 * 1000,
        SessionStage::Full => state.console.config.lifetime.as_millis() as i64,
    };
    NewSession {
        user_id: &user.id,
        account_id: account,
        stage,
        lifetime_ms: lifetime,
        ip,
        user_agent,
    }
}

/// A logged-in member of the account the session is in, allowed by the route table to use the
/// route being asked for.
pub struct Member {
    pub session: ConsoleSession,
    pub cookie: String,
    pub user: User,
    pub account: Account,
    pub role: Role,
}

impl Member {
    /// The id recorded as a description's reviewer.
    pub fn reviewer(&self) -> &str {
        self.user.id.as_str()
    }

    /// The member as the actor of what they change (the audit log's record).
    pub fn actor(&self) -> crate::store::audit::Actor {
        crate::store::audit::Actor {
            kind: crate::store::audit::ActorKind::User,
            id: Some(self.user.id.to_string()),
            ip: self.session.ip.clone(),
            user_agent: self.session.user_agent.clone(),
        }
    }

    /// Refuses new work while processing is restricted or the account is being deleted
    /// (reading, exporting and deleting still work).
    pub fn may_process(&self) -> Result<(), ConsoleError> {
        if self.account.deleted_at.is_some() {
            return Err(ConsoleError::BadRequest(
                "this account is being deleted: nothing new can be described or edited".into(),
            ));
        }
        if self.account.restricted_by.is_some() {
            return Err(ConsoleError::Restricted);
        }
        Ok(())
    }
}

async fn live(
    parts: &Parts,
    state: &ConsoleState,
) -> Result<(ConsoleSession, String), ConsoleError> {
    let cookie = read_cookie(&parts.headers, SESSION_COOKIE).ok_or(ConsoleError::LoggedOut)?;
    let idle = state.console.config.idle.as_millis() as i64;
    let session = state
        .store
        .live_session(&cookie, idle)
        .await?
        .ok_or(ConsoleError::LoggedOut)?;
    Ok((session, cookie))
}

impl FromRequestParts<ConsoleState> for Member {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let (session, cookie) = live(parts, state).await?;
        match session.stage {
            SessionStage::Full => {}
            SessionStage::Password => return Err(ConsoleError::Redirect("/console/login/mfa")),
            SessionStage::Enrol => return Err(ConsoleError::Redirect("/console/mfa/setup")),
        }
        let user = state.store.user(&session.user_id).await?;
        let Some(role) = state.store.role_in(&session.account_id, &user.id).await? else {
            // Removed from the account since: the session is worthless.
            state.store.delete_session_by_hash(&session.id_hash).await?;
            return Err(ConsoleError::LoggedOut);
        };
        let account = match state.store.account(&session.account_id).await {
            Ok(account) => account,
            Err(crate::store::StoreError::NotFound(_)) => return Err(ConsoleError::LoggedOut),
            Err(other) => return Err(other.into()),
        };
        let method = if parts.method == Method::HEAD {
            Method::GET
        } else {
            parts.method.clone()
        };
        let path = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        match access_of(&method, &path) {
            Some(Access::Member(capability)) if allows(role, capability) => {}
            Some(Access::Member(_)) => return Err(ConsoleError::Forbidden),
            // A route that takes a member must be in the table as one: refusing is the safe
            // answer to a table that forgot it.
            _ => {
                tracing::error!(%method, path, "a console route that takes a member is not in the route table as one");
                return Err(ConsoleError::Forbidden);
            }
        }
        state
            .store
            .touch_session(&session, TOUCH_RESOLUTION_MS)
            .await?;
        Ok(Member {
            session,
            cookie,
            user,
            account,
            role,
        })
    }
}

/// Between the password and the second factor (or its enrolment).
pub struct Pending {
    pub session: ConsoleSession,
    pub cookie: String,
    pub user: User,
}

impl FromRequestParts<ConsoleState> for Pending {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let (session, cookie) = live(parts, state).await?;
        let user = state.store.user(&session.user_id).await?;
        Ok(Pending {
            session,
            cookie,
            user,
        })
    }
}

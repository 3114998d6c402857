//! Every console route with who may use it, in one table: the router is built from it and the
//! [`Member`](super::session::Member) extractor checks the member's role against it, so a route
//! cannot exist without a rule (and a test walks every route with every role).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::http::Method;
use axum::middleware::{from_fn_with_state, map_response};
use axum::routing::{MethodRouter, get, post};

use super::ConsoleState;
use super::capability::Capability;
use super::pages::{auth, describe, description, keys, library, members, mfa, security};
use super::{assets, render};

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: sign-up, login, links from mail, assets.
    Public,
    /// A session between the password and the second factor.
    SecondFactor,
    /// A logged-in member whose role has the capability.
    Member(Capability),
}

/// (method, path, access). `GET` rows also answer `HEAD`.
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/console", Access::Public),
    ("GET", "/console/assets/{name}", Access::Public),
    ("GET", "/console/signup", Access::Public),
    ("POST", "/console/signup", Access::Public),
    ("GET", "/console/verify", Access::Public),
    ("POST", "/console/verify", Access::Public),
    ("GET", "/console/login", Access::Public),
    ("POST", "/console/login", Access::Public),
    ("GET", "/console/password/forgot", Access::Public),
    ("POST", "/console/password/forgot", Access::Public),
    ("GET", "/console/password/reset", Access::Public),
    ("POST", "/console/password/reset", Access::Public),
    ("GET", "/console/invite/{token}", Access::Public),
    ("POST", "/console/invite/{token}", Access::Public),
    ("POST", "/console/logout", Access::Public),
    ("GET", "/console/login/mfa", Access::SecondFactor),
    ("POST", "/console/login/mfa", Access::SecondFactor),
    ("GET", "/console/mfa/setup", Access::SecondFactor),
    ("POST", "/console/mfa/setup", Access::SecondFactor),
    ("GET", "/console/library", Access::Member(Capability::Read)),
    (
        "POST",
        "/console/descriptions/bulk",
        Access::Member(Capability::Describe),
    ),
    (
        "GET",
        "/console/descriptions/{id}",
        Access::Member(Capability::Read),
    ),
    (
        "POST",
        "/console/descriptions/{id}",
        Access::Member(Capability::Describe),
    ),
    (
        "POST",
        "/console/descriptions/{id}/delete",
        Access::Member(Capability::Administer),
    ),
    (
        "GET",
        "/console/describe",
        Access::Member(Capability::Describe),
    ),
    (
        "POST",
        "/console/describe",
        Access::Member(Capability::Describe),
    ),
    (
        "GET",
        "/console/keys",
        Access::Member(Capability::ManageKeys),
    ),
    (
        "POST",
        "/console/keys",
        Access::Member(Capability::ManageKeys),
    ),
    (
        "POST",
        "/console/keys/{id}/revoke",
        Access::Member(Capability::ManageKeys),
    ),
    (
        "GET",
        "/console/members",
        Access::Member(Capability::Administer),
    ),
    (
        "POST",
        "/console/members/invite",
        Access::Member(Capability::Administer),
    ),
    (
        "POST",
        "/console/members/{id}/role",
        Access::Member(Capability::Administer),
    ),
    (
        "POST",
        "/console/members/{id}/remove",
        Access::Member(Capability::Administer),
    ),
    (
        "POST",
        "/console/invitations/{id}/revoke",
        Access::Member(Capability::Administer),
    ),
    ("GET", "/console/security", Access::Member(Capability::Read)),
    (
        "POST",
        "/console/security/password",
        Access::Member(Capability::Read),
    ),
    (
        "POST",
        "/console/security/sessions/{id}/revoke",
        Access::Member(Capability::Read),
    ),
];

static TABLE: LazyLock<HashMap<(Method, &'static str), Access>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .map(|&(method, path, access)| ((method.parse().expect("a method"), path), access))
        .collect()
});

/// The rule for a matched route.
pub fn access_of(method: &Method, path: &str) -> Option<Access> {
    TABLE.get(&(method.clone(), path)).copied()
}

/// The handler of each route.
fn handler(method: &str, path: &str) -> MethodRouter<ConsoleState> {
    match (method, path) {
        ("GET", "/console") => get(auth::home),
        ("GET", "/console/assets/{name}") => get(assets::serve),
        ("GET", "/console/signup") => get(auth::signup_page),
        ("POST", "/console/signup") => post(auth::signup),
        ("GET", "/console/verify") => get(auth::verify_page),
        ("POST", "/console/verify") => post(auth::verify),
        ("GET", "/console/login") => get(auth::login_page),
        ("POST", "/console/login") => post(auth::login),
        ("GET", "/console/password/forgot") => get(auth::forgot_page),
        ("POST", "/console/password/forgot") => post(auth::forgot),
        ("GET", "/console/password/reset") => get(auth::reset_page),
        ("POST", "/console/password/reset") => post(auth::reset),
        ("GET", "/console/invite/{token}") => get(members::invitation_page),
        ("POST", "/console/invite/{token}") => post(members::accept_invitation),
        ("POST", "/console/logout") => post(auth::logout),
        ("GET", "/console/login/mfa") => get(mfa::challenge_page),
        ("POST", "/console/login/mfa") => post(mfa::challenge),
        ("GET", "/console/mfa/setup") => get(mfa::setup_page),
        ("POST", "/console/mfa/setup") => post(mfa::setup),
        ("GET", "/console/library") => get(library::page),
        ("POST", "/console/descriptions/bulk") => post(library::bulk),
        ("GET", "/console/descriptions/{id}") => get(description::page),
        ("POST", "/console/descriptions/{id}") => post(description::save),
        ("POST", "/console/descriptions/{id}/delete") => post(description::delete),
        ("GET", "/console/describe") => get(describe::page),
        ("POST", "/console/describe") => post(describe::upload),
        ("GET", "/console/keys") => get(keys::page),
        ("POST", "/console/keys") => post(keys::create),
        ("POST", "/console/keys/{id}/revoke") => post(keys::revoke),
        ("GET", "/console/members") => get(members::page),
        ("POST", "/console/members/invite") => post(members::invite),
        ("POST", "/console/members/{id}/role") => post(members::change_role),
        ("POST", "/console/members/{id}/remove") => post(members::remove),
        ("POST", "/console/invitations/{id}/revoke") => post(members::revoke_invitation),
        ("GET", "/console/security") => get(security::page),
        ("POST", "/console/security/password") => post(security::change_password),
        ("POST", "/console/security/sessions/{id}/revoke") => post(security::revoke_session),
        (method, path) => unreachable!("console route {method} {path} has no handler"),
    }
}

/// The console's routes, with its own state applied, ready to merge into the server's router.
pub fn router<S: Clone + Send + Sync + 'static>(state: ConsoleState) -> Router<S> {
    let mut router = Router::new();
    for &(method, path, _) in ROUTES {
        router = router.route(path, handler(method, path));
    }
    router
        .layer(from_fn_with_state(
            state.clone(),
            super::forms::refuse_cross_site,
        ))
        .layer(map_response(render::secure_headers))
        .with_state(state)
}

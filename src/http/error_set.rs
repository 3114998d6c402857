//! Which error kinds each operation may answer, declared once beside its handler with
//! [`error_set!`]: the set is the operation's `responses(...)` in the OpenAPI document, and the
//! contract tests read the document. The layers every route of a group passes (the API key, the
//! admin token) are sets of their own that operations include.

use std::collections::BTreeMap;

use utoipa::openapi::response::{Response as ResponseDoc, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, ToSchema};

use super::error::{ErrorBody, ErrorKind};

/// An operation's error answers: each kind with what it means there.
pub trait ErrorSet {
    fn kinds() -> Vec<(ErrorKind, &'static str)>;
}

/// Declares an error set: `error_set!(pub Name: Base, Other { Kind => "meaning", ... });`. The
/// bases' kinds come first; a kind the set lists again takes the set's meaning.
#[macro_export]
macro_rules! error_set {
    ($(#[$meta:meta])* $vis:vis $name:ident $(: $($base:ident),+)? { $($kind:ident => $meaning:expr),* $(,)? }) => {
        $(#[$meta])*
        $vis struct $name;

        impl $crate::http::error_set::ErrorSet for $name {
            fn kinds() -> Vec<($crate::http::error::ErrorKind, &'static str)> {
                let bases: Vec<Vec<($crate::http::error::ErrorKind, &'static str)>> =
                    vec![$($(<$base as $crate::http::error_set::ErrorSet>::kinds()),+)?];
                let own = [$(($crate::http::error::ErrorKind::$kind, $meaning)),*];
                bases.into_iter().flatten().chain(own).collect()
            }
        }

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::http::error_set::responses(
                    &<$name as $crate::http::error_set::ErrorSet>::kinds(),
                )
            }
        }
    };
}

/// One documented answer per status: the meanings of the kinds that share it, in order, each
/// kind once (the last meaning given wins).
pub fn responses(kinds: &[(ErrorKind, &'static str)]) -> BTreeMap<String, RefOr<ResponseDoc>> {
    let mut meanings: BTreeMap<ErrorKind, &str> = BTreeMap::new();
    let mut order = Vec::new();
    for &(kind, meaning) in kinds {
        if meanings.insert(kind, meaning).is_none() {
            order.push(kind);
        }
    }
    let mut by_status: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
    for kind in order {
        by_status
            .entry(kind.status().as_u16())
            .or_default()
            .push(meanings[&kind]);
    }
    by_status
        .into_iter()
        .map(|(status, meanings)| (status.to_string(), error_response(&meanings.join(" "))))
        .collect()
}

/// An error answer with the `ErrorBody` schema (headers are added by `openapi::FromTheCode`).
fn error_response(description: &str) -> RefOr<ResponseDoc> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build(),
        )
        .build()
        .into()
}

/// A set is its own `responses(...)` entry: assert that a set's statuses are the ones documented.
pub fn statuses<S: ErrorSet + IntoResponses>() -> Vec<u16> {
    S::responses()
        .keys()
        .map(|s| s.parse().expect("statuses are numbers"))
        .collect()
}

crate::error_set!(
    /// What the API-key layer (`auth::require_api_key`) and every handler behind it may answer:
    /// authentication, the rate limit, the scope check, and the database.
    pub ApiKeyLayer {
        Unauthorized => "No API key, or one that is unknown or revoked, or whose account is deleted (`missing_api_key`, `invalid_api_key`).",
        Forbidden => "The API key lacks the scope this operation needs (`missing_scope`).",
        RateLimited => "The account's requests per minute are used up (`rate_limited`); retry after `Retry-After` seconds.",
        Internal => "The database failed.",
        Unavailable => "The database did not answer in time (`database_unavailable`), or the model is still loading (`starting`).",
    }
);

crate::error_set!(
    /// What the admin-token layer (`auth::require_admin`) and every admin handler may answer.
    pub AdminLayer {
        Unauthorized => "No admin token, or not the server's `--admin-token` (`invalid_admin_token`).",
        Internal => "The database failed.",
        Unavailable => "The database did not answer in time (`database_unavailable`), or the model is still loading (`starting`).",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    crate::error_set!(Example: ApiKeyLayer {
        BadRequest => "A bad query.",
        Overloaded => "At capacity.",
        Unavailable => "Draining.",
    });

    #[test]
    fn kinds_sharing_a_status_share_one_answer_and_a_repeated_kind_takes_the_last_meaning() {
        let responses = Example::responses();
        assert_eq!(statuses::<Example>(), vec![400, 401, 403, 429, 500, 503]);
        let description = |status: &str| match &responses[status] {
            RefOr::T(response) => response.description.clone(),
            RefOr::Ref(_) => panic!("inline"),
        };
        assert!(description("429").starts_with("The account's requests per minute"));
        assert!(description("429").ends_with(" At capacity."));
        assert_eq!(description("503"), "Draining.");
    }
}

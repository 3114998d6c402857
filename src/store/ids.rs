//! Typed ids for what tenancy rests on: every query scoped by account takes an [`AccountId`], and
//! a description is named by a [`DescriptionId`], so neither can be passed where the other is
//! meant. An id from outside becomes one only through `parse` (its form checked: the prefix and
//! 32 hex digits); one read from the database is trusted.

use serde::Serialize;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id, ordered by creation time.
            pub fn generate() -> Self {
                Self(super::new_id($prefix))
            }

            /// `Some` when `value` has the form of such an id; whether it names anything is the
            /// store's question.
            pub fn parse(value: &str) -> Option<Self> {
                crate::strings::is_id(value, $prefix).then(|| Self(value.to_string()))
            }

            /// An id the database handed back.
            pub(crate) fn trusted(value: String) -> Self {
                Self(value)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// For command-line arguments: an id of another form is refused, naming the form.
        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(value: &str) -> Result<Self, String> {
                Self::parse(value).ok_or_else(|| {
                    format!("`{value}` is not a {} id (`{}_` and 32 hex digits)", $what, $prefix)
                })
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

typed_id!(
    /// An account: the tenant every account-scoped query names.
    AccountId,
    "acct",
    "account"
);

typed_id!(
    /// A stored description.
    DescriptionId,
    "desc",
    "description"
);

typed_id!(
    /// A person who logs in to the console; belongs to accounts through memberships.
    UserId,
    "usr",
    "user"
);

typed_id!(
    /// A bulk job.
    JobId,
    "job",
    "job"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_of_their_kind_parse() {
        let account = AccountId::generate();
        assert_eq!(AccountId::parse(account.as_str()), Some(account.clone()));
        assert_eq!(DescriptionId::parse(account.as_str()), None);
        assert_eq!(AccountId::parse("acct_123"), None);
        assert_eq!(AccountId::parse("acct_x\0"), None);
        assert_eq!(
            serde_json::to_string(&account).unwrap(),
            format!("\"{account}\"")
        );
    }
}

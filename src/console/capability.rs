//! Who may do what in the console: one table from role to capability, read by the route table
//! (`routes::ROUTES`), so every page and action is checked in one place.

use crate::store::users::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Logged in as any member: library, descriptions, usage, versions, exports of descriptions
    /// and usage; one's own profile, security and sessions.
    Read,
    /// Describe images, edit, approve and reject descriptions.
    Describe,
    /// Create and revoke API keys (their secrets are the account's data).
    ManageKeys,
    /// Delete descriptions, billing, members and invitations, the activity log.
    Administer,
    /// The account's rights: restrict, object, delete the account, export it whole; grant the
    /// owner role.
    Own,
}

/// The table. Owners can do everything; each row below gives up something.
pub fn allows(role: Role, capability: Capability) -> bool {
    use Capability::*;
    match role {
        Role::Owner => true,
        Role::Admin => !matches!(capability, Own),
        Role::Developer => matches!(capability, Read | Describe | ManageKeys),
        Role::Viewer => matches!(capability, Read),
    }
}

/// The highest role a member may give (invite with, or change to): their own, never above.
pub fn may_grant(granter: Role, role: Role) -> bool {
    allows(granter, Capability::Administer) && role <= granter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_as_the_readme_states_it() {
        use Capability::*;
        let expected = [
            (Role::Owner, [true, true, true, true, true]),
            (Role::Admin, [true, true, true, true, false]),
            (Role::Developer, [true, true, true, false, false]),
            (Role::Viewer, [true, false, false, false, false]),
        ];
        for (role, row) in expected {
            for (capability, allowed) in [Read, Describe, ManageKeys, Administer, Own]
                .into_iter()
                .zip(row)
            {
                assert_eq!(allows(role, capability), allowed, "{role:?} {capability:?}");
            }
        }
        assert!(may_grant(Role::Admin, Role::Admin));
        assert!(!may_grant(Role::Admin, Role::Owner));
        assert!(may_grant(Role::Owner, Role::Owner));
        assert!(!may_grant(Role::Developer, Role::Viewer));
    }
}

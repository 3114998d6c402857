//! From sign-up to a reviewed description, through the console's own forms, on both databases.

use reqwest::StatusCode;

use super::*;
use crate::common::db::select_one;
use crate::common::fixture;
use crate::common::server::{call, post_png};

#[tokio::test(flavor = "multi_thread")]
async fn get_started_describe_review_and_manage_keys() {
    for db in databases().await {
        let (server, outbox) = start_console(&db, &[]);
        let email = "ann@shop.example";

        // The 18+ statement is required; the form comes back with the values and the error.
        let mut visitor = Visitor::new(&server);
        let page = visitor
            .post(
                "/console/signup",
                &[("name", "Ann"), ("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", db.backend);
        assert!(page.body.contains("id=\"error-summary\"") && page.body.contains("18 or older"));
        assert!(
            page.body.contains("value=\"ann@shop.example\""),
            "values are kept"
        );
        assert!(page.body.contains(
            "id=\"adult\" name=\"adult\" type=\"checkbox\" value=\"yes\" aria-invalid=\"true\""
        ));

        let (mut ann, secret, recovery) = get_started(&server, &outbox, "Ann", email).await;
        let library = ann.get("/console/library").await;
        assert_eq!(library.status, StatusCode::OK);
        assert!(library.body.contains("No descriptions yet"));

        // Describe: the form's token first, then the image; billed as created, like the API.
        let described = ann
            .post_images(
                "/console/describe",
                &[("outputs", "alt_text")],
                vec![fixture(0)],
            )
            .await;
        assert_eq!(
            described.status,
            StatusCode::SEE_OTHER,
            "{}",
            described.body
        );
        let location = described.location().to_string();
        assert!(
            location.starts_with("/console/descriptions/desc_"),
            "{location}"
        );
        let id = location
            .trim_start_matches("/console/descriptions/")
            .split('?')
            .next()
            .unwrap()
            .to_string();
        let page = ann.get(&location).await;
        assert!(page.body.contains("unreviewed"));

        // Save an edit and approve it in one go: the edit is a new version, the approval applies
        // to the new words.
        let page = ann
            .post(
                &format!("/console/descriptions/{id}"),
                &[
                    ("out.alt_text", "A blue mug on a wooden table"),
                    ("action", "save_approve"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        let page = ann.get(&format!("/console/descriptions/{id}")).await;
        assert!(page.body.contains("status-approved"), "{}", page.body);
        assert!(page.body.contains("Version 2 · ai_edited"));

        // Keys: the secret is on the answer page once; it works on the API; revoked, it does not.
        let page = ann
            .post(
                "/console/keys",
                &[
                    ("name", "shop import"),
                    ("scopes", "describe"),
                    ("scopes", "read"),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let start = page.body.find("id=\"new-secret\" data-copy>").unwrap()
            + "id=\"new-secret\" data-copy>".len();
        let secret_key =
            page.body[start..start + page.body[start..].find('<').unwrap()].to_string();
        assert!(secret_key.starts_with("altk_"));
        let api = server.client_with_key(&secret_key);
        let (status, _, body) = call(api.get(server.url(&format!("/v1/descriptions/{id}")))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["review"]["status"], "approved");
        assert!(
            body["review"]["reviewed_by"]
                .as_str()
                .unwrap()
                .starts_with("usr_")
        );
        let (status, _, listed) =
            call(api.get(server.url("/v1/descriptions?review_status=approved"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(listed["data"].as_array().unwrap().len(), 1);
        let keys = ann.get("/console/keys").await;
        assert!(
            !keys.body.contains(&secret_key),
            "the secret is never shown again"
        );
        let key_id = keys
            .body
            .split("/console/keys/")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let page = ann
            .post(&format!("/console/keys/{key_id}/revoke"), &[])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        let (status, _, _) = call(post_png(&api, server.url("/v1/descriptions"), fixture(0))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // The console upload is on the ledger as a description created, like the API's.
        let store = db.store().await;
        let user = store.user_by_email(email).await.unwrap().unwrap();
        let account_id = user.last_account_id.unwrap();
        let created: i64 = select_one(
            &store,
            "SELECT COUNT(*) FROM usage_events WHERE account_id = $1 AND kind = 'created'",
            account_id.as_str(),
        )
        .await;
        assert_eq!(created, 1);

        // Log out; log in again: the code used at enrolment is refused (replay), the next one
        // passes; a recovery code works once.
        let page = ann.post("/console/logout", &[]).await;
        assert_eq!(page.location(), "/console/login?notice=logged-out");
        assert_eq!(
            ann.get("/console/library").await.location(),
            "/console/login"
        );
        let page = ann
            .post(
                "/console/login",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(page.location(), "/console/login/mfa");
        let old_code = totp_now(&secret);
        let refused = ann.post("/console/login/mfa", &[("code", &old_code)]).await;
        // The enrolment used this step (or the last one), so this is a replay or out of date;
        // only a later step passes.
        if refused.status == StatusCode::SEE_OTHER {
            panic!("a TOTP code accepted at enrolment was accepted again at login");
        }
        let page = ann
            .post("/console/login/mfa", &[("code", &totp_next(&secret))])
            .await;
        assert_eq!(page.location(), "/console/library", "{}", page.body);
        ann.post("/console/logout", &[]).await;
        ann.post(
            "/console/login",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
        let page = ann
            .post(
                "/console/login/mfa",
                &[("recovery", &recovery[0].to_uppercase())],
            )
            .await;
        assert_eq!(
            page.location(),
            "/console/library",
            "recovery codes ignore case: {}",
            page.body
        );
        assert!(mail_to(&outbox, email).contains("One of your recovery codes was just used"));
        ann.post("/console/logout", &[]).await;
        ann.post(
            "/console/login",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
        let page = ann
            .post("/console/login/mfa", &[("recovery", &recovery[0])])
            .await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "a recovery code works once"
        );
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invitations_roles_and_password_reset() {
    for db in databases().await {
        let (server, outbox) = start_console(&db, &[]);
        let (mut owner, _, _) = get_started(&server, &outbox, "Olga", "olga@shop.example").await;

        // Invite a viewer: the link is mailed and shown for copying.
        let page = owner
            .post(
                "/console/members/invite",
                &[("email", "vic@shop.example"), ("role", "viewer")],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{}\n{}",
            page.body,
            server.log()
        );
        assert!(page.body.contains("id=\"invitation-link\""));
        let link = link_in(&mail_to(&outbox, "vic@shop.example"), "/console/invite/");
        assert!(page.body.contains(&link), "the page shows the mailed link");

        let mut viewer = Visitor::new(&server);
        let page = viewer.get(&link).await;
        assert!(page.body.contains("as viewer"), "{}", page.body);
        let page = viewer
            .post(
                &link,
                &[("name", "Vic"), ("password", PASSWORD), ("adult", "yes")],
            )
            .await;
        assert_eq!(
            page.location(),
            "/console/login?notice=joined",
            "{}",
            page.body
        );
        // A used invitation does not work twice.
        let again = Visitor::new(&server)
            .post(
                &link,
                &[("name", "Eve"), ("password", PASSWORD), ("adult", "yes")],
            )
            .await;
        assert_eq!(again.status, StatusCode::NOT_FOUND);
        log_in_and_enrol(&mut viewer, "vic@shop.example").await;

        // The viewer reads but cannot describe, manage keys or members: no links, and 403.
        let library = viewer.get("/console/library").await;
        assert_eq!(library.status, StatusCode::OK);
        assert!(
            !library.body.contains("href=\"/console/keys\"")
                && !library.body.contains("href=\"/console/describe\"")
        );
        assert_eq!(
            viewer.get("/console/keys").await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            viewer.get("/console/members").await.status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            viewer
                .post("/console/keys", &[("name", "x"), ("scopes", "read")])
                .await
                .status,
            StatusCode::FORBIDDEN
        );

        // Promoted to developer by the owner, the viewer's sessions end (privilege change).
        let members = owner.get("/console/members").await;
        let vic_id = members
            .body
            .split("/console/members/usr_")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let page = owner
            .post(
                &format!("/console/members/usr_{vic_id}/role"),
                &[("role", "developer")],
            )
            .await;
        assert_eq!(page.location(), "/console/members?notice=member-changed");
        assert_eq!(
            viewer.get("/console/library").await.location(),
            "/console/login"
        );

        // Password reset: same answer for unknown emails; the link works once and ends sessions.
        let mut stranger = Visitor::new(&server);
        let unknown = stranger
            .post(
                "/console/password/forgot",
                &[("email", "nobody@shop.example")],
            )
            .await;
        let known = stranger
            .post(
                "/console/password/forgot",
                &[("email", "olga@shop.example")],
            )
            .await;
        assert_eq!(
            (unknown.status, unknown.body.len()),
            (known.status, known.body.len())
        );
        let link = link_in(
            &mail_to(&outbox, "olga@shop.example"),
            "/console/password/reset",
        );
        let page = stranger.get(&link).await;
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        let token = page.input("token").unwrap();
        let page = stranger
            .post(
                "/console/password/reset",
                &[("token", &token), ("password", "new harbour lantern")],
            )
            .await;
        assert_eq!(
            page.location(),
            "/console/login?notice=reset",
            "{}",
            page.body
        );
        assert_eq!(
            owner.get("/console/library").await.location(),
            "/console/login",
            "the reset ended the owner's sessions"
        );
        let page = stranger
            .post(
                "/console/password/reset",
                &[("token", &token), ("password", "another long phrase")],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "a reset link works once"
        );
        let page = owner
            .post(
                "/console/login",
                &[("email", "olga@shop.example"), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "the old password is gone"
        );
        let page = owner
            .post(
                "/console/login",
                &[
                    ("email", "olga@shop.example"),
                    ("password", "new harbour lantern"),
                ],
            )
            .await;
        assert_eq!(
            page.location(),
            "/console/login/mfa",
            "the second factor is still asked"
        );
    }
}

/// With sign-up by invitation (the default), the first owner comes from the command line: a
/// link to choose a password, then the usual login with enrolment.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_owner_comes_from_the_command_line() {
    let db = TestDatabase::sqlite();
    let (server, _) = start_console(&db, &["--signup", "invite"]);
    let mut visitor = Visitor::new(&server);
    let page = visitor.get("/console/signup").await;
    assert!(page.body.contains("by invitation only"), "{}", page.body);
    let page = visitor
        .post(
            "/console/signup",
            &[
                ("name", "Eve"),
                ("email", "eve@x.example"),
                ("password", PASSWORD),
                ("adult", "yes"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_altimage"))
        .args(["accounts", "create-owner"])
        .args(db.flags())
        .args([
            "--name",
            "Ann",
            "--email",
            "Ann@Shop.example",
            "--company",
            "Shop GmbH",
            "--public-url",
            PUBLIC,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let link = created["set_password_url"]
        .as_str()
        .unwrap()
        .trim_start_matches(PUBLIC)
        .to_string();
    let page = visitor.get(&link).await;
    let token = page.input("token").unwrap();
    let page = visitor
        .post(
            "/console/password/reset",
            &[("token", &token), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        page.location(),
        "/console/login?notice=reset",
        "{}",
        page.body
    );
    log_in_and_enrol(&mut visitor, "ann@shop.example").await;
    let members = visitor.get("/console/members").await;
    assert_eq!(members.status, StatusCode::OK);
    assert!(members.body.contains("ann@shop.example") && members.body.contains("Ann (you)"));
}

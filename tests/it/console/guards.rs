//! Every guard of the console, over HTTP: cross-site requests and form tokens, session fixation
//! and expiry, throttled logins, the route × role table, another account's ids, the headers.

use reqwest::StatusCode;

use super::*;
use altimage::console::capability::allows;
use altimage::console::routes::{Access, ROUTES};
use altimage::store::users::Role;

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_requests_and_missing_tokens_are_refused() {
    let db = TestDatabase::sqlite();
    let (server, outbox) = start_console(&db, &[]);
    let (mut ann, _, _) = get_started(&server, &outbox, "Ann", "ann@shop.example").await;
    let token = ann.csrf.clone().unwrap();
    let form = |csrf: Option<&str>| {
        let mut form = vec![
            ("name".to_string(), "k".to_string()),
            ("scopes".to_string(), "read".to_string()),
        ];
        if let Some(csrf) = csrf {
            form.push(("csrf".into(), csrf.into()));
        }
        form
    };
    /// What is wrong with the request, its form token, its headers.
    type Case<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);
    let cases: [Case<'_>; 5] = [
        ("no token", None, &[("sec-fetch-site", "same-origin")]),
        (
            "a wrong token",
            Some("not-the-token"),
            &[("sec-fetch-site", "same-origin")],
        ),
        (
            "another site",
            Some(&token),
            &[("sec-fetch-site", "cross-site")],
        ),
        (
            "a sibling site",
            Some(&token),
            &[("sec-fetch-site", "same-site")],
        ),
        (
            "a foreign Origin",
            Some(&token),
            &[("origin", "https://evil.example")],
        ),
    ];
    for (what, csrf, headers) in cases {
        let page = ann.post_raw("/console/keys", &form(csrf), headers).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{what}");
    }
    // Public forms are guarded by the browser's word alone (there is no session yet).
    let page = Visitor::new(&server)
        .post_raw(
            "/console/login",
            &[
                ("email".into(), "ann@shop.example".into()),
                ("password".into(), PASSWORD.into()),
            ],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "login CSRF");
    // Our origin, with the token: through (not a browser header at all is a script, allowed).
    let page = ann
        .post_raw("/console/keys", &form(Some(&token)), &[("origin", PUBLIC)])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = ann
        .post_raw("/console/keys", &form(Some(&token)), &[])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let store = db.store().await;
    let user = store
        .user_by_email("ann@shop.example")
        .await
        .unwrap()
        .unwrap();
    let keys = store
        .list_keys(user.last_account_id.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "only the two allowed requests made keys");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_rotate_at_each_step_and_expire() {
    for db in databases().await {
        let (server, outbox) = start_console(&db, &[]);
        let (mut ann, secret, _) = get_started(&server, &outbox, "Ann", "ann@shop.example").await;
        ann.post("/console/logout", &[]).await;

        // A planted cookie is replaced at login, never promoted.
        ann.cookie = Some("planted-by-an-attacker".into());
        let page = ann
            .post(
                "/console/login",
                &[("email", "ann@shop.example"), ("password", PASSWORD)],
            )
            .await;
        let set_cookie = page.headers["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set_cookie.starts_with("__Host-altimage_session="),
            "{set_cookie}"
        );
        for flag in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
            assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
        }
        let password_stage = ann.cookie.clone().unwrap();
        assert_ne!(password_stage, "planted-by-an-attacker");
        let mut planted = Visitor::new(&server);
        planted.cookie = Some("planted-by-an-attacker".into());
        assert_eq!(
            planted.get("/console/library").await.location(),
            "/console/login"
        );
        // Half logged in is not logged in.
        assert_eq!(
            ann.get("/console/library").await.location(),
            "/console/login/mfa"
        );

        let page = ann
            .post("/console/login/mfa", &[("code", &totp_next(&secret))])
            .await;
        assert_eq!(page.location(), "/console/library", "{}", page.body);
        let full = ann.cookie.clone().unwrap();
        assert_ne!(
            full, password_stage,
            "the second factor rotates the session"
        );
        let mut stale = Visitor::new(&server);
        stale.cookie = Some(password_stage);
        assert_eq!(
            stale.get("/console/login/mfa").await.location(),
            "/console/login"
        );
        assert_eq!(ann.get("/console/library").await.status, StatusCode::OK);

        // Idle too long: out. (The clock is moved in the database, not waited for.)
        let store = db.store().await;
        sqlx::query("UPDATE console_sessions SET last_seen_at = last_seen_at - 3600000")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(
            ann.get("/console/library").await.location(),
            "/console/login"
        );
        assert_eq!(
            crate::common::db::select_one::<i64>(
                &store,
                "SELECT COUNT(*) FROM console_sessions WHERE user_id <> $1",
                ""
            )
            .await,
            0,
            "the expired row is deleted"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_throttled_in_the_database() {
    let db = TestDatabase::sqlite();
    let (server, outbox) = start_console(&db, &[]);
    let (mut ann, _, _) = get_started(&server, &outbox, "Ann", "ann@shop.example").await;
    ann.post("/console/logout", &[]).await;
    let mut throttled = None;
    for attempt in 0..12 {
        let page = ann
            .post(
                "/console/login",
                &[
                    ("email", "ANN@shop.example"),
                    ("password", "wrong wrong wrong"),
                ],
            )
            .await;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some((attempt, page));
            break;
        }
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert!(page.body.contains("The email or the password is wrong."));
    }
    let (attempt, page) = throttled.expect("failures are throttled");
    assert!(
        attempt >= 5,
        "five failures are free, got throttled after {attempt}"
    );
    assert!(page.headers.contains_key("retry-after"));
    let right = ann
        .post(
            "/console/login",
            &[("email", "ann@shop.example"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        right.status,
        StatusCode::TOO_MANY_REQUESTS,
        "blocked means blocked, even with the right password"
    );
    // An unknown email answers as a wrong password does.
    let unknown = Visitor::new(&server)
        .post(
            "/console/login",
            &[
                ("email", "nobody@shop.example"),
                ("password", "wrong wrong wrong"),
            ],
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body.contains("The email or the password is wrong."));
}

/// Every member route with every role: allowed gets past the guard (whatever the handler then
/// says of an empty form or a made-up id), refused is 403; and another account's ids are 404.
#[tokio::test(flavor = "multi_thread")]
async fn every_route_with_every_role_and_no_cross_account_reach() {
    let db = TestDatabase::sqlite();
    let (server, outbox) = start_console(&db, &[]);
    let (mut owner, _, _) = get_started(&server, &outbox, "Olga", "olga@shop.example").await;
    let mut visitors = vec![(Role::Owner, owner.csrf.clone())];
    let mut members = Vec::new();
    for role in [Role::Admin, Role::Developer, Role::Viewer] {
        let email = format!("{}@shop.example", role.as_str());
        owner
            .post(
                "/console/members/invite",
                &[("email", &email), ("role", role.as_str())],
            )
            .await;
        let link = link_in(&mail_to(&outbox, &email), "/console/invite/");
        let mut member = Visitor::new(&server);
        let page = member
            .post(
                &link,
                &[
                    ("name", role.as_str()),
                    ("password", PASSWORD),
                    ("adult", "yes"),
                ],
            )
            .await;
        assert_eq!(page.location(), "/console/login?notice=joined");
        log_in_and_enrol(&mut member, &email).await;
        member.get("/console/library").await;
        visitors.push((role, member.csrf.clone()));
        members.push(member);
    }
    let made_up = |path: &str| {
        path.replace(
            "/descriptions/{id}",
            "/descriptions/desc_00000000000000000000000000000000",
        )
        .replace("/keys/{id}", "/keys/key_00000000000000000000000000000000")
        .replace(
            "/members/{id}",
            "/members/usr_00000000000000000000000000000000",
        )
        .replace(
            "/invitations/{id}",
            "/invitations/inv_00000000000000000000000000000000",
        )
    };
    let mut checked = 0;
    for (index, (role, _)) in visitors.clone().into_iter().enumerate() {
        let visitor = if index == 0 {
            &mut owner
        } else {
            &mut members[index - 1]
        };
        for &(method, path, access) in ROUTES {
            let Access::Member(capability) = access else {
                continue;
            };
            let url = made_up(path);
            let page = match method {
                "GET" => visitor.get(&url).await,
                _ => visitor.post(&url, &[]).await,
            };
            if allows(role, capability) {
                assert_ne!(
                    page.status,
                    StatusCode::FORBIDDEN,
                    "{role:?} {method} {path}: {}",
                    page.body
                );
                assert_ne!(
                    page.status,
                    StatusCode::SEE_OTHER,
                    "{role:?} {method} {path} logged out"
                );
            } else {
                assert_eq!(
                    page.status,
                    StatusCode::FORBIDDEN,
                    "{role:?} {method} {path}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 4 * 15, "{checked}");

    // Another account's description: 404 to a member of this one, never its page.
    let (mut other, _, _) = get_started(&server, &outbox, "Otto", "otto@other.example").await;
    let described = other
        .post_images("/console/describe", &[], vec![crate::common::fixture(1)])
        .await;
    let theirs = described.location().split('?').next().unwrap().to_string();
    assert!(
        theirs.starts_with("/console/descriptions/desc_"),
        "{}",
        described.body
    );
    assert_eq!(owner.get(&theirs).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        owner.post(&theirs, &[("action", "approve")]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(other.get(&theirs).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_carry_strict_headers_and_load_nothing_from_elsewhere() {
    let db = TestDatabase::sqlite();
    let (server, _) = start_console(&db, &[]);
    let mut visitor = Visitor::new(&server);
    let page = visitor.get("/console/login").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    assert_eq!(page.headers["x-content-type-options"], "nosniff");
    assert!(page.body.starts_with("<!doctype html>") && page.body.contains("<html lang=\"en\">"));
    let css = page
        .body
        .split("href=\"/console/assets/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let asset = visitor.get(&format!("/console/assets/{css}")).await;
    assert_eq!(asset.status, StatusCode::OK);
    assert!(
        asset.headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        visitor
            .get("/console/assets/console.00000000.css")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Not a page of ours without --console.
    let plain = crate::common::server::Server::start(&[]);
    assert_eq!(
        Visitor::new(&plain).get("/console/login").await.status,
        StatusCode::NOT_FOUND
    );

    let root = crate::common::root().join("src/console");
    let mut files: Vec<_> = std::fs::read_dir(root.join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.extend(
        std::fs::read_dir(root.join("assets"))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("http://www.w3.org/2000/svg", "");
        for needle in [
            "http://",
            "https://",
            "//cdn",
            "@import",
            " style=\"",
            "<script>",
        ] {
            assert!(
                !text.contains(needle),
                "{} contains `{needle}`: the console loads nothing from elsewhere and has no inline code",
                file.display()
            );
        }
    }
}

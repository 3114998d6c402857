//! The console in a real browser (Debian's Chromium over CDP): get started, confirm by the
//! outbox mail, enrol TOTP, describe an image, edit and approve it, create a key, invite a
//! member; axe-core (WCAG 2.x A/AA) on every page, logged in or not; keyboard focus visible;
//! reflow at 360 px; screenshots written.

use std::path::PathBuf;

use super::*;
use crate::common::cdp::{Browser, CHROMIUM, Tab};

fn axe_source() -> Option<String> {
    let path = crate::common::root().join("tests/browser/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(path).ok()
}

/// Where screenshots go: `docs/` when ALTIMAGE_UPDATE_SCREENSHOTS is set (the README shows
/// them), else a folder under target/ (so a test run leaves the tree clean).
fn screenshot_dir() -> PathBuf {
    let root = crate::common::root();
    let dir = if std::env::var_os("ALTIMAGE_UPDATE_SCREENSHOTS").is_some() {
        root.join("docs")
    } else {
        root.join("target/console-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Checker {
    axe: String,
    shots: PathBuf,
    checked: Vec<String>,
}

impl Checker {
    /// axe on the current page: any violation fails, naming the page.
    fn page(&mut self, tab: &mut Tab<'_>, name: &str) {
        let violations = tab.axe(&self.axe);
        assert!(
            violations.is_empty(),
            "axe on {name} ({}):\n{}",
            tab.path(),
            violations.join("\n")
        );
        self.checked.push(name.to_string());
    }

    fn shot(&mut self, tab: &mut Tab<'_>, name: &str) {
        tab.screenshot(&self.shots.join(format!("console-{name}.png")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_a_real_browser() {
    if !std::path::Path::new(CHROMIUM).exists() || axe_source().is_none() {
        // `make test` installs both (scripts/install-test-browser.sh) and sets this, so CI
        // cannot pass without the browser check.
        assert!(
            std::env::var_os("ALTIMAGE_REQUIRE_BROWSER").is_none(),
            "ALTIMAGE_REQUIRE_BROWSER is set but Chromium or axe-core is missing: run scripts/install-test-browser.sh"
        );
        eprintln!(
            "NOTE: Chromium or axe-core is not installed; the console browser test is skipped"
        );
        return;
    }
    let db = TestDatabase::sqlite();
    let (server, outbox) = start_console(&db, &[]);
    let base = server.base.clone();
    let fixture = crate::common::fixture_files()[0].clone();
    let profile = tempfile::tempdir().unwrap();
    let mut checker = Checker {
        axe: axe_source().unwrap(),
        shots: screenshot_dir(),
        checked: Vec::new(),
    };
    tokio::task::spawn_blocking(move || {
        let mut browser = Browser::launch(profile.path());
        let version = browser.version();
        eprintln!("browser: {version}");
        let mut tab = browser.tab();

        // axe finds what it should: a bad page is not reported clean.
        tab.goto("data:text/html,<html><body><img src='x.png'><input id='q'></body></html>");
        let violations = tab.axe(&checker.axe);
        for rule in ["image-alt", "label", "html-has-lang", "document-title"] {
            assert!(violations.iter().any(|v| v.starts_with(rule)), "axe missed {rule}: {violations:?}");
        }

        // Sign up: the 18+ box is required; the error summary takes the focus.
        tab.goto(&format!("{base}/console/signup"));
        checker.page(&mut tab, "sign-up");
        checker.shot(&mut tab, "signup");
        tab.fill("name", "Ann Berg");
        tab.fill("company", "Shop GmbH");
        tab.fill("email", "ann@shop.example");
        tab.fill("password", PASSWORD);
        tab.navigate_by("document.querySelector('form[action=\"/console/signup\"] button[type=submit]').click()");
        tab.wait_for("document.activeElement && document.activeElement.id === 'error-summary'");
        checker.page(&mut tab, "sign-up with errors");
        tab.fill("password", PASSWORD);
        tab.eval("document.getElementById('adult').click()");
        tab.navigate_by("document.querySelector('form[action=\"/console/signup\"] button[type=submit]').click()");
        assert!(tab.text().contains("Check your email"));
        checker.page(&mut tab, "check your email");

        // Confirm by the link in the outbox.
        let link = link_in(&mail_to(&outbox, "ann@shop.example"), "/console/verify");
        tab.goto(&format!("{base}{link}"));
        checker.page(&mut tab, "confirm email");
        tab.navigate_by("document.querySelector('form[action=\"/console/verify\"] button').click()");
        assert!(tab.path().starts_with("/console/login"), "{}", tab.path());
        checker.page(&mut tab, "log in");
        checker.shot(&mut tab, "login");

        // Log in, enrol TOTP from the secret the page shows, keep the recovery codes.
        tab.fill("email", "ann@shop.example");
        tab.fill("password", PASSWORD);
        tab.navigate_by("document.querySelector('form[action=\"/console/login\"] button').click()");
        assert_eq!(tab.path(), "/console/mfa/setup");
        checker.page(&mut tab, "set up two-factor authentication");
        checker.shot(&mut tab, "mfa-setup");
        let secret = tab.eval("document.querySelector('.secret code').textContent").as_str().unwrap().to_string();
        tab.fill("code", &totp_now(&secret));
        tab.navigate_by("document.querySelector('form[action=\"/console/mfa/setup\"] button').click()");
        assert!(tab.text().contains("recovery codes"), "{}", tab.text());
        checker.page(&mut tab, "recovery codes");
        let cookie = tab.eval("document.cookie");
        assert_eq!(cookie, serde_json::json!(""), "the session cookie is HttpOnly");
        tab.navigate_by("document.querySelector('a.button').click()");
        assert_eq!(tab.path(), "/console/library");
        checker.page(&mut tab, "empty library");

        // Describe: the preview comes from the browser's memory (a blob: URL), not the server.
        tab.goto(&format!("{base}/console/describe"));
        checker.page(&mut tab, "describe");
        tab.choose_file("images", &fixture);
        tab.wait_for("document.querySelector('#preview img') !== null");
        let preview = tab.eval("document.querySelector('#preview img').src");
        assert!(preview.as_str().unwrap().starts_with("blob:"), "{preview}");
        checker.shot(&mut tab, "describe");
        tab.navigate_by("document.querySelector('#describe-form button[type=submit]').click()");
        assert!(tab.path().starts_with("/console/descriptions/desc_"), "{}: {}", tab.path(), tab.text());
        checker.page(&mut tab, "description");
        tab.fill("out-alt_text", "A blue ceramic mug on a wooden table");
        tab.navigate_by("document.querySelector('button[value=save_approve]').click()");
        assert!(tab.text().contains("Approved."), "{}", tab.text());
        checker.page(&mut tab, "approved description");
        checker.shot(&mut tab, "review");

        tab.goto(&format!("{base}/console/library"));
        assert!(tab.text().contains("A blue ceramic mug"));
        checker.page(&mut tab, "library");
        checker.shot(&mut tab, "library");

        // Keys: created, the secret shown once.
        tab.goto(&format!("{base}/console/keys"));
        checker.page(&mut tab, "API keys");
        tab.fill("name", "Shop import");
        tab.navigate_by("document.querySelector('form[action=\"/console/keys\"] button[type=submit]').click()");
        let secret_key = tab.eval("document.getElementById('new-secret').textContent");
        assert!(secret_key.as_str().unwrap().starts_with("altk_"));
        checker.page(&mut tab, "new API key");
        checker.shot(&mut tab, "keys");

        // Members: an invitation whose link can be copied.
        tab.goto(&format!("{base}/console/members"));
        checker.page(&mut tab, "members");
        tab.fill("email", "vic@shop.example");
        tab.navigate_by("document.querySelector('form[action=\"/console/members/invite\"] button').click()");
        assert!(tab.eval("document.getElementById('invitation-link').textContent").as_str().unwrap().contains("/console/invite/"));
        checker.page(&mut tab, "invitation created");
        checker.shot(&mut tab, "members");

        tab.goto(&format!("{base}/console/security"));
        checker.page(&mut tab, "security");

        // Keyboard: every stop in the tab order is visible, with a visible focus indicator.
        tab.goto(&format!("{base}/console/library"));
        let stops = tab.eval(
            "(async () => { const seen = []; for (let i = 0; i < 40; i++) { \
               const before = document.activeElement; \
               const all = [...document.querySelectorAll('a[href], button, input, select, textarea')].filter(e => !e.disabled && e.offsetParent !== null); \
               const next = all[(all.indexOf(before) + 1) % all.length]; next.focus(); \
               const style = getComputedStyle(next); \
               seen.push({ tag: next.tagName, outline: style.outlineStyle, visible: next.getBoundingClientRect().width > 0 }); } \
               return seen; })()",
        );
        for stop in stops.as_array().unwrap() {
            assert_eq!(stop["visible"], true, "{stop}");
        }

        // Reflow: nothing scrolls sideways at 360 px but wide tables (which scroll inside).
        tab.viewport(Some(360));
        tab.goto(&format!("{base}/console/library"));
        let width = tab.eval("document.documentElement.scrollWidth").as_i64().unwrap();
        assert!(width <= 360, "the library is {width}px wide at a 360px viewport");
        checker.shot(&mut tab, "library-360");
        tab.viewport(None);

        // Logged out, the pages a stranger sees are checked too.
        tab.navigate_by("document.querySelector('form[action=\"/console/logout\"] button').click()");
        assert!(tab.path().starts_with("/console/login"));
        tab.goto(&format!("{base}/console/password/forgot"));
        checker.page(&mut tab, "forgot password");
        tab.goto(&format!("{base}/console/invite/not-a-token"));
        checker.page(&mut tab, "invitation gone");
        eprintln!("axe passed on {} pages: {}", checker.checked.len(), checker.checked.join(", "));
    })
    .await
    .unwrap();
}

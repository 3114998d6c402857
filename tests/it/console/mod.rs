//! The console over real HTTP without a browser: every guard (CSRF, fixation, expiry, throttling,
//! roles, tenancy), the flows from sign-up to review, the headers. A reqwest client that keeps
//! the session cookie and the form token the way a browser would.

mod browser;
mod flows;
mod guards;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::common::db::TestDatabase;
use crate::common::server::{Server, start_on};

pub const ADMIN: &str = "admin-token-for-console-tests";
/// What `--public-url` says in these tests; links in mail are rewritten to the real port.
pub const PUBLIC: &str = "http://127.0.0.1:9";
pub const PASSWORD: &str = "lantern orbit meadow";

/// A server with the console on (sign-up open unless `extra` says otherwise) and its outbox.
pub fn start_console(db: &TestDatabase, extra: &[&str]) -> (Server, PathBuf) {
    let outbox = db.data_dir.path().join("outbox");
    let outbox_flag = outbox.to_str().unwrap().to_string();
    let mut flags = vec![
        "--console",
        "--public-url",
        PUBLIC,
        "--mail-outbox-dir",
        &outbox_flag,
    ];
    if !extra.contains(&"--signup") {
        flags.extend(["--signup", "open"]);
    }
    flags.extend_from_slice(extra);
    (start_on(db, ADMIN, &flags), outbox)
}

/// A browser-like client: one cookie (the session), the last page's form token, no redirects
/// followed (tests read them).
pub struct Visitor {
    http: reqwest::Client,
    base: String,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The value of the first `<input … name="NAME" value="…">` on the page.
    pub fn input(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(unescape(&self.body[start..end]))
    }
}

fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x2F;", "/")
        .replace("&#43;", "+")
        .replace("&#61;", "=")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Visitor {
    pub fn new(server: &Server) -> Visitor {
        Visitor {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            base: server.base.clone(),
            cookie: None,
            csrf: None,
        }
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            if let Some(rest) = value.strip_prefix("__Host-altimage_session=") {
                let cookie = rest.split(';').next().unwrap().to_string();
                self.cookie = (!cookie.is_empty()).then_some(cookie);
            }
        }
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        self.keep(&response);
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        if let Some(token) = page.input("csrf") {
            self.csrf = Some(token);
        }
        page
    }

    fn with_cookie(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.cookie {
            Some(cookie) => request.header("cookie", format!("__Host-altimage_session={cookie}")),
            None => request,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.with_cookie(self.http.get(format!("{}{path}", self.base)));
        let response = request.send().await.unwrap();
        self.finish(response).await
    }

    /// A form POST as a browser sends it from our own page (`Sec-Fetch-Site: same-origin`),
    /// with the session's token added when the form is a member's.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(token) = &self.csrf
            && !fields.iter().any(|(k, _)| *k == "csrf")
        {
            form.push(("csrf".into(), token.clone()));
        }
        self.post_raw(path, &form, &[("sec-fetch-site", "same-origin")])
            .await
    }

    pub async fn post_raw(
        &mut self,
        path: &str,
        form: &[(String, String)],
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self
            .with_cookie(self.http.post(format!("{}{path}", self.base)))
            .form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        self.finish(response).await
    }

    /// `multipart/form-data` with the token first, then `fields`, then the images.
    pub async fn post_images(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        images: Vec<Vec<u8>>,
    ) -> Page {
        let mut form =
            reqwest::multipart::Form::new().text("csrf", self.csrf.clone().unwrap_or_default());
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        for (i, image) in images.into_iter().enumerate() {
            form = form.part(
                "images",
                reqwest::multipart::Part::bytes(image)
                    .file_name(format!("image-{i}.png"))
                    .mime_str("image/png")
                    .unwrap(),
            );
        }
        let request = self
            .with_cookie(self.http.post(format!("{}{path}", self.base)))
            .header("sec-fetch-site", "same-origin")
            .multipart(form);
        let response = request.send().await.unwrap();
        self.finish(response).await
    }
}

/// The newest mail to `to` in the outbox, its body decoded from quoted-printable.
pub fn mail_to(outbox: &Path, to: &str) -> String {
    let mut mails: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(outbox)
        .unwrap_or_else(|e| panic!("no outbox at {}: {e}", outbox.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "eml"))
        .map(|entry| {
            (
                entry.metadata().unwrap().modified().unwrap(),
                std::fs::read_to_string(entry.path()).unwrap(),
            )
        })
        .filter(|(_, mail)| mail.lines().any(|l| l.starts_with("To:") && l.contains(to)))
        .collect();
    mails.sort_by_key(|(time, _)| *time);
    let (_, mail) = mails.pop().unwrap_or_else(|| panic!("no mail to {to}"));
    decode_quoted_printable(&mail)
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path and query of the first console link in `mail` (its origin is `PUBLIC`).
pub fn link_in(mail: &str, path_prefix: &str) -> String {
    let marker = format!("{PUBLIC}{path_prefix}");
    let start = mail
        .find(&marker)
        .unwrap_or_else(|| panic!("no {path_prefix} link in:\n{mail}"))
        + PUBLIC.len();
    let end = mail[start..]
        .find(|c: char| c.is_whitespace())
        .map_or(mail.len(), |e| e + start);
    mail[start..end].to_string()
}

/// The current TOTP code of a base32 secret as the setup page shows it ("ABCD EFGH …").
pub fn totp_now(grouped_secret: &str) -> String {
    let secret = base32_decode(&grouped_secret.replace(' ', ""));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    altimage::console::totp::code_at(&secret, now)
}

/// The code of the next 30-second step (for a second login within one step: the current code
/// was used, and a step ahead is accepted).
pub fn totp_next(grouped_secret: &str) -> String {
    let secret = base32_decode(&grouped_secret.replace(' ', ""));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    altimage::console::totp::code_at(&secret, now + 30)
}

fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.chars() {
        buffer = (buffer << 5) | ALPHABET.find(c).unwrap() as u32;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    out
}

/// The secret as the setup page prints it.
pub fn secret_on(page: &Page) -> String {
    let start = page
        .body
        .find("<code data-copy>")
        .expect("the setup page shows the secret")
        + "<code data-copy>".len();
    let end = page.body[start..].find('<').unwrap() + start;
    page.body[start..end].to_string()
}

/// Signs up, confirms by the mailed link, logs in and enrols TOTP. Returns the logged-in
/// visitor, the TOTP secret and the recovery codes.
pub async fn get_started(
    server: &Server,
    outbox: &Path,
    name: &str,
    email: &str,
) -> (Visitor, String, Vec<String>) {
    let mut visitor = Visitor::new(server);
    let page = visitor
        .post(
            "/console/signup",
            &[
                ("name", name),
                ("company", "Shop GmbH"),
                ("email", email),
                ("password", PASSWORD),
                ("adult", "yes"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = link_in(&mail_to(outbox, email), "/console/verify");
    let page = visitor.get(&link).await;
    let token = page
        .input("token")
        .expect("the verify page carries the token");
    let page = visitor.post("/console/verify", &[("token", &token)]).await;
    assert_eq!(page.location(), "/console/login?notice=verified");
    let (secret, codes) = log_in_and_enrol(&mut visitor, email).await;
    // The library's form token, as a browser would have it on its next page.
    visitor.get("/console/library").await;
    (visitor, secret, codes)
}

/// Logs in (password) and enrols TOTP, as a member of an account that requires MFA must.
pub async fn log_in_and_enrol(visitor: &mut Visitor, email: &str) -> (String, Vec<String>) {
    let page = visitor
        .post(
            "/console/login",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.location(), "/console/mfa/setup", "{}", page.body);
    let setup = visitor.get("/console/mfa/setup").await;
    assert_eq!(setup.status, StatusCode::OK);
    let secret = secret_on(&setup);
    let sealed = setup.input("sealed").unwrap();
    let page = visitor
        .post(
            "/console/mfa/setup",
            &[("sealed", &sealed), ("code", &totp_now(&secret))],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let codes: Vec<String> = page
        .body
        .split("<li><code>")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 10, "ten recovery codes are shown once");
    (secret, codes)
}

/// Every test database: SQLite, and PostgreSQL when configured.
pub async fn databases() -> Vec<TestDatabase> {
    TestDatabase::all().await
}

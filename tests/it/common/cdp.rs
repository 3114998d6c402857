//! A small Chrome DevTools Protocol client for the browser tests: Debian's Chromium started
//! headless with `--remote-debugging-pipe` (JSON messages, NUL-separated, on file descriptors 3
//! and 4), so no WebSocket and no CDP crate (a generated CDP crate costs minutes of cold build).
//! Blocking: run it on a blocking thread.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    child: Child,
    to_browser: File,
    from_browser: BufReader<File>,
    next_id: u64,
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // Close-on-exec: only the copies made on 3 and 4 reach the browser.
    let status = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(status, 0, "pipe2 failed");
    (fds[0], fds[1])
}

impl Browser {
    /// Starts Chromium with a fresh profile in `profile`.
    pub fn launch(profile: &Path) -> Browser {
        let (browser_reads, we_write) = pipe();
        let (we_read, browser_writes) = pipe();
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-pipe",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(browser_reads, 3) < 0 || libc::dup2(browser_writes, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        unsafe {
            libc::close(browser_reads);
            libc::close(browser_writes);
        }
        Browser {
            child,
            to_browser: unsafe { File::from_raw_fd(we_write) },
            from_browser: BufReader::new(unsafe { File::from_raw_fd(we_read) }),
            next_id: 1,
        }
    }

    /// Sends one command (to a page's session when given) and waits for its answer; events in
    /// between are skipped. An error answer is `Err` with its message.
    pub fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .map_err(|e| format!("write to chromium: {e}"))?;
        loop {
            let mut buffer = Vec::new();
            let read = self
                .from_browser
                .read_until(0, &mut buffer)
                .map_err(|e| format!("read from chromium: {e}"))?;
            if read == 0 {
                return Err("chromium closed the pipe".into());
            }
            buffer.pop();
            let answer: Value =
                serde_json::from_slice(&buffer).map_err(|e| format!("CDP message: {e}"))?;
            if answer["id"] == json!(id) {
                if let Some(error) = answer.get("error") {
                    return Err(format!("{method}: {error}"));
                }
                return Ok(answer["result"].clone());
            }
        }
    }

    /// A new tab, attached with its own session.
    pub fn tab(&mut self) -> Tab<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .unwrap();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .unwrap();
        let session = attached["sessionId"].as_str().unwrap().to_string();
        let mut tab = Tab {
            browser: self,
            session,
        };
        tab.call("Page.enable", json!({}));
        tab.call("Runtime.enable", json!({}));
        tab
    }

    /// The browser's version line, for messages (CDP changes between Chromium releases).
    pub fn version(&mut self) -> String {
        self.call(None, "Browser.getVersion", json!({}))
            .map(|v| v["product"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Tab<'a> {
    browser: &'a mut Browser,
    session: String,
}

impl Tab<'_> {
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.browser
            .call(Some(&session), method, params)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (a JavaScript expression) is true.
    pub fn wait_for(&mut self, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let result = self.call(
                "Runtime.evaluate",
                json!({ "expression": format!("!!({condition})"), "returnByValue": true }),
            );
            if result["result"]["value"] == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for `{condition}`"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens `url` and waits for the page to load.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(&format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        ));
    }

    /// Runs `action` (JavaScript that navigates, such as a click on a submit button) and waits
    /// for the next page to have loaded.
    pub fn navigate_by(&mut self, action: &str) {
        self.eval("window.__altimageOld = true");
        self.eval(action);
        self.wait_for("window.__altimageOld === undefined && document.readyState === 'complete'");
    }

    /// Sets the value of the field with this id, as typing would.
    pub fn fill(&mut self, id: &str, value: &str) {
        self.eval(&format!(
            "(() => {{ const e = document.getElementById({}); e.focus(); e.value = {}; e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()",
            json!(id),
            json!(value)
        ));
    }

    /// Gives a file input the file at `path`.
    pub fn choose_file(&mut self, id: &str, path: &Path) {
        let object = self.call(
            "Runtime.evaluate",
            json!({ "expression": format!("document.getElementById({})", json!(id)) }),
        );
        self.call(
            "DOM.setFileInputFiles",
            json!({ "files": [path.to_str().unwrap()], "objectId": object["result"]["objectId"] }),
        );
        self.eval(&format!(
            "document.getElementById({}).dispatchEvent(new Event('change', {{bubbles: true}}))",
            json!(id)
        ));
    }

    pub fn path(&mut self) -> String {
        self.eval("location.pathname + location.search")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A PNG of the viewport (or the whole page).
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The viewport as a phone's, `width` CSS pixels wide (or back to a desktop with `None`).
    pub fn viewport(&mut self, width: Option<u32>) {
        match width {
            Some(width) => self.call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": width, "height": 800, "deviceScaleFactor": 1, "mobile": true }),
            ),
            None => self.call("Emulation.clearDeviceMetricsOverride", json!({})),
        };
    }

    /// Runs axe-core (its source given) with the WCAG 2.x A and AA rules; returns the violations
    /// as `id (impact): targets` lines.
    pub fn axe(&mut self, axe_source: &str) -> Vec<String> {
        if self.eval("typeof window.axe") != json!("object") {
            self.eval(axe_source);
        }
        let result = self.eval(
            "axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa'] } })\
             .then(r => r.violations.map(v => v.id + ' (' + v.impact + '): ' + v.nodes.map(n => n.target.join(' ')).join(', ')))",
        );
        result
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

//! Helper commands run to completion (scripts, the Python tools, `pg_dump`, the `altimage` CLI):
//! one place that runs one, checks that it succeeded and says why not. One copy for the
//! integration tests (`tests/it/common/mod.rs`) and the load bench (`benches/load/main.rs`),
//! which both pull this file in with `#[path]`.

use std::process::Command;

/// Runs `command` to completion and returns its stdout. Panics, naming `what`, when it cannot
/// start or does not succeed; the message carries its exit status, stdout and stderr.
pub fn stdout_of(command: &mut Command, what: &str) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// As `stdout_of`, with stdout as text (it must be UTF-8).
pub fn text_of(command: &mut Command, what: &str) -> String {
    String::from_utf8(stdout_of(command, what))
        .unwrap_or_else(|e| panic!("{what} wrote something other than UTF-8: {e}"))
}

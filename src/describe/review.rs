//! The linter applied to descriptions: the findings on a new description's outputs and on a
//! person's edit, each output checked against the length it was asked at, in the language it
//! was asked in, beside the product title the request gave.

use serde_json::{Map, Value};

use super::lint::{self, Expectation, Finding, Severity};
use super::outputs::{self, Fit, Lengths, fit_for};
use crate::model::{Detail, Output};
use crate::store::StoreError;
use crate::store::descriptions::{Description, Revision};

/// The findings and the worst severity as the store keeps it (0 none … 3 error).
pub fn findings(
    outputs: &Map<String, Value>,
    language: &str,
    title: Option<&str>,
    fit: impl Fn(Output) -> Fit,
) -> (Vec<Finding>, i64) {
    let findings = lint::lint_outputs(outputs, |output| {
        let (max_chars, max_words) = match fit(output) {
            Fit::Chars(max) => (Some(max), None),
            Fit::Words(max) => (None, Some(max)),
            Fit::Keywords(_) | Fit::Whole => (None, None),
        };
        Expectation {
            language,
            max_chars,
            max_words,
            title,
        }
    });
    let level = level(lint::worst(&findings));
    (findings, level)
}

/// A severity as a number that orders in SQL.
pub fn level(severity: Option<Severity>) -> i64 {
    match severity {
        None => 0,
        Some(Severity::Info) => 1,
        Some(Severity::Warning) => 2,
        Some(Severity::Error) => 3,
    }
}

/// The product title a description's stored context carries.
pub fn title_of(context: Option<&Value>) -> Option<&str> {
    context?.get("title")?.as_str()
}

/// A person's edit of `current` (`text` replaces the primary output, `changes` the outputs they
/// name), with the findings on the result, as the store's edit applies it.
pub fn revise(
    current: &Description,
    text: Option<&str>,
    changes: Option<&Map<String, Value>>,
) -> Result<Revision, StoreError> {
    let Value::Object(before) = &current.outputs else {
        return Err(StoreError::Corrupt(format!(
            "outputs is not an object: {}",
            current.outputs
        )));
    };
    let (text, outputs) = outputs::edited(before, text, changes).map_err(StoreError::Invalid)?;
    let lengths = Lengths::of_options(&current.options);
    let detail = current
        .detail
        .as_deref()
        .and_then(|d| d.parse::<Detail>().ok());
    let (findings, lint_level) = findings(
        &outputs,
        &current.language,
        title_of(current.context.as_ref()),
        |output| fit_for(output, lengths, detail),
    );
    Ok(Revision {
        text,
        outputs,
        findings: serde_json::to_value(findings).expect("findings serialise; this is a bug"),
        lint_level,
    })
}

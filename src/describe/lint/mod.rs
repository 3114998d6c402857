//! The alt-text linter: every generated or edited output is checked against rules drawn from
//! WCAG 2.2's alt-text guidance and the W3C alt decision tree, in the language it is written in.
//! Each finding has a stable code, a severity and a message that says how to fix it.

mod language;
mod phrases;
mod rules;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::model::Output;

pub use language::guess as guess_language;

/// How much a finding matters to a reviewer. Ordered: `Error` is the worst.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look; often fine.
    Info,
    /// Likely to hurt a screen-reader user or the shop's search ranking.
    Warning,
    /// Not usable as it is: a reviewer must change it before it goes on the shop.
    Error,
}

/// What the linter found in one output. `code` is stable: clients may filter and count by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    /// The output the finding is about (`alt_text`, `description`, `seo_title`, `keywords`).
    pub output: Output,
    /// One of the codes listed in the README's linter table, e.g. `redundant_opening`.
    pub code: String,
    pub severity: Severity,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The part of the text the finding is about, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
}

/// What the linter knows beside the text.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    /// The BCP 47 tag the text was asked in.
    pub language: &'a str,
    /// The soft length target in characters (alt text, SEO titles), if any.
    pub max_chars: Option<usize>,
    /// The soft length target in words (descriptions), if any.
    pub max_words: Option<usize>,
    /// The product's title from the request's context, if any.
    pub title: Option<&'a str>,
}

/// The codes, severities and one-line summaries of every rule, for the README and the console.
pub const RULES: &[(&str, Severity, &str)] = &[
    ("empty", Severity::Error, "no text where an image needs one"),
    (
        "too_short",
        Severity::Warning,
        "one or two characters, or a single word",
    ),
    (
        "too_long",
        Severity::Warning,
        "longer than the length asked for",
    ),
    (
        "redundant_opening",
        Severity::Warning,
        "starts with \"image of\", \"photo of\" or its equivalent",
    ),
    (
        "file_name",
        Severity::Error,
        "reads like a file name or camera id",
    ),
    (
        "placeholder",
        Severity::Error,
        "placeholder or boilerplate text",
    ),
    (
        "repeated_words",
        Severity::Warning,
        "a word or phrase said twice in a row",
    ),
    (
        "repetition_loop",
        Severity::Error,
        "a phrase repeated three times or more (a generation loop)",
    ),
    ("all_caps", Severity::Warning, "written in capitals"),
    (
        "repeats_title",
        Severity::Warning,
        "only repeats the product title",
    ),
    (
        "unreadable_characters",
        Severity::Warning,
        "emoji, symbols, markup or URLs that screen readers read badly",
    ),
    (
        "language_mismatch",
        Severity::Warning,
        "written in another language than the one asked for",
    ),
    (
        "promotional",
        Severity::Info,
        "sales wording that describes nothing visible",
    ),
];

/// Every finding for one output's text. Keyword lists are checked item by item for what matters
/// in a list (placeholders, file names, unreadable characters); the rest is for prose.
pub fn lint(output: Output, text: &str, expect: &Expectation<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut found = |code: &'static str, message: String, excerpt: Option<String>| {
        let severity = severity_of(code);
        findings.push(Finding {
            output,
            code: code.to_string(),
            severity,
            message,
            excerpt,
        });
    };
    rules::check(output, text, expect, &mut found);
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
    findings
}

/// Every output of a description's `outputs` object (strings, and keyword lists).
pub fn lint_outputs<'a>(
    outputs: &serde_json::Map<String, serde_json::Value>,
    expect_for: impl Fn(Output) -> Expectation<'a>,
) -> Vec<Finding> {
    let mut all = Vec::new();
    for output in Output::ALL {
        let Some(value) = outputs.get(output.as_str()) else {
            continue;
        };
        let text = match value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|item| item.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            _ => continue,
        };
        all.extend(lint(output, &text, &expect_for(output)));
    }
    all
}

/// The worst severity among findings, if any.
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}

fn severity_of(code: &str) -> Severity {
    RULES
        .iter()
        .find(|(known, _, _)| *known == code)
        .map(|(_, severity, _)| *severity)
        .unwrap_or_else(|| panic!("lint code {code} is not in RULES; this is a bug"))
}

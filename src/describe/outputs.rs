//! From the model's text to a description's outputs: alt text and SEO titles cut at a word
//! boundary, descriptions cut at a word count, keywords split into a list without repeats; and
//! which output is the description's `text`.

use serde_json::{Map, Value};

use super::request::{DEFAULT_ALT_TEXT_CHARS, DEFAULT_KEYWORD_COUNT, PlannedOutput};
use crate::model::generate::FinishReason;
use crate::model::{Detail, Generated, Output};

/// The longest SEO title, in characters (what search results show).
pub const SEO_TITLE_CHARS: usize = 60;

/// How one output's text is fitted to what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// At most this many characters, cut at a word boundary.
    Chars(usize),
    /// At most this many words.
    Words(usize),
    /// A list of at most this many keywords.
    Keywords(usize),
    /// As generated.
    Whole,
}

/// One output, fitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub value: Value,
    /// Whether fitting shortened what the model wrote.
    pub truncated: bool,
}

/// The lengths a request may ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lengths {
    pub max_chars: Option<usize>,
    pub max_words: Option<usize>,
    pub keyword_count: Option<usize>,
}

impl Lengths {
    /// As stored in a description's `options`.
    pub fn of_options(options: &Value) -> Self {
        let read = |name: &str| {
            options
                .get(name)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        };
        Self {
            max_chars: read("max_chars"),
            max_words: read("max_words"),
            keyword_count: read("keyword_count"),
        }
    }
}

/// How an output's text is fitted. Alt text is cut at 125 characters unless the request says
/// otherwise or asked Florence-2 for a longer caption (`detail`), which it then keeps whole as
/// before outputs existed.
pub fn fit_for(output: Output, lengths: Lengths, detail: Option<Detail>) -> Fit {
    match output {
        Output::AltText => match (lengths.max_chars, detail) {
            (Some(max), _) => Fit::Chars(max),
            (None, Some(Detail::Detailed | Detail::Paragraph)) => Fit::Whole,
            (None, _) => Fit::Chars(DEFAULT_ALT_TEXT_CHARS),
        },
        Output::Description => lengths.max_words.map_or(Fit::Whole, Fit::Words),
        Output::SeoTitle => Fit::Chars(SEO_TITLE_CHARS),
        Output::Keywords => Fit::Keywords(lengths.keyword_count.unwrap_or(DEFAULT_KEYWORD_COUNT)),
    }
}

pub fn fit(text: &str, fit: Fit) -> Fitted {
    match fit {
        Fit::Chars(max) => {
            let cut = truncate_at_word(text, max);
            Fitted {
                truncated: cut.len() < text.len(),
                value: cut.into(),
            }
        }
        Fit::Words(max) => {
            let words: Vec<&str> = text.split_whitespace().collect();
            if words.len() <= max {
                return Fitted {
                    value: text.into(),
                    truncated: false,
                };
            }
            Fitted {
                value: words[..max].join(" ").into(),
                truncated: true,
            }
        }
        Fit::Keywords(max) => {
            let all = keywords(text);
            Fitted {
                truncated: all.len() > max,
                value: all.into_iter().take(max).collect::<Vec<_>>().into(),
            }
        }
        Fit::Whole => Fitted {
            value: text.into(),
            truncated: false,
        },
    }
}

/// The keywords of a comma-separated answer (Latin, CJK and Arabic commas, semicolons, line
/// breaks and list bullets count as separators), trimmed, each once (case-insensitively).
pub fn keywords(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.split([',', ';', '\n', '、', '，', '；', '،'])
        .map(|item| {
            item.trim()
                .trim_start_matches(['-', '*', '•', '·'])
                .trim()
                .trim_matches(['"', '\'', '.', '。'])
                .trim()
                .to_string()
        })
        .filter(|item| !item.is_empty() && seen.insert(item.to_lowercase()))
        .collect()
}

/// Cuts text at a word boundary so that it never exceeds `max_chars` characters.
pub fn truncate_at_word(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let cut: String = text.chars().take(max_chars).collect();
    let next_is_space = text.chars().nth(max_chars).is_some_and(char::is_whitespace);
    let kept = if next_is_space {
        cut.as_str()
    } else {
        match cut.rfind(char::is_whitespace) {
            Some(at) => &cut[..at],
            None => cut.as_str(),
        }
    };
    kept.trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':')
        .to_string()
}

/// The output that is a description's `text`: alt text when there is some, else the first of
/// description, SEO title and keywords. A fixed order, so that the stored outputs alone say
/// which one it is.
pub fn primary(outputs: &Map<String, Value>) -> Option<Output> {
    Output::ALL
        .into_iter()
        .find(|output| outputs.contains_key(output.as_str()))
}

/// An output's value as one string: keywords joined with `, `.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// The `text` of a set of outputs: the primary one's.
pub fn primary_text(outputs: &Map<String, Value>) -> String {
    primary(outputs)
        .and_then(|output| outputs.get(output.as_str()))
        .map(as_text)
        .unwrap_or_default()
}

/// One image's outputs as the model wrote them, fitted and put together: what the service stores
/// and the CLI writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    /// The primary output's text.
    pub text: String,
    pub outputs: Map<String, Value>,
    /// All outputs together, before fitting.
    pub generated_tokens: u64,
    /// `eos` unless an output stopped otherwise (a length stop says more than an end of text).
    pub finish_reason: FinishReason,
    /// Whether fitting shortened any output.
    pub truncated: bool,
}

/// Fits each generated text to its planned output; `generated` in the plan's order.
pub fn assemble(planned: &[PlannedOutput], generated: &[Generated]) -> Assembled {
    let mut outputs = Map::new();
    let (mut truncated, mut generated_tokens) = (false, 0);
    let mut finish_reason = FinishReason::Eos;
    for (planned, generated) in planned.iter().zip(generated) {
        let fitted = fit(&generated.text, planned.fit);
        truncated |= fitted.truncated;
        outputs.insert(planned.output.as_str().into(), fitted.value);
        generated_tokens += generated.generated_tokens() as u64;
        if generated.finish_reason != FinishReason::Eos {
            finish_reason = generated.finish_reason;
        }
    }
    Assembled {
        text: primary_text(&outputs),
        outputs,
        generated_tokens,
        finish_reason,
        truncated,
    }
}

/// The longest text a person may give an output, in characters.
pub const MAX_EDIT_CHARS: usize = 10_000;

/// A person's edit of a description's outputs: `text` replaces the primary output, `changes`
/// replace (or add) the outputs they name. Gives the new primary text and outputs, or why the
/// edit is refused.
pub fn edited(
    current: &Map<String, Value>,
    text: Option<&str>,
    changes: Option<&Map<String, Value>>,
) -> Result<(String, Map<String, Value>), String> {
    let mut outputs = current.clone();
    if let Some(text) = text {
        let primary = primary(current).unwrap_or(Output::AltText);
        if changes.is_some_and(|c| c.contains_key(primary.as_str())) {
            return Err(format!(
                "`text` is the `{}` output; send it or outputs.{}, not both",
                primary.as_str(),
                primary.as_str()
            ));
        }
        outputs.insert(
            primary.as_str().into(),
            edited_value(primary, &Value::from(text))?,
        );
    }
    for (name, value) in changes.into_iter().flatten() {
        let output = Output::ALL
            .into_iter()
            .find(|o| o.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown output `{name}`: expected {}",
                    Output::ALL.map(Output::as_str).join(", ")
                )
            })?;
        outputs.insert(name.clone(), edited_value(output, value)?);
    }
    Ok((primary_text(&outputs), outputs))
}

/// One output's new value: text of 1 to [`MAX_EDIT_CHARS`] characters; keywords as a list (or
/// as comma-separated text).
fn edited_value(output: Output, value: &Value) -> Result<Value, String> {
    let name = output.as_str();
    let checked = |text: &str| {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_EDIT_CHARS {
            return Err(format!("`{name}` must be 1 to {MAX_EDIT_CHARS} characters"));
        }
        Ok(text.to_string())
    };
    match (output, value) {
        (Output::Keywords, Value::String(text)) => Ok(keywords(&checked(text)?).into()),
        (Output::Keywords, Value::Array(items)) => {
            let joined = items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| "`keywords` must be a list of strings".to_string())
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(", ");
            Ok(keywords(&checked(&joined)?).into())
        }
        (_, Value::String(text)) => Ok(checked(text)?.into()),
        _ => Err(format!("`{name}` must be text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_words_and_the_limit() {
        assert_eq!(
            truncate_at_word("a red shoe on white", 100),
            "a red shoe on white"
        );
        assert_eq!(truncate_at_word("a red shoe on white", 10), "a red shoe");
        assert_eq!(truncate_at_word("a red shoe, on white", 11), "a red shoe");
        assert_eq!(truncate_at_word("unbreakable", 4), "unbr");
        assert_eq!(truncate_at_word("ü ü ü ü", 3), "ü ü");
        for limit in 1..30 {
            assert!(
                truncate_at_word("A green car parked in front of a yellow building.", limit)
                    .chars()
                    .count()
                    <= limit
            );
        }
    }

    #[test]
    fn keywords_are_split_trimmed_and_unique() {
        assert_eq!(
            keywords(" Becher, Keramik;becher\n- handgemacht, \"Geschenk\".、陶器，マグ"),
            [
                "Becher",
                "Keramik",
                "handgemacht",
                "Geschenk",
                "陶器",
                "マグ"
            ]
        );
        assert!(keywords(" , ;").is_empty());
        let fitted = fit("a, b, c", Fit::Keywords(2));
        assert_eq!(fitted.value, serde_json::json!(["a", "b"]));
        assert!(fitted.truncated);
    }

    #[test]
    fn words_and_the_primary_output() {
        let fitted = fit("one two  three four", Fit::Words(3));
        assert_eq!(fitted.value, "one two three");
        assert!(fitted.truncated);
        assert!(!fit("one two", Fit::Words(3)).truncated);
        let outputs: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "keywords": ["mug", "white"], "seo_title": "A mug"
        }))
        .unwrap();
        assert_eq!(primary(&outputs), Some(Output::SeoTitle));
        let keywords_only: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"keywords": ["mug", "white"]})).unwrap();
        assert_eq!(primary_text(&keywords_only), "mug, white");
    }

    #[test]
    fn edits_replace_the_primary_or_the_named_outputs() {
        let current: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "alt_text": "A mug.", "keywords": ["mug"]
        }))
        .unwrap();
        let (text, outputs) = edited(&current, Some(" A white mug. "), None).unwrap();
        assert_eq!(text, "A white mug.");
        assert_eq!(outputs["keywords"], serde_json::json!(["mug"]));
        let changes: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "keywords": "cup, Cup, white", "seo_title": "White mug"
        }))
        .unwrap();
        let (text, outputs) = edited(&current, None, Some(&changes)).unwrap();
        assert_eq!(text, "A mug.");
        assert_eq!(outputs["keywords"], serde_json::json!(["cup", "white"]));
        assert_eq!(outputs["seo_title"], "White mug");
        let refused = [
            serde_json::json!({"alt_text": ""}),
            serde_json::json!({"poem": "x"}),
            serde_json::json!({"description": ["x"]}),
            serde_json::json!({"keywords": [1]}),
        ];
        for change in refused {
            let change: Map<String, Value> = serde_json::from_value(change).unwrap();
            assert!(edited(&current, None, Some(&change)).is_err(), "{change:?}");
        }
        let both: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"alt_text": "x"})).unwrap();
        assert!(edited(&current, Some("y"), Some(&both)).is_err());
    }
}

//! One validation stage for a describe request, whoever sends it (the HTTP routes, the CLI, bulk
//! jobs): the caller's options in, a [`ValidDescribeRequest`] out whose values are in range for
//! the loaded model and this server's limits. Nothing below this stage checks them again (the
//! model families only `debug_assert`), as TGI's `Validation` hands `ValidGenerateRequest` on.

use bytes::Bytes;
use serde_json::Value;

use crate::model::{Detail, GenerationOptions, ModelCard, Task};
use crate::strings::{self, Shape};

/// The longest `asset_id`, in bytes.
pub const MAX_ASSET_ID_BYTES: usize = 256;

/// The largest `metadata` object, serialised.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Where the image comes from before it is fetched or decoded.
#[derive(Debug)]
pub enum ImageSource {
    Bytes(Bytes),
    Url(String),
}

/// What a caller said about one image, as sent: nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeOptions {
    /// `brief`, `detailed` or `paragraph`; `None` is `brief`.
    pub detail: Option<String>,
    pub max_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    /// Cut the text at a word boundary to at most this many characters.
    pub max_chars: Option<usize>,
    pub asset_id: Option<String>,
    pub metadata: Option<Value>,
}

/// One image and what the caller said about it.
#[derive(Debug)]
pub struct DescribeRequest {
    pub source: ImageSource,
    pub options: DescribeOptions,
}

/// A request whose every value is in range: what the model runs, and what the answer carries.
#[derive(Debug)]
pub struct ValidDescribeRequest {
    pub source: ImageSource,
    pub generation: GenerationOptions,
    /// The options as the caller gave them (before defaults): they are stored with the
    /// description and make up the `Idempotency-Key` fingerprint.
    pub asked: DescribeOptions,
}

impl ValidDescribeRequest {
    pub fn detail(&self) -> Detail {
        self.generation.task.detail
    }
}

/// Why a request's options were refused: a stable `code` and a message naming the field and its
/// limit. Always the caller's fault (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
}

impl ValidationError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The limits a request is checked against: the loaded model's and the server's.
#[derive(Debug, Clone)]
pub struct Validator {
    card: ModelCard,
    max_num_beams: usize,
}

impl Validator {
    /// `max_num_beams` is the server's cap (`--max-num-beams`); the family's own is applied too.
    pub fn new(card: ModelCard, max_num_beams: usize) -> Self {
        let max_num_beams = max_num_beams.min(card.max_num_beams);
        Self {
            card,
            max_num_beams,
        }
    }

    /// The largest `max_new_tokens` a request may ask for.
    pub fn max_new_tokens(&self) -> usize {
        self.card.max_new_tokens
    }

    pub fn max_num_beams(&self) -> usize {
        self.max_num_beams
    }

    pub fn validate(
        &self,
        request: DescribeRequest,
    ) -> Result<ValidDescribeRequest, ValidationError> {
        let generation = self.generation(&request.options)?;
        Ok(ValidDescribeRequest {
            source: request.source,
            generation,
            asked: request.options,
        })
    }

    /// The model's part of the options, checked and with defaults filled in; the rest of
    /// `options` (what shapes the answer) is checked too.
    pub fn generation(
        &self,
        options: &DescribeOptions,
    ) -> Result<GenerationOptions, ValidationError> {
        let detail = match &options.detail {
            Some(detail) => detail
                .parse::<Detail>()
                .map_err(|message| ValidationError::new("invalid_detail", message))?,
            None => Detail::default(),
        };
        let task = Task {
            detail,
            ..Task::default()
        };
        let limit = self.card.max_new_tokens;
        let max_new_tokens = options
            .max_new_tokens
            .unwrap_or_else(|| self.card.frontend.default_max_new_tokens(&task).min(limit));
        if max_new_tokens == 0 || max_new_tokens > limit {
            return Err(ValidationError::new(
                "invalid_option",
                format!("max_new_tokens must be between 1 and {limit}"),
            ));
        }
        let num_beams = options.num_beams.unwrap_or(1);
        if num_beams == 0 || num_beams > self.max_num_beams {
            return Err(ValidationError::new(
                "invalid_option",
                format!(
                    "num_beams must be between 1 and {} (--max-num-beams)",
                    self.max_num_beams
                ),
            ));
        }
        check_answer_options(options)?;
        Ok(GenerationOptions {
            task,
            max_new_tokens,
            num_beams,
            sampling: None,
        })
    }
}

/// The options that shape the answer, not the model call.
fn check_answer_options(options: &DescribeOptions) -> Result<(), ValidationError> {
    if options.max_chars == Some(0) {
        return Err(ValidationError::new(
            "invalid_max_chars",
            "max_chars must be at least 1",
        ));
    }
    if let Some(id) = &options.asset_id {
        if id.len() > MAX_ASSET_ID_BYTES {
            return Err(ValidationError::new(
                "invalid_asset_id",
                format!("asset_id is longer than {MAX_ASSET_ID_BYTES} characters"),
            ));
        }
        strings::check(id, Shape::Line).map_err(|forbidden| {
            ValidationError::new(
                "invalid_characters",
                format!("`asset_id` contains {forbidden}; remove it"),
            )
        })?;
    }
    if let Some(metadata) = &options.metadata {
        if !metadata.is_object() {
            return Err(ValidationError::new(
                "invalid_metadata",
                "metadata must be a JSON object",
            ));
        }
        if metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(ValidationError::new(
                "invalid_metadata",
                "metadata is larger than 16 KiB",
            ));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::preprocess::{ImageLimits, PreprocessError};
    use crate::model::{Family, Frontend, ImageTensor, Prepared};

    struct Fixed;

    impl Frontend for Fixed {
        fn prepare(&self, _: &[u8], _: &ImageLimits) -> Result<Prepared, PreprocessError> {
            Err(PreprocessError::UnsupportedFormat)
        }
        fn prompt_len(&self, _: &Task, _: &ImageTensor) -> usize {
            4
        }
        fn default_max_new_tokens(&self, task: &Task) -> usize {
            match task.detail {
                Detail::Brief => 64,
                _ => 2000,
            }
        }
    }

    fn validator(max_new_tokens: usize, server_beams: usize) -> Validator {
        let card = ModelCard {
            family: Family::Florence2,
            max_new_tokens,
            max_num_beams: 16,
            frontend: Arc::new(Fixed),
        };
        Validator::new(card, server_beams)
    }

    fn options(f: impl FnOnce(&mut DescribeOptions)) -> DescribeOptions {
        let mut options = DescribeOptions::default();
        f(&mut options);
        options
    }

    #[test]
    fn defaults_are_filled_in_and_capped_by_the_model() {
        let v = validator(1023, 4);
        let generation = v.generation(&DescribeOptions::default()).unwrap();
        assert_eq!(generation.task.detail, Detail::Brief);
        assert_eq!((generation.max_new_tokens, generation.num_beams), (64, 1));
        // A family default above what the model holds is cut to the limit, not refused.
        let paragraph = options(|o| o.detail = Some("paragraph".into()));
        assert_eq!(v.generation(&paragraph).unwrap().max_new_tokens, 1023);
    }

    #[test]
    fn every_option_out_of_range_is_refused_with_its_code() {
        let v = validator(100, 4);
        let refused = [
            (
                options(|o| o.detail = Some("epic".into())),
                "invalid_detail",
            ),
            (options(|o| o.max_new_tokens = Some(0)), "invalid_option"),
            (options(|o| o.max_new_tokens = Some(101)), "invalid_option"),
            (options(|o| o.num_beams = Some(0)), "invalid_option"),
            (options(|o| o.num_beams = Some(5)), "invalid_option"),
            (options(|o| o.max_chars = Some(0)), "invalid_max_chars"),
            (
                options(|o| o.asset_id = Some("x".repeat(257))),
                "invalid_asset_id",
            ),
            (
                options(|o| o.asset_id = Some("a\nb".into())),
                "invalid_characters",
            ),
            (
                options(|o| o.metadata = Some(serde_json::json!([1]))),
                "invalid_metadata",
            ),
            (
                options(|o| o.metadata = Some(serde_json::json!({"k": "x".repeat(16 * 1024)}))),
                "invalid_metadata",
            ),
        ];
        for (asked, code) in refused {
            let error = v.generation(&asked).unwrap_err();
            assert_eq!(error.code, code, "{asked:?}: {error}");
        }
        let beams = v
            .generation(&options(|o| o.num_beams = Some(9)))
            .unwrap_err();
        assert!(beams.message.contains("--max-num-beams"), "{beams}");
        assert!(
            v.generation(&options(|o| o.max_new_tokens = Some(100)))
                .is_ok()
        );
    }

    #[test]
    fn the_family_caps_the_server_s_beam_limit() {
        assert_eq!(validator(10, 64).max_num_beams(), 16);
        assert_eq!(validator(10, 3).max_num_beams(), 3);
    }

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
}

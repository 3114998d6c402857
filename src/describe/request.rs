//! One validation stage for a describe request, whoever sends it (the HTTP routes, the CLI, bulk
//! jobs): the caller's options in, a [`ValidDescribeRequest`] out whose values are in range for
//! the loaded model and this server's limits. Nothing below this stage checks them again (the
//! model families only `debug_assert`), as TGI's `Validation` hands `ValidGenerateRequest` on.

use bytes::Bytes;
use serde_json::Value;

use super::context::{ContextOptions, check_tone};
use super::outputs::{Fit, Lengths, fit_for};
use crate::model::generate::sample::Sampling;
use crate::model::{Detail, GenerationOptions, ModelCard, Output, Task};
use crate::strings::{self, Shape};

/// The longest `asset_id`, in bytes.
pub const MAX_ASSET_ID_BYTES: usize = 256;

/// The largest `metadata` object, serialised.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Alt text is cut here unless the request says otherwise (what screen readers read well).
pub const DEFAULT_ALT_TEXT_CHARS: usize = 125;

/// How many keywords unless the request says otherwise.
pub const DEFAULT_KEYWORD_COUNT: usize = 8;

/// The largest `max_words` and `keyword_count`.
pub const MAX_WORDS: usize = 1000;
pub const MAX_KEYWORD_COUNT: usize = 50;

/// The hottest sampling temperature.
pub const MAX_TEMPERATURE: f32 = 2.0;

/// Where the image comes from before it is fetched or decoded.
#[derive(Debug)]
pub enum ImageSource {
    Bytes(Bytes),
    Url(String),
}

/// What a caller said about one image, as sent: nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescribeOptions {
    /// Which loaded model answers; `None` is the first.
    pub model: Option<String>,
    /// `alt_text`, `description`, `seo_title`, `keywords`; `None` is alt text alone.
    pub outputs: Option<Vec<String>>,
    /// Florence-2's caption length: `brief`, `detailed` or `paragraph`; `None` is `brief`.
    pub detail: Option<String>,
    /// BCP 47; `None` is `en`.
    pub language: Option<String>,
    pub context: Option<ContextOptions>,
    pub tone: Option<String>,
    pub max_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    /// Cut alt text at a word boundary to at most this many characters.
    pub max_chars: Option<usize>,
    /// Cut the description to at most this many words (and ask for it).
    pub max_words: Option<usize>,
    pub keyword_count: Option<usize>,
    /// Sampling instead of greedy when above 0.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub asset_id: Option<String>,
    pub metadata: Option<Value>,
}

/// One image and what the caller said about it.
#[derive(Debug)]
pub struct DescribeRequest {
    pub source: ImageSource,
    pub options: DescribeOptions,
}

/// One output of a request, ready for the engine: the model's options and how its text is
/// fitted.
#[derive(Debug, Clone)]
pub struct PlannedOutput {
    pub output: Output,
    pub generation: GenerationOptions,
    pub fit: Fit,
}

/// A request whose every value is in range for the model that will answer it.
#[derive(Debug)]
pub struct ValidDescribeRequest {
    pub source: ImageSource,
    /// Index of the answering model among the validator's.
    pub model: usize,
    /// In the order asked.
    pub outputs: Vec<PlannedOutput>,
    /// The options as the caller gave them (before defaults): they are stored with the
    /// description and make up the `Idempotency-Key` fingerprint.
    pub asked: DescribeOptions,
    /// The language, as the model writes it.
    pub language: String,
    /// The seed sampling used (the caller's, or one drawn for this request), so that the
    /// answer can be reproduced.
    pub seed: Option<u64>,
}

impl ValidDescribeRequest {
    /// Florence-2's caption length of the first output (what the fingerprint has always named).
    pub fn detail(&self) -> Detail {
        self.outputs
            .first()
            .map(|o| o.generation.task.detail)
            .unwrap_or_default()
    }
}

/// Why a request's options were refused: a stable `code` and a message naming the field and its
/// limit. `unsupported` when the options are fine but the chosen model cannot do what they ask
/// (422), else the caller's mistake (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub code: &'static str,
    pub message: String,
    pub unsupported: bool,
}

impl ValidationError {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            unsupported: false,
        }
    }

    fn unsupported(message: impl Into<String>) -> Self {
        Self {
            code: "unsupported_by_model",
            message: message.into(),
            unsupported: true,
        }
    }
}

/// A loaded model as the validator sees it.
#[derive(Debug, Clone)]
pub struct ModelLimits {
    /// How requests name it (`model`), and how descriptions record it.
    pub name: String,
    pub card: ModelCard,
    /// The server's `--max-num-beams` and the family's ceiling, the lower.
    pub max_num_beams: usize,
}

/// The limits a request is checked against: the loaded models' and the server's.
#[derive(Debug, Clone)]
pub struct Validator {
    models: Vec<ModelLimits>,
}

impl Validator {
    /// `models` in the operator's order (the first answers requests that name none);
    /// `max_num_beams` is the server's cap (`--max-num-beams`).
    pub fn new(models: Vec<(String, ModelCard)>, max_num_beams: usize) -> Self {
        assert!(!models.is_empty(), "a server runs at least one model");
        Self {
            models: models
                .into_iter()
                .map(|(name, card)| ModelLimits {
                    max_num_beams: max_num_beams.min(card.max_num_beams),
                    name,
                    card,
                })
                .collect(),
        }
    }

    pub fn models(&self) -> &[ModelLimits] {
        &self.models
    }

    pub fn validate(
        &self,
        request: DescribeRequest,
    ) -> Result<ValidDescribeRequest, ValidationError> {
        let mut valid = self.plan(&request.options)?;
        valid.source = request.source;
        Ok(valid)
    }

    /// Everything but the image: which model, which outputs with their options, checked, with
    /// defaults filled in.
    pub fn plan(&self, options: &DescribeOptions) -> Result<ValidDescribeRequest, ValidationError> {
        check_answer_options(options)?;
        let asked = Asked::read(options)?;
        let model = match &options.model {
            None => 0,
            Some(name) => self
                .models
                .iter()
                .position(|m| m.name == *name)
                .ok_or_else(|| {
                    ValidationError::new(
                        "unknown_model",
                        format!(
                            "no model `{name}` is loaded here; this server runs {} (GET /v1/info)",
                            self.names()
                        ),
                    )
                })?,
        };
        let chosen = &self.models[model];
        let missing = asked.missing(&chosen.card);
        if let Some(first) = missing.first() {
            let other = self
                .models
                .iter()
                .find(|m| asked.missing(&m.card).is_empty())
                .map(|m| format!("model `{}` can: send \"model\": \"{}\"", m.name, m.name))
                .unwrap_or_else(|| {
                    "no model loaded here can; the operator can load a Qwen3.5 model with --model-dir".into()
                });
            return Err(ValidationError::unsupported(format!(
                "model `{}` cannot {first}{}; {other}",
                chosen.name,
                missing[1..]
                    .iter()
                    .map(|m| format!(" or {m}"))
                    .collect::<String>()
            )));
        }
        let num_beams = options.num_beams.unwrap_or(1);
        if num_beams == 0 || num_beams > chosen.max_num_beams {
            return Err(ValidationError::new(
                "invalid_option",
                format!(
                    "num_beams must be between 1 and {} for model `{}` (--max-num-beams)",
                    chosen.max_num_beams, chosen.name
                ),
            ));
        }
        let seed = asked
            .sampling
            .map(|_| options.seed.unwrap_or_else(random_seed));
        let sampling = asked.sampling.map(|(temperature, top_p)| Sampling {
            temperature,
            top_p,
            top_k: 0,
            seed: seed.expect("drawn with sampling"),
        });
        let limit = chosen.card.max_new_tokens;
        let outputs = asked
            .outputs
            .iter()
            .map(|&output| {
                let fit = asked.fit(output, options);
                let task = asked.task(output, fit, &chosen.card);
                let max_new_tokens = options.max_new_tokens.unwrap_or_else(|| {
                    chosen
                        .card
                        .frontend
                        .default_max_new_tokens(&task)
                        .min(limit)
                });
                if max_new_tokens == 0 || max_new_tokens > limit {
                    return Err(ValidationError::new(
                        "invalid_option",
                        format!(
                            "max_new_tokens must be between 1 and {limit} for model `{}`",
                            chosen.name
                        ),
                    ));
                }
                Ok(PlannedOutput {
                    output,
                    fit,
                    generation: GenerationOptions {
                        task,
                        max_new_tokens,
                        num_beams,
                        sampling,
                    },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ValidDescribeRequest {
            source: ImageSource::Bytes(Bytes::new()),
            model,
            outputs,
            asked: options.clone(),
            language: asked.language.clone(),
            seed,
        })
    }

    fn names(&self) -> String {
        self.models
            .iter()
            .map(|m| format!("`{}`", m.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A request's options read and checked on their own, before any model is considered.
struct Asked {
    outputs: Vec<Output>,
    detail: Option<Detail>,
    language: String,
    context: Option<crate::model::ProductContext>,
    tone: Option<String>,
    /// Temperature and top-p, when sampling.
    sampling: Option<(f32, f32)>,
}

impl Asked {
    fn read(options: &DescribeOptions) -> Result<Self, ValidationError> {
        let outputs = match &options.outputs {
            None => vec![Output::AltText],
            Some(names) => parse_outputs(names)?,
        };
        let detail = options
            .detail
            .as_deref()
            .map(|d| {
                d.parse::<Detail>()
                    .map_err(|message| ValidationError::new("invalid_detail", message))
            })
            .transpose()?;
        let language = match &options.language {
            None => "en".to_string(),
            Some(tag) => {
                check_language(tag)?;
                tag.clone()
            }
        };
        let context = match &options.context {
            Some(context) if !context.is_empty() => Some(context.check()?),
            _ => None,
        };
        if let Some(tone) = &options.tone {
            check_tone(tone)?;
        }
        if options.max_words == Some(0) || options.max_words > Some(MAX_WORDS) {
            return Err(ValidationError::new(
                "invalid_option",
                format!("max_words must be between 1 and {MAX_WORDS}"),
            ));
        }
        if options.keyword_count == Some(0) || options.keyword_count > Some(MAX_KEYWORD_COUNT) {
            return Err(ValidationError::new(
                "invalid_option",
                format!("keyword_count must be between 1 and {MAX_KEYWORD_COUNT}"),
            ));
        }
        for (name, set, output) in [
            (
                "max_words",
                options.max_words.is_some(),
                Output::Description,
            ),
            (
                "keyword_count",
                options.keyword_count.is_some(),
                Output::Keywords,
            ),
        ] {
            if set && !outputs.contains(&output) {
                return Err(ValidationError::new(
                    "invalid_option",
                    format!(
                        "{name} applies to the `{}` output; add it to outputs",
                        output.as_str()
                    ),
                ));
            }
        }
        Ok(Self {
            outputs,
            detail,
            language,
            context,
            tone: options.tone.clone(),
            sampling: read_sampling(options)?,
        })
    }

    /// What `card`'s model cannot do of this request, in words ("write German (de)").
    fn missing(&self, card: &ModelCard) -> Vec<String> {
        let can = &card.capabilities;
        let mut missing = Vec::new();
        for output in &self.outputs {
            if !can.outputs.contains(output) {
                missing.push(format!("write the `{}` output", output.as_str()));
            }
        }
        if !can.speaks(&self.language) {
            missing.push(format!(
                "write in `{}` (it writes {})",
                self.language,
                can.languages.join(", ")
            ));
        }
        if !can.product_context && (self.context.is_some() || self.tone.is_some()) {
            missing.push("use product context or a tone".into());
        }
        if !can.sampling && self.sampling.is_some() {
            missing.push("sample (temperature, top_p, seed)".into());
        }
        if !can.detail && self.detail.is_some() {
            missing.push("take `detail` (Florence-2's caption length; ask for outputs)".into());
        }
        missing
    }

    /// The model's task for one output, with the length its prompt asks for. Florence-2 writes
    /// alt text at the asked detail and a description as its paragraph caption.
    fn task(&self, output: Output, fit: Fit, card: &ModelCard) -> Task {
        let detail = if card.capabilities.detail {
            match output {
                Output::Description => Detail::Paragraph,
                _ => self.detail.unwrap_or_default(),
            }
        } else {
            Detail::default()
        };
        Task {
            detail,
            output,
            language: Some(self.language.clone()),
            context: self.context.clone().unwrap_or_default(),
            tone: self.tone.clone(),
            max_chars: match (output, fit) {
                (Output::AltText, Fit::Chars(max)) => Some(max),
                _ => None,
            },
            max_words: match fit {
                Fit::Words(max) => Some(max),
                _ => None,
            },
            keyword_count: match fit {
                Fit::Keywords(count) => Some(count),
                _ => None,
            },
        }
    }

    /// How an output's text is fitted (`outputs::fit_for`).
    fn fit(&self, output: Output, options: &DescribeOptions) -> Fit {
        fit_for(
            output,
            Lengths {
                max_chars: options.max_chars,
                max_words: options.max_words,
                keyword_count: options.keyword_count,
            },
            self.detail,
        )
    }
}

fn parse_outputs(names: &[String]) -> Result<Vec<Output>, ValidationError> {
    if names.is_empty() {
        return Err(ValidationError::new(
            "invalid_outputs",
            "outputs is empty; leave it out for alt text, or name at least one",
        ));
    }
    let mut outputs = Vec::with_capacity(names.len());
    for name in names {
        let output = Output::ALL
            .into_iter()
            .find(|o| o.as_str() == name.trim())
            .ok_or_else(|| {
                ValidationError::new(
                    "invalid_outputs",
                    format!(
                        "unknown output `{name}`: expected {}",
                        Output::ALL.map(Output::as_str).join(", ")
                    ),
                )
            })?;
        if outputs.contains(&output) {
            return Err(ValidationError::new(
                "invalid_outputs",
                format!("output `{name}` is named twice"),
            ));
        }
        outputs.push(output);
    }
    Ok(outputs)
}

/// A BCP 47 tag's shape: a 2–3 letter language, then subtags of 1–8 letters or digits.
fn check_language(tag: &str) -> Result<(), ValidationError> {
    let mut parts = tag.split('-');
    let language = parts.next().unwrap_or_default();
    let fine = tag.len() <= 35
        && (2..=3).contains(&language.len())
        && language.chars().all(|c| c.is_ascii_alphabetic())
        && parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if fine {
        Ok(())
    } else {
        Err(ValidationError::new(
            "invalid_language",
            format!("language `{tag}` is not a BCP 47 tag such as `de` or `pt-BR`"),
        ))
    }
}

fn read_sampling(options: &DescribeOptions) -> Result<Option<(f32, f32)>, ValidationError> {
    let temperature = options.temperature.unwrap_or(0.0);
    if !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
        return Err(ValidationError::new(
            "invalid_option",
            format!("temperature must be between 0 (greedy) and {MAX_TEMPERATURE}"),
        ));
    }
    if temperature == 0.0 {
        if options.top_p.is_some() || options.seed.is_some() {
            return Err(ValidationError::new(
                "invalid_option",
                "top_p and seed apply when sampling: set temperature above 0",
            ));
        }
        return Ok(None);
    }
    let top_p = options.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ValidationError::new(
            "invalid_option",
            "top_p must be above 0 and at most 1",
        ));
    }
    Ok(Some((temperature, top_p)))
}

/// A seed for a request that samples without one: recorded with the description, so that the
/// same request with this seed gives the same text.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    // JSON numbers are safe as integers up to 2^53; keep seeds there for every client.
    u64::from_le_bytes(bytes) >> 11
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
    if let Some(model) = &options.model {
        strings::check(model, Shape::Line).map_err(|forbidden| {
            ValidationError::new(
                "invalid_characters",
                format!("`model` contains {forbidden}; remove it"),
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::describe::outputs::SEO_TITLE_CHARS;
    use crate::model::preprocess::{ImageLimits, PreprocessError};
    use crate::model::{Capabilities, Family, Frontend, ImageTensor, Prepared};

    struct Fixed;

    impl Frontend for Fixed {
        fn prepare(&self, _: &[u8], _: &ImageLimits) -> Result<Prepared, PreprocessError> {
            Err(PreprocessError::UnsupportedFormat)
        }
        fn prompt_len(&self, _: &Task, _: &ImageTensor) -> usize {
            4
        }
        fn default_max_new_tokens(&self, task: &Task) -> usize {
            match (task.detail, task.output) {
                (_, Output::Keywords) => 48,
                (Detail::Brief, _) => 64,
                _ => 2000,
            }
        }
    }

    fn florence(max_new_tokens: usize) -> ModelCard {
        ModelCard {
            family: Family::Florence2,
            max_new_tokens,
            max_num_beams: 16,
            capabilities: Capabilities {
                outputs: vec![Output::AltText, Output::Description],
                languages: vec!["en".into()],
                product_context: false,
                sampling: false,
                detail: true,
            },
            frontend: Arc::new(Fixed),
        }
    }

    fn qwen() -> ModelCard {
        ModelCard {
            family: Family::Qwen3_5,
            max_new_tokens: 512,
            max_num_beams: 1,
            capabilities: Capabilities {
                outputs: Output::ALL.to_vec(),
                languages: vec!["de".into(), "en".into(), "pt-br".into()],
                product_context: true,
                sampling: true,
                detail: false,
            },
            frontend: Arc::new(Fixed),
        }
    }

    fn validator(max_new_tokens: usize, server_beams: usize) -> Validator {
        Validator::new(
            vec![("florence".into(), florence(max_new_tokens))],
            server_beams,
        )
    }

    fn both() -> Validator {
        Validator::new(
            vec![("florence".into(), florence(1023)), ("qwen".into(), qwen())],
            4,
        )
    }

    fn options(f: impl FnOnce(&mut DescribeOptions)) -> DescribeOptions {
        let mut options = DescribeOptions::default();
        f(&mut options);
        options
    }

    fn names(outputs: &[&str]) -> Option<Vec<String>> {
        Some(outputs.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn defaults_are_filled_in_and_capped_by_the_model() {
        let v = validator(1023, 4);
        let plan = v.plan(&DescribeOptions::default()).unwrap();
        assert_eq!((plan.model, plan.language.as_str()), (0, "en"));
        let [alt] = &plan.outputs[..] else {
            panic!("{:?}", plan.outputs)
        };
        assert_eq!(alt.output, Output::AltText);
        assert_eq!(alt.generation.task.detail, Detail::Brief);
        assert_eq!(alt.fit, Fit::Chars(DEFAULT_ALT_TEXT_CHARS));
        assert_eq!(
            (alt.generation.max_new_tokens, alt.generation.num_beams),
            (64, 1)
        );
        // A family default above what the model holds is cut to the limit, not refused; a
        // longer caption is kept whole.
        let paragraph = v
            .plan(&options(|o| o.detail = Some("paragraph".into())))
            .unwrap();
        assert_eq!(paragraph.outputs[0].generation.max_new_tokens, 1023);
        assert_eq!(paragraph.outputs[0].fit, Fit::Whole);
        // Florence-2's description is its paragraph caption.
        let both = v
            .plan(&options(|o| {
                o.outputs = names(&["description", "alt_text"])
            }))
            .unwrap();
        let details: Vec<Detail> = both
            .outputs
            .iter()
            .map(|o| o.generation.task.detail)
            .collect();
        assert_eq!(details, [Detail::Paragraph, Detail::Brief]);
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
            (options(|o| o.outputs = names(&[])), "invalid_outputs"),
            (options(|o| o.outputs = names(&["poem"])), "invalid_outputs"),
            (
                options(|o| o.outputs = names(&["alt_text", "alt_text"])),
                "invalid_outputs",
            ),
            (
                options(|o| o.language = Some("german".into())),
                "invalid_language",
            ),
            (
                options(|o| o.language = Some("de-".into())),
                "invalid_language",
            ),
            (options(|o| o.max_words = Some(40)), "invalid_option"),
            (
                options(|o| {
                    o.outputs = names(&["keywords"]);
                    o.keyword_count = Some(0)
                }),
                "invalid_option",
            ),
            (options(|o| o.temperature = Some(2.5)), "invalid_option"),
            (options(|o| o.seed = Some(3)), "invalid_option"),
            (
                options(|o| {
                    o.temperature = Some(0.7);
                    o.top_p = Some(0.0)
                }),
                "invalid_option",
            ),
            (
                options(|o| o.tone = Some("x\ny".into())),
                "invalid_characters",
            ),
            (options(|o| o.model = Some("gpt".into())), "unknown_model"),
        ];
        for (asked, code) in refused {
            let error = v.plan(&asked).unwrap_err();
            assert_eq!(error.code, code, "{asked:?}: {error}");
            assert!(!error.unsupported, "{asked:?}: {error}");
        }
        let beams = v.plan(&options(|o| o.num_beams = Some(9))).unwrap_err();
        assert!(beams.message.contains("--max-num-beams"), "{beams}");
        assert!(v.plan(&options(|o| o.max_new_tokens = Some(100))).is_ok());
    }

    #[test]
    fn a_model_that_cannot_names_one_that_can() {
        let v = both();
        let german = options(|o| o.language = Some("de".into()));
        let error = v.plan(&german).unwrap_err();
        assert!(error.unsupported);
        assert_eq!(error.code, "unsupported_by_model");
        assert!(
            error.message.contains("`florence`")
                && error.message.contains("`de`")
                && error.message.contains("\"model\": \"qwen\""),
            "{error}"
        );
        // Several things it cannot do are named together.
        let error = v
            .plan(&options(|o| {
                o.outputs = names(&["seo_title"]);
                o.temperature = Some(0.8);
            }))
            .unwrap_err();
        assert!(
            error.message.contains("seo_title") && error.message.contains("sample"),
            "{error}"
        );
        // Context is not for Florence-2; `detail` is not for Qwen3.5.
        let context = options(|o| {
            o.context = Some(ContextOptions {
                title: Some("Mug".into()),
                ..ContextOptions::default()
            })
        });
        assert!(v.plan(&context).unwrap_err().unsupported);
        let detail = options(|o| {
            o.model = Some("qwen".into());
            o.detail = Some("brief".into());
        });
        let error = v.plan(&detail).unwrap_err();
        assert!(
            error.unsupported && error.message.contains("\"model\": \"florence\""),
            "{error}"
        );
        // Nobody loaded speaks Klingon.
        let error = validator(10, 1)
            .plan(&options(|o| o.language = Some("tlh".into())))
            .unwrap_err();
        assert!(error.message.contains("--model-dir"), "{error}");
        // A region falls back to its language; a listed region matches whole.
        for tag in ["de-AT", "pt-BR", "EN"] {
            let asked = options(|o| {
                o.model = Some("qwen".into());
                o.language = Some(tag.into());
            });
            assert_eq!(v.plan(&asked).unwrap().language, tag);
        }
    }

    #[test]
    fn each_output_gets_its_prompt_lengths_and_fit() {
        let v = both();
        let plan = v
            .plan(&options(|o| {
                o.model = Some("qwen".into());
                o.outputs = names(&["keywords", "description", "seo_title", "alt_text"]);
                o.max_words = Some(60);
                o.keyword_count = Some(5);
                o.max_chars = Some(90);
                o.language = Some("de".into());
                o.tone = Some("warm".into());
            }))
            .unwrap();
        assert_eq!(plan.model, 1);
        let fits: Vec<(Output, Fit)> = plan.outputs.iter().map(|o| (o.output, o.fit)).collect();
        assert_eq!(
            fits,
            [
                (Output::Keywords, Fit::Keywords(5)),
                (Output::Description, Fit::Words(60)),
                (Output::SeoTitle, Fit::Chars(SEO_TITLE_CHARS)),
                (Output::AltText, Fit::Chars(90)),
            ]
        );
        let tasks: Vec<&Task> = plan.outputs.iter().map(|o| &o.generation.task).collect();
        assert_eq!(tasks[0].keyword_count, Some(5));
        assert_eq!(tasks[1].max_words, Some(60));
        assert_eq!(tasks[3].max_chars, Some(90));
        assert!(
            tasks
                .iter()
                .all(|t| t.language.as_deref() == Some("de") && t.tone.as_deref() == Some("warm"))
        );
        assert_eq!(plan.outputs[0].generation.max_new_tokens, 48);
    }

    #[test]
    fn sampling_keeps_the_callers_seed_or_draws_one() {
        let v = both();
        let sampled = |seed: Option<u64>| {
            v.plan(&options(|o| {
                o.model = Some("qwen".into());
                o.temperature = Some(0.8);
                o.top_p = Some(0.9);
                o.seed = seed;
            }))
            .unwrap()
        };
        let given = sampled(Some(42));
        assert_eq!(given.seed, Some(42));
        let sampling = given.outputs[0].generation.sampling.unwrap();
        assert_eq!(
            (sampling.temperature, sampling.top_p, sampling.seed),
            (0.8, 0.9, 42)
        );
        let drawn = sampled(None).seed.unwrap();
        assert!(drawn < 1 << 53, "a seed every JSON client reads exactly");
        assert_ne!(Some(drawn), sampled(None).seed);
        let greedy = v.plan(&options(|o| o.temperature = Some(0.0))).unwrap();
        assert!(greedy.seed.is_none() && greedy.outputs[0].generation.sampling.is_none());
    }

    #[test]
    fn the_family_caps_the_server_s_beam_limit() {
        assert_eq!(validator(10, 64).models()[0].max_num_beams, 16);
        assert_eq!(validator(10, 3).models()[0].max_num_beams, 3);
        assert_eq!(both().models()[1].max_num_beams, 1);
    }
}

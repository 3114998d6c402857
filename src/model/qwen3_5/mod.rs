//! Qwen3.5, an instruct vision-language model, in the onnx-community `-ONNX-OPT` layout (spec
//! `qwen3_5-onnx.md`): three sessions (`embed_tokens`, `vision_encoder`, `decoder_model_merged`
//! with conv, recurrent and KV state), prompts rendered from `prompts.json` for each output of an
//! image in the shop's language, M-RoPE positions. One instance is owned by one thread.

mod batch;
mod config;
mod decoder;
mod generate;
pub mod prompt;
mod rope;
mod signature;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{Array4, Ix4};
use ort::session::Session;
use tokenizers::Tokenizer;

use super::preprocess::{
    ImageLimits, PreprocessError, PreprocessorConfig, SizeRule, prepare_patches,
};
use super::rows::RowOps;
use super::runtime::{self, Device, KvCache};
use super::signature::ports;
use super::task::{Output, Task};
use super::{
    Capabilities, Captioner, Family, Frontend, Generated, GenerationRequest, ImageTensor,
    LoadOptions, ModelCard, ModelError, Prepared, StageTimings,
};
use config::QwenConfig;
use prompt::{IMAGE_PAD, Templates};
use state::StateSpec;

/// The graphs, by basename (spec §2.2).
const GRAPHS: [&str; 3] = ["embed_tokens", "vision_encoder", "decoder_model_merged"];

/// The most tokens a request may generate: product copy is short, and the states of a row
/// grow with it.
const MAX_NEW_TOKENS: usize = 1024;

/// `max_new_tokens` when a request gives none, per output.
fn default_max_new_tokens(output: Output) -> usize {
    match output {
        Output::AltText => 64,
        Output::Description => 256,
        Output::SeoTitle => 32,
        Output::Keywords => 64,
    }
}

/// The ids generation and the prompt rely on, found by content in `tokenizer.json`.
#[derive(Debug, Clone, Copy)]
struct SpecialIds {
    image_pad: i64,
    vision_start: i64,
    im_end: i64,
    endoftext: i64,
}

/// The tokenizer and templates, shared by the frontend (prompt lengths) and the model (prompts).
struct Text {
    tokenizer: Tokenizer,
    templates: Templates,
    special: SpecialIds,
}

impl Text {
    /// The prompt's ids with the image pad expanded to `image_tokens` pads.
    fn prompt_ids(&self, task: &Task, image_tokens: usize) -> Result<Vec<i64>, ModelError> {
        let text = self.templates.render(task);
        let text = text.replacen(IMAGE_PAD, &IMAGE_PAD.repeat(image_tokens), 1);
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Inference {
                stage: "tokenizer",
                message: format!("cannot tokenize the prompt: {e}"),
            })?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }
}

/// Qwen3.5's side of preparation: smart resize under the operator's pixel cap, patches.
struct QwenFrontend {
    preprocessor: PreprocessorConfig,
    merge: usize,
    text: Arc<Text>,
}

impl Frontend for QwenFrontend {
    fn prepare(&self, bytes: &[u8], limits: &ImageLimits) -> Result<Prepared, PreprocessError> {
        let prepared = prepare_patches(bytes, &self.preprocessor, limits)?;
        Ok(Prepared {
            tensor: ImageTensor::new(prepared.patches.into_dyn()),
            width: prepared.original_width,
            height: prepared.original_height,
            format: prepared.format,
        })
    }

    fn prompt_len(&self, task: &Task, image: &ImageTensor) -> usize {
        let tokens = image_tokens(image, self.merge).unwrap_or(0);
        // Counted as the model counts it; a prompt that cannot be tokenised fails in the
        // model with its message, so an estimate is enough here.
        self.text
            .prompt_ids(task, tokens)
            .map_or(tokens + 64, |ids| ids.len())
    }

    fn default_max_new_tokens(&self, task: &Task) -> usize {
        default_max_new_tokens(task.output)
    }
}

/// The image tokens of a patch tensor `[gh/m, gw/m, m², columns]`.
fn image_tokens(image: &ImageTensor, merge: usize) -> Option<usize> {
    let shape = image.values().shape();
    (shape.len() == 4 && shape[2] == merge * merge).then(|| shape[0] * shape[1])
}

pub struct Qwen35 {
    embed: Session,
    vision: Session,
    decoder: Session,
    states: Vec<StateSpec>,
    /// Which optional decoder inputs the graph declares.
    has_logits_to_keep: bool,
    has_cache_branch: bool,
    device: Device,
    /// Where the decoder state stays between steps and how its rows move.
    rows: RowOps,
    config: QwenConfig,
    eos: Vec<i64>,
    text: Arc<Text>,
    card: ModelCard,
    preprocessor: PreprocessorConfig,
}

impl Qwen35 {
    /// Opens the three sessions and checks them, the JSON files, the tokenizer and the templates
    /// against each other. Any mismatch is an error naming the file or the flag.
    pub fn load(options: &LoadOptions) -> Result<Self, ModelError> {
        let dir = &options.model_dir;
        let fail = |message: String| ModelError::ModelDir {
            dir: dir.clone(),
            message,
        };
        let files = graph_files(dir, &options.variant_suffix)?;
        let config = QwenConfig::load(dir)?;
        let preprocessor = PreprocessorConfig::from_file(&dir.join("preprocessor_config.json"))
            .map_err(|e| fail(e.to_string()))?;
        if !matches!(preprocessor.size_rule(), Ok(SizeRule::Smart { .. })) {
            return Err(fail(
                "preprocessor_config.json must give size as pixel bounds with patch_size and merge_size (a Qwen2-VL image processor)".into(),
            ));
        }
        let preprocessor = preprocessor.with_max_pixels(options.vision_max_pixels);
        let merge = preprocessor.merge_size.unwrap_or(2) as usize;
        if merge != config.spatial_merge_size {
            return Err(fail(format!(
                "preprocessor_config.json merges {merge}×{merge} patches but config.json's vision_config says {}",
                config.spatial_merge_size
            )));
        }
        let templates = match &options.prompt_templates {
            Some(path) => Templates::from_file(path)?,
            None => Templates::builtin(),
        };
        let tokenizer_file = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_file)
            .map_err(|e| fail(format!("cannot read {}: {e}", tokenizer_file.display())))?;
        let id = |content: &str| -> Result<i64, ModelError> {
            tokenizer
                .token_to_id(content)
                .map(i64::from)
                .ok_or_else(|| fail(format!("tokenizer.json has no `{content}` token")))
        };
        let special = SpecialIds {
            image_pad: id(IMAGE_PAD)?,
            vision_start: id("<|vision_start|>")?,
            im_end: id("<|im_end|>")?,
            endoftext: id("<|endoftext|>")?,
        };
        if (special.image_pad, special.vision_start)
            != (config.image_token_id, config.vision_start_token_id)
        {
            return Err(fail(format!(
                "config.json's image_token_id/vision_start_token_id ({}, {}) are not the tokenizer's `<|image_pad|>`/`<|vision_start|>` ({}, {})",
                config.image_token_id,
                config.vision_start_token_id,
                special.image_pad,
                special.vision_start
            )));
        }
        let eos = if config.generation.eos_token_ids.is_empty() {
            vec![special.im_end, special.endoftext]
        } else {
            config.generation.eos_token_ids.clone()
        };

        let env = runtime::environment(&options.library)?;
        let open = |path: &Path| runtime::open_session(env, path, &options.runtime);
        let [embed_file, vision_file, decoder_file] = [&files[0], &files[1], &files[2]];
        let (embed, vision, decoder) = (open(embed_file)?, open(vision_file)?, open(decoder_file)?);
        let hidden = ports(&embed, embed_file).check_qwen_embed()?;
        let vision_hidden = ports(&vision, vision_file).check_qwen_vision()?;
        let decoder_ports = ports(&decoder, decoder_file);
        let shape = decoder_ports.check_qwen_decoder()?;
        let states = state::state_specs(&decoder_ports)?;
        for (name, width) in [("vision_encoder", vision_hidden), ("decoder", shape.hidden)] {
            if let (Some(a), Some(b)) = (hidden, width)
                && a != b
            {
                return Err(fail(format!(
                    "embed_tokens gives {a}-wide embeddings but {name} takes {b}"
                )));
            }
        }
        if let Some(vocab) = shape.vocab_size
            && tokenizer.get_vocab_size(true) > vocab
        {
            return Err(fail(format!(
                "tokenizer.json has {} tokens but the decoder's logits cover only {vocab}",
                tokenizer.get_vocab_size(true)
            )));
        }
        let reserved = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .map(|token| token.content);
        let text = Arc::new(Text {
            templates: templates.reserving(reserved),
            tokenizer,
            special,
        });
        let card = ModelCard {
            family: Family::Qwen3_5,
            max_new_tokens: MAX_NEW_TOKENS,
            max_num_beams: 1,
            capabilities: Capabilities {
                outputs: Output::ALL.to_vec(),
                languages: text
                    .templates
                    .languages()
                    .map(str::to_ascii_lowercase)
                    .collect(),
                product_context: true,
                sampling: true,
                detail: false,
            },
            frontend: Arc::new(QwenFrontend {
                preprocessor: preprocessor.clone(),
                merge,
                text: text.clone(),
            }),
        };
        Ok(Self {
            embed,
            vision,
            decoder,
            states,
            has_logits_to_keep: shape.logits_to_keep,
            has_cache_branch: shape.cache_branch,
            device: options.runtime.device,
            rows: RowOps::new(options.runtime.kv_cache, env, &options.runtime),
            config,
            eos,
            text,
            card,
            preprocessor,
        })
    }

    /// Where the decoder's state stays between steps.
    pub fn kv_cache(&self) -> KvCache {
        self.rows.kv_cache()
    }

    /// The ids of a request's prompt, image pads expanded (for tests and details).
    pub fn prompt_ids(&self, task: &Task, image: &ImageTensor) -> Result<Vec<i64>, ModelError> {
        let tokens = image_tokens(image, self.config.spatial_merge_size).ok_or_else(|| {
            ModelError::Inference {
                stage: "vision",
                message: "not a Qwen3.5 image tensor".into(),
            }
        })?;
        self.text.prompt_ids(task, tokens)
    }
}

impl Captioner for Qwen35 {
    fn card(&self) -> &ModelCard {
        &self.card
    }

    fn blank_image(&self) -> ImageTensor {
        // The largest image the cap allows, square.
        let (width, height) = self.preprocessor.target_size(8192, 8192);
        let patch = self.preprocessor.patch_size.unwrap_or(16) as usize;
        let merge = self.config.spatial_merge_size;
        let temporal = self.preprocessor.temporal_patch_size.unwrap_or(2) as usize;
        let side = patch * merge;
        ImageTensor::new(
            Array4::<f32>::zeros((
                height as usize / side,
                width as usize / side,
                merge * merge,
                temporal * 3 * patch * patch,
            ))
            .into_dyn(),
        )
    }

    fn generate_with(
        &mut self,
        requests: &[GenerationRequest],
        is_cancelled: &mut dyn FnMut(usize) -> bool,
    ) -> Result<(Vec<Generated>, StageTimings), ModelError> {
        generate::run(self, requests, is_cancelled)
    }
}

/// An image's patches as `[patches, columns]`, and its grid in patches `(t, h, w)`.
fn patches_of(
    image: &ImageTensor,
    merge: usize,
) -> Result<(ndarray::ArrayView2<'_, f32>, [i64; 3]), ModelError> {
    let wrong = |message: String| ModelError::Inference {
        stage: "vision",
        message,
    };
    let view = image
        .values()
        .view()
        .into_dimensionality::<Ix4>()
        .map_err(|e| wrong(format!("not a Qwen3.5 image tensor: {e}")))?;
    let (bh, bw, slots, columns) = view.dim();
    if slots != merge * merge {
        return Err(wrong(format!(
            "{slots} patches per token, expected {}",
            merge * merge
        )));
    }
    let flat = view
        .into_shape_with_order((bh * bw * slots, columns))
        .map_err(|e| wrong(format!("patches are not contiguous: {e}")))?;
    let grid = [1, (bh * merge) as i64, (bw * merge) as i64];
    Ok((flat, grid))
}

/// Resolves the three graph files for a variant suffix; a missing file is named.
fn graph_files(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, ModelError> {
    GRAPHS
        .iter()
        .map(|name| {
            let path = dir.join("onnx").join(format!("{name}{suffix}.onnx"));
            if path.is_file() {
                Ok(path)
            } else {
                Err(ModelError::ModelDir {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "missing {} (an onnx-community Qwen3.5 -ONNX-OPT export needs onnx/{{embed_tokens,vision_encoder,decoder_model_merged}}{suffix}.onnx, each with its .onnx_data files beside it)",
                        path.display()
                    ),
                })
            }
        })
        .collect()
}

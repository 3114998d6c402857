//! Florence-2: the four ONNX sessions of an onnx-community export and the batched generation
//! that drives them (spec section 3). One instance is owned by one thread; not shared.

mod config;
mod kv_cache;
mod prompts;
mod signature;
pub mod text;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::{Array3, ArrayView3, Ix3};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use super::config::GenerationConfig;
use super::generate::{FinishReason, GroupSpec, LogitsRules, Search};
use super::preprocess::{ImageLimits, PreprocessError, PreprocessorConfig, prepare_image};
use super::rows::{RowOps, RowTensor};
use super::runtime::{self, Device, KvCache, Place};
use super::signature::ports;
use super::{
    Capabilities, Captioner, Detail, Family, Frontend, Generated, GenerationRequest, ImageTensor,
    LoadOptions, ModelCard, ModelError, Output, Prepared, StageTimings, Task, distinct_images,
};
use config::ModelConfig;
use kv_cache::{CacheNames, DecoderState};
use prompts::Prompts;
pub use prompts::task_token;
use signature::DecoderShape;
use text::TextCodec;

/// The graphs the server runs, by basename (spec 11.8: the others are not needed).
const GRAPHS: [&str; 4] = [
    "vision_encoder",
    "embed_tokens",
    "encoder_model",
    "decoder_model_merged",
];

/// The widest beam search this family runs (transformers.js takes any; beyond 16 the batch's
/// cache grows for no gain in caption quality).
const MAX_NUM_BEAMS: usize = 16;

/// Default `max_new_tokens` per detail level: enough for the style, bounded so one request
/// cannot hold a batch for long.
pub fn default_max_new_tokens(detail: Detail) -> usize {
    match detail {
        Detail::Brief => 64,
        Detail::Detailed => 128,
        Detail::Paragraph => 256,
    }
}

/// Florence-2's side of preparation: the CLIP processor's fixed-size pipeline, and prompts whose
/// length depends on the detail level only.
struct FlorenceFrontend {
    preprocessor: PreprocessorConfig,
    prompt_lengths: [usize; 3],
}

impl Frontend for FlorenceFrontend {
    fn prepare(&self, bytes: &[u8], limits: &ImageLimits) -> Result<Prepared, PreprocessError> {
        let prepared = prepare_image(bytes, &self.preprocessor, limits)?;
        Ok(Prepared {
            tensor: ImageTensor::new(prepared.pixel_values.into_dyn()),
            width: prepared.original_width,
            height: prepared.original_height,
            format: prepared.format,
        })
    }

    fn prompt_len(&self, task: &Task, _image: &ImageTensor) -> usize {
        self.prompt_lengths[task.detail as usize]
    }

    fn default_max_new_tokens(&self, task: &Task) -> usize {
        default_max_new_tokens(task.detail)
    }
}

pub struct Florence2 {
    vision: Session,
    embed: Session,
    encoder: Session,
    decoder: Session,
    decoder_shape: DecoderShape,
    cache_names: CacheNames,
    preprocessor: PreprocessorConfig,
    text: TextCodec,
    generation: GenerationConfig,
    max_positions: usize,
    vision_batch_size: usize,
    prompt_ids: [Vec<i64>; 3],
    card: ModelCard,
    model_dir: PathBuf,
    device: Device,
    /// Where the cache stays between steps and how its rows move.
    rows: RowOps,
}

impl Florence2 {
    /// Opens the four sessions and checks them, the JSON files and the tokenizer against each
    /// other. Any mismatch is an error naming the file.
    pub fn load(options: &LoadOptions) -> Result<Self, ModelError> {
        let dir = &options.model_dir;
        let files = graph_files(dir, &options.variant_suffix)?;
        let config = ModelConfig::load(dir)?;
        let preprocessor = PreprocessorConfig::from_file(&dir.join("preprocessor_config.json"))
            .map_err(|e| ModelError::ModelDir {
                dir: dir.clone(),
                message: e.to_string(),
            })?;
        let prompts = Prompts::load(dir)?;
        let text = TextCodec::load(dir)?;

        let env = runtime::environment(&options.library)?;
        let open = |path: &Path| runtime::open_session(env, path, &options.runtime);
        let [vision, embed, encoder, decoder] = [&files[0], &files[1], &files[2], &files[3]];
        let vision_session = open(vision)?;
        let embed_session = open(embed)?;
        let encoder_session = open(encoder)?;
        let decoder_session = open(decoder)?;

        ports(&vision_session, vision).check_vision()?;
        let hidden = ports(&embed_session, embed).check_embed()?;
        ports(&encoder_session, encoder).check_encoder()?;
        let decoder_shape = ports(&decoder_session, decoder).check_decoder()?;

        let fail = |message: String| ModelError::ModelDir {
            dir: dir.clone(),
            message,
        };
        if let (Some(hidden), Some(d_model)) = (hidden, config.d_model)
            && hidden != d_model
        {
            return Err(fail(format!(
                "embed_tokens gives {hidden}-wide embeddings but config.json says d_model {d_model}"
            )));
        }
        if let Some(vocab) = decoder_shape.vocab_size
            && text.vocab_size() > vocab
        {
            return Err(fail(format!(
                "tokenizer.json has {} tokens but the decoder's logits cover only {vocab}",
                text.vocab_size()
            )));
        }
        let special = text.special().clone();
        if config.generation.decoder_start_token_id != special.eos
            || !config.generation.is_eos(special.eos)
        {
            tracing::warn!(
                "generation config's start/eos ids ({}, {:?}) differ from the tokenizer's </s> ({}); using the config",
                config.generation.decoder_start_token_id,
                config.generation.eos_token_ids,
                special.eos
            );
        }
        let prompt_ids = [
            text.encode_prompt(prompts.text(Detail::Brief))?,
            text.encode_prompt(prompts.text(Detail::Detailed))?,
            text.encode_prompt(prompts.text(Detail::Paragraph))?,
        ];
        let max_positions = config.max_position_embeddings.unwrap_or(1024);
        let card = ModelCard {
            family: Family::Florence2,
            max_new_tokens: max_positions.saturating_sub(1),
            max_num_beams: MAX_NUM_BEAMS,
            // Captions in English: the brief one is alt text, the paragraph a description.
            capabilities: Capabilities {
                outputs: vec![Output::AltText, Output::Description],
                languages: vec!["en".into()],
                product_context: false,
                sampling: false,
                detail: true,
            },
            frontend: Arc::new(FlorenceFrontend {
                preprocessor: preprocessor.clone(),
                prompt_lengths: prompt_ids.clone().map(|ids| ids.len()),
            }),
        };
        Ok(Self {
            vision: vision_session,
            embed: embed_session,
            encoder: encoder_session,
            decoder: decoder_session,
            cache_names: CacheNames::new(decoder_shape.layers),
            decoder_shape,
            preprocessor,
            text,
            generation: config.generation,
            max_positions,
            vision_batch_size: match (options.vision_batch_size, options.runtime.device) {
                (0, Device::Cpu) => 1,
                (0, Device::Cuda(_)) => usize::MAX,
                (n, _) => n,
            },
            prompt_ids,
            card,
            model_dir: dir.clone(),
            device: options.runtime.device,
            rows: RowOps::new(options.runtime.kv_cache, env, &options.runtime),
        })
    }

    pub fn preprocessor(&self) -> &PreprocessorConfig {
        &self.preprocessor
    }

    pub fn model_dir(&self) -> &Path {
        &self.model_dir
    }

    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }

    /// Where the decoder's cache lives between steps.
    pub fn kv_cache(&self) -> KvCache {
        self.rows.kv_cache()
    }

    /// Prompt token ids of a detail level (start and end tokens included).
    pub fn prompt_ids(&self, detail: Detail) -> &[i64] {
        &self.prompt_ids[detail as usize]
    }

    /// The search's view of each request. What a request asks was validated against the card
    /// before it got here (`describe::request`); a breach is a bug upstream.
    fn group_specs(&self, requests: &[GenerationRequest]) -> Vec<GroupSpec> {
        let (width, height) = self.preprocessor.output_size();
        requests
            .iter()
            .map(|request| {
                debug_assert_eq!(
                    request.image.values().shape(),
                    [3, height as usize, width as usize],
                    "an image tensor of another family or size"
                );
                debug_assert!(
                    (1..=self.card.max_new_tokens).contains(&request.options.max_new_tokens)
                );
                debug_assert!((1..=self.card.max_num_beams).contains(&request.options.num_beams));
                GroupSpec {
                    num_beams: request.options.num_beams,
                    max_length: request.options.max_new_tokens + 1,
                }
            })
            .collect()
    }

    /// `[B, N, D]` image tokens, as a flat buffer plus N and D.
    fn run_vision(
        &mut self,
        requests: &[GenerationRequest],
    ) -> Result<(Vec<f32>, usize, usize), ModelError> {
        // Outputs of one image share its tensor: the tower runs once per distinct image.
        let (images, of_request) = distinct_images(requests);
        let (c, h, w) = pixels_of(images[0])?.dim();
        let mut features = Vec::new();
        let mut dims = (0, 0);
        for chunk in images.chunks(self.vision_batch_size.max(1)) {
            let mut pixels = Vec::with_capacity(chunk.len() * c * h * w);
            for image in chunk {
                let values = pixels_of(image)?;
                match values.as_slice() {
                    Some(slice) => pixels.extend_from_slice(slice),
                    None => pixels.extend(values.iter().copied()),
                }
            }
            let input = Tensor::from_array(([chunk.len(), c, h, w], pixels))
                .map_err(ModelError::inference("vision"))?;
            let outputs = self
                .vision
                .run(ort::inputs!["pixel_values" => input])
                .map_err(ModelError::inference("vision"))?;
            let (shape, data) = outputs["image_features"]
                .try_extract_tensor::<f32>()
                .map_err(ModelError::inference("vision"))?;
            dims = (shape[1] as usize, shape[2] as usize);
            features.extend_from_slice(data);
        }
        if images.len() == requests.len() {
            return Ok((features, dims.0, dims.1));
        }
        let per_image = dims.0 * dims.1;
        let rows = of_request
            .iter()
            .flat_map(|&image| features[image * per_image..(image + 1) * per_image].iter())
            .copied()
            .collect();
        Ok((rows, dims.0, dims.1))
    }

    /// Embeds `[rows, len]` token ids; returns the flat `[rows, len, D]` buffer.
    fn embed(&mut self, ids: Vec<i64>, rows: usize) -> Result<Vec<f32>, ModelError> {
        let len = ids.len() / rows.max(1);
        let input =
            Tensor::from_array(([rows, len], ids)).map_err(ModelError::inference("embed"))?;
        let outputs = self
            .embed
            .run(ort::inputs!["input_ids" => input])
            .map_err(ModelError::inference("embed"))?;
        let (_, data) = outputs["inputs_embeds"]
            .try_extract_tensor::<f32>()
            .map_err(ModelError::inference("embed"))?;
        Ok(data.to_vec())
    }

    /// Image tokens first, then the prompt (right-padded with `<pad>`, mask 0), through the encoder.
    fn run_encoder(
        &mut self,
        requests: &[GenerationRequest],
        image_features: &(Vec<f32>, usize, usize),
    ) -> Result<DecoderState, ModelError> {
        let (features, image_tokens, hidden) =
            (&image_features.0, image_features.1, image_features.2);
        let rows = requests.len();
        let prompt_len = requests
            .iter()
            .map(|r| self.prompt_ids(r.options.task.detail).len())
            .max()
            .unwrap_or(0);
        let encoder_len = image_tokens + prompt_len;
        if encoder_len > self.max_positions {
            return Err(ModelError::Inference {
                stage: "encoder",
                message: format!(
                    "{image_tokens} image tokens + {prompt_len} prompt tokens exceed the model's {} positions",
                    self.max_positions
                ),
            });
        }
        let pad = self.text.special().pad;
        let mut ids = Vec::with_capacity(rows * prompt_len);
        let mut mask = Vec::with_capacity(rows * encoder_len);
        for request in requests {
            let prompt = self.prompt_ids(request.options.task.detail);
            ids.extend_from_slice(prompt);
            ids.extend(std::iter::repeat_n(pad, prompt_len - prompt.len()));
            mask.extend(std::iter::repeat_n(1i64, image_tokens + prompt.len()));
            mask.extend(std::iter::repeat_n(0i64, prompt_len - prompt.len()));
        }
        let prompt_embeds = self.embed(ids, rows)?;
        if prompt_embeds.len() != rows * prompt_len * hidden {
            return Err(ModelError::Inference {
                stage: "embed",
                message: format!("embed_tokens width differs from the vision encoder's {hidden}"),
            });
        }
        let mut inputs_embeds = Vec::with_capacity(rows * encoder_len * hidden);
        for row in 0..rows {
            let image_row = image_tokens * hidden;
            inputs_embeds.extend_from_slice(&features[row * image_row..(row + 1) * image_row]);
            let prompt_row = prompt_len * hidden;
            inputs_embeds
                .extend_from_slice(&prompt_embeds[row * prompt_row..(row + 1) * prompt_row]);
        }
        let embeds = Tensor::from_array(([rows, encoder_len, hidden], inputs_embeds))
            .map_err(ModelError::inference("encoder"))?;
        let mask_tensor = RowTensor::i64(vec![rows, encoder_len], mask)?;
        let hidden_states = if self.kv_cache() == KvCache::Device {
            // The encoder's output stays on the device: the decoder reads it there every step.
            let embeds = embeds.into_dyn();
            let value = runtime::run_bound(
                &mut self.encoder,
                self.device,
                &[
                    ("inputs_embeds", &embeds),
                    ("attention_mask", mask_tensor.value()),
                ],
                &[("last_hidden_state", Place::Device)],
                "encoder",
            )?
            .remove(0);
            RowTensor::from_output(value, "encoder")?
        } else {
            let outputs = self
                .encoder
                .run(ort::inputs!["inputs_embeds" => embeds, "attention_mask" => mask_tensor.value()])
                .map_err(ModelError::inference("encoder"))?;
            let (_, hidden_states) = outputs["last_hidden_state"]
                .try_extract_tensor::<f32>()
                .map_err(ModelError::inference("encoder"))?;
            RowTensor::f32(vec![rows, encoder_len, hidden], hidden_states.to_vec())?
        };
        Ok(DecoderState::new(
            hidden_states,
            mask_tensor,
            self.decoder_shape.clone(),
        ))
    }

    /// The decode loop: step 0 without cache, then one token per step with it. Finished and
    /// cancelled rows leave between steps; beams reorder the cache.
    fn decode(
        &mut self,
        mut state: DecoderState,
        specs: &[GroupSpec],
        is_cancelled: &mut dyn FnMut(usize) -> bool,
        reorder: &mut Duration,
    ) -> Result<(Search, usize), ModelError> {
        let rules = LogitsRules {
            no_repeat_ngram_size: self.generation.no_repeat_ngram_size,
            forced_bos_token_id: self.generation.forced_bos_token_id,
            forced_eos_token_id: self.generation.forced_eos_token_id,
            eos_token_ids: self.generation.eos_token_ids.clone(),
            length_penalty: self.generation.length_penalty,
            early_stopping: self.generation.early_stopping,
        };
        let mut search = Search::new(rules, specs, self.generation.decoder_start_token_id);
        let mut tokens = search.last_tokens();
        let mut steps = 0;
        loop {
            let groups = search.row_groups();
            for &group in &groups {
                if is_cancelled(group) {
                    search.cancel(group);
                }
            }
            let logits = self.decoder_step(&mut state, tokens)?;
            steps += 1;
            let vocab = logits.len() / search.live_rows();
            let plan = search.step(&logits, vocab);
            if search.is_done() {
                return Ok((search, steps));
            }
            if !plan.is_identity(state.rows()) {
                let started = Instant::now();
                // Beams reordered within their requests: the per-request tensors stay put.
                let same_requests = plan.parents.len() == groups.len()
                    && plan
                        .parents
                        .iter()
                        .enumerate()
                        .all(|(row, &parent)| groups[parent] == groups[row]);
                state.gather(&plan.parents, same_requests, &mut self.rows)?;
                *reorder += started.elapsed();
            }
            tokens = plan.tokens;
        }
    }

    /// Embeds one token per row for a decoder step, `[rows, 1, D]`; with the device cache the
    /// embeddings stay on the device too.
    fn embed_step(&mut self, tokens: Vec<i64>) -> Result<DynValue, ModelError> {
        let rows = tokens.len();
        let error = ModelError::inference("embed");
        if self.kv_cache() == KvCache::Host {
            let hidden = self.embed(tokens, rows)?;
            let width = hidden.len() / rows;
            return Ok(Tensor::from_array(([rows, 1, width], hidden))
                .map_err(&error)?
                .into_dyn());
        }
        let input = Tensor::from_array(([rows, 1], tokens))
            .map_err(&error)?
            .into_dyn();
        Ok(runtime::run_bound(
            &mut self.embed,
            self.device,
            &[("input_ids", &input)],
            &[("inputs_embeds", Place::Device)],
            "embed",
        )?
        .remove(0))
    }

    /// One decoder call; returns the last position's logits, `[rows, vocab]` flat.
    fn decoder_step(
        &mut self,
        state: &mut DecoderState,
        tokens: Vec<i64>,
    ) -> Result<Vec<f32>, ModelError> {
        let rows = tokens.len();
        let error = ModelError::inference("decoder");
        let embeds = self.embed_step(tokens)?;
        let use_cache = state.has_cache();
        let flag = Tensor::from_array(([1usize], vec![use_cache]))
            .map_err(&error)?
            .into_dyn();
        let empty = if use_cache {
            None
        } else {
            Some(state.empty_past()?)
        };

        let mut inputs: Vec<(&str, &DynValue)> =
            Vec::with_capacity(4 + 4 * self.decoder_shape.layers);
        inputs.push(("inputs_embeds", &embeds));
        inputs.push((
            "encoder_attention_mask",
            state.encoder_attention_mask.value(),
        ));
        inputs.push(("encoder_hidden_states", state.encoder_hidden_states.value()));
        for (layer, names) in self.cache_names.past.iter().enumerate() {
            for (kind, name) in names.iter().enumerate() {
                let value = match &empty {
                    Some(empty) => empty.value(),
                    None => state.past(layer, kind).value(),
                };
                inputs.push((name.as_str(), value));
            }
        }
        inputs.push(("use_cache_branch", &flag));

        let logits = if self.kv_cache() == KvCache::Device {
            // I/O binding: the cache outputs stay in the session's memory and are bound as the
            // next step's inputs as they are; only the logits come to host memory. The
            // cross-attention presents are asked for on the first call only (later calls return
            // empty placeholders).
            let mut outputs: Vec<(&str, Place)> = vec![("logits", Place::Host)];
            for names in &self.cache_names.present {
                let wanted = if use_cache { &names[..2] } else { &names[..] };
                outputs.extend(wanted.iter().map(|name| (name.as_str(), Place::Device)));
            }
            let values =
                runtime::run_bound(&mut self.decoder, self.device, &inputs, &outputs, "decoder")?;
            let mut values: HashMap<&str, DynValue> =
                outputs.iter().map(|(name, _)| *name).zip(values).collect();
            let logits = values
                .remove("logits")
                .ok_or_else(|| ModelError::Inference {
                    stage: "decoder",
                    message: "output `logits` missing".into(),
                })?;
            let logits = last_logits(&logits, rows)?;
            state.absorb(&mut |name| values.remove(name), &self.cache_names)?;
            logits
        } else {
            let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = inputs
                .iter()
                .map(|(name, value)| (Cow::Borrowed(*name), (*value).into()))
                .collect();
            let mut outputs = self.decoder.run(inputs).map_err(&error)?;
            let logits = last_logits(&outputs["logits"], rows)?;
            state.absorb(&mut |name| outputs.remove(name), &self.cache_names)?;
            logits
        };
        drop(empty);
        Ok(logits)
    }
}

impl Captioner for Florence2 {
    fn card(&self) -> &ModelCard {
        &self.card
    }

    fn blank_image(&self) -> ImageTensor {
        let (width, height) = self.preprocessor.output_size();
        ImageTensor::new(Array3::<f32>::zeros((3, height as usize, width as usize)).into_dyn())
    }

    fn generate_with(
        &mut self,
        requests: &[GenerationRequest],
        is_cancelled: &mut dyn FnMut(usize) -> bool,
    ) -> Result<(Vec<Generated>, StageTimings), ModelError> {
        if requests.is_empty() {
            return Ok((Vec::new(), StageTimings::default()));
        }
        let specs = self.group_specs(requests);
        let mut timings = StageTimings::default();

        let started = Instant::now();
        let image_features = self.run_vision(requests)?;
        timings.vision = started.elapsed();

        let started = Instant::now();
        let state = self.run_encoder(requests, &image_features)?;
        timings.encoder = started.elapsed();

        let started = Instant::now();
        let (search, steps) = self.decode(state, &specs, is_cancelled, &mut timings.reorder)?;
        timings.decode = started.elapsed();
        timings.decode_steps = steps;

        let results = search
            .results()
            .into_iter()
            .map(|result| {
                let text = if result.finish_reason == FinishReason::Cancelled {
                    String::new()
                } else {
                    self.text.decode_caption(&result.tokens)?
                };
                Ok(Generated {
                    text,
                    token_ids: result.tokens,
                    finish_reason: result.finish_reason,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok((results, timings))
    }
}

/// An image as `[3, H, W]`, the layout `FlorenceFrontend` prepares.
fn pixels_of(image: &ImageTensor) -> Result<ArrayView3<'_, f32>, ModelError> {
    image
        .values()
        .view()
        .into_dimensionality::<Ix3>()
        .map_err(|e| ModelError::Inference {
            stage: "vision",
            message: format!("not a Florence-2 image tensor: {e}"),
        })
}

/// The last position's logits of a decoder call, `[rows, vocab]` flat.
fn last_logits(logits: &DynValue, rows: usize) -> Result<Vec<f32>, ModelError> {
    let (shape, data) = logits
        .try_extract_tensor::<f32>()
        .map_err(ModelError::inference("decoder"))?;
    let (positions, vocab) = (shape[1] as usize, shape[2] as usize);
    Ok(if positions == 1 {
        data.to_vec()
    } else {
        (0..rows)
            .flat_map(|r| {
                data[(r * positions + positions - 1) * vocab..(r * positions + positions) * vocab]
                    .iter()
                    .copied()
            })
            .collect()
    })
}

/// Resolves the four graph files for a variant suffix; a missing file is named.
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
                        "missing {} (an onnx-community Florence-2 export needs onnx/{{vision_encoder,embed_tokens,encoder_model,decoder_model_merged}}{suffix}.onnx)",
                        path.display()
                    ),
                })
            }
        })
        .collect()
}

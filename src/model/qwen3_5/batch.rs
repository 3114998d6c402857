//! The running batch: the rows that are generating and their joined decoder state, driven one
//! step at a time. Prefilled rows `join` it (their KV caches left-padded to a common length, the
//! padding masked, each row at its own position), `step` runs one decoder call for all rows and
//! chooses each row's next token, and `retain` drops the rows that are done or cancelled. Nothing
//! here knows which call the rows came from, so rows of later requests can join between steps.

use super::Qwen35;
use super::decoder::{decode_call, embed_step};
use super::state::DecoderState;
use crate::model::ModelError;
use crate::model::generate::FinishReason;
use crate::model::generate::sample::{Sampling, Stream, apply_repetition_penalty, choose};

/// A row of the running batch.
pub(super) struct Row {
    /// Which request it answers (the caller's index).
    pub request: usize,
    /// Every id seen so far (prompt, then generated): the repetition penalty's set.
    pub seen: Vec<i64>,
    /// The last prompt token, then every generated token.
    pub sequence: Vec<i64>,
    /// Real positions in the cache (the padding not counted).
    pub past: usize,
    /// Left padding of this row in the joined cache.
    pub pad: usize,
    /// M-RoPE's `rope_delta`.
    pub delta: i64,
    pub sampling: Option<Sampling>,
    pub max_new_tokens: usize,
    pub stream: Stream,
    pub finish: Option<FinishReason>,
}

impl Row {
    /// Appends the token chosen from this row's logits and tells whether the row is done.
    pub fn choose_next(&mut self, model: &Qwen35, mut logits: Vec<f32>) {
        apply_repetition_penalty(
            &mut logits,
            &self.seen,
            model.config.generation.repetition_penalty,
        );
        let token = choose(&logits, self.sampling.as_ref(), &mut self.stream) as i64;
        self.sequence.push(token);
        self.seen.push(token);
        let generated = self.sequence.len() - 1;
        if model.eos.contains(&token) {
            self.finish = Some(FinishReason::Eos);
        } else if generated >= self.max_new_tokens {
            self.finish = Some(FinishReason::Length);
        }
    }
}

/// Rows decoding together, their state joined in one batch.
#[derive(Default)]
pub(super) struct RunningBatch {
    rows: Vec<Row>,
    /// `None` while no row runs.
    state: Option<DecoderState>,
}

impl RunningBatch {
    pub fn rows_mut(&mut self) -> &mut [Row] {
        &mut self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds prefilled rows, each with its own state, after the rows already running. Every KV
    /// cache is left-padded to the longest past of all parts; each row's `pad` grows by what
    /// its part was padded, so the mask hides it.
    ///
    /// With the state on the device the join runs there too (`device_rows`): through the host,
    /// every join would copy the whole running batch's state (on the 0.8B-shaped model 20 MB of
    /// conv and recurrent state a row, plus 25 kB per cached position) to the host and back, and
    /// once rows join a running batch between steps that is on every admission, not once per
    /// batch.
    pub fn join(
        &mut self,
        model: &mut Qwen35,
        incoming: Vec<(Row, DecoderState)>,
    ) -> Result<(), ModelError> {
        if incoming.is_empty() {
            return Ok(());
        }
        let mut parts: Vec<(Vec<Row>, DecoderState)> = Vec::with_capacity(incoming.len() + 1);
        if let Some(state) = self.state.take() {
            parts.push((std::mem::take(&mut self.rows), state));
        }
        parts.extend(incoming.into_iter().map(|(row, state)| (vec![row], state)));
        let longest = parts
            .iter()
            .map(|(_, state)| state.past_length(&model.states))
            .max()
            .unwrap_or(0);
        let mut states = Vec::with_capacity(parts.len());
        for (rows, state) in parts {
            let padding = longest - state.past_length(&model.states);
            for mut row in rows {
                row.pad += padding;
                self.rows.push(row);
            }
            states.push(state);
        }
        self.state = Some(DecoderState::join(states, &model.states, &mut model.rows)?);
        Ok(())
    }

    /// Keeps the rows `keep` says to keep, in order, and their state (gathered where it lives);
    /// returns the others. Left padding that every remaining row has (added for longer rows that
    /// left) is cut off the KV caches, so a batch that rows keep joining does not grow without
    /// bound.
    pub fn retain(
        &mut self,
        model: &mut Qwen35,
        mut keep: impl FnMut(&Row) -> bool,
    ) -> Result<Vec<Row>, ModelError> {
        let kept: Vec<usize> = (0..self.rows.len())
            .filter(|&i| keep(&self.rows[i]))
            .collect();
        if kept.len() == self.rows.len() {
            return Ok(Vec::new());
        }
        if kept.is_empty() {
            self.state = None;
        } else if let Some(state) = &mut self.state {
            state.gather(&kept, &mut model.rows)?;
            let shared = kept.iter().map(|&i| self.rows[i].pad).min().unwrap_or(0);
            if shared > 0 {
                state.trim_front(shared, &model.states, &mut model.rows)?;
                for &i in &kept {
                    self.rows[i].pad -= shared;
                }
            }
        }
        let mut left = Vec::with_capacity(self.rows.len() - kept.len());
        let mut next = kept.iter().peekable();
        for (i, row) in std::mem::take(&mut self.rows).into_iter().enumerate() {
            if next.next_if_eq(&&i).is_some() {
                self.rows.push(row);
            } else {
                left.push(row);
            }
        }
        Ok(left)
    }

    /// One decode step: each row's last token through the decoder at the row's own position,
    /// then its next token chosen.
    pub fn step(&mut self, model: &mut Qwen35) -> Result<(), ModelError> {
        let Some(state) = &mut self.state else {
            return Ok(());
        };
        let tokens: Vec<i64> = self
            .rows
            .iter()
            .map(|r| r.sequence[r.sequence.len() - 1])
            .collect();
        let embeds = embed_step(model, &tokens)?;
        let rows = self.rows.len();
        let total = state.past_length(&model.states) + 1;
        let mut mask = Vec::with_capacity(rows * total);
        for row in &self.rows {
            mask.extend(std::iter::repeat_n(0i64, row.pad));
            mask.extend(std::iter::repeat_n(1i64, total - row.pad));
        }
        let mut positions = Vec::with_capacity(3 * rows);
        for _ in 0..3 {
            positions.extend(self.rows.iter().map(|r| r.past as i64 + r.delta));
        }
        let logits = decode_call(
            model,
            state,
            &embeds,
            (vec![rows, total], mask),
            (vec![3, rows, 1], positions),
        )?;
        let vocab = logits.len() / rows;
        for (row, logits) in self.rows.iter_mut().zip(logits.chunks_exact(vocab)) {
            row.past += 1;
            row.choose_next(model, logits.to_vec());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::generate::sample::Sampling;
    use crate::model::runtime::{KvCache, RuntimeOptions, test_library};
    use crate::model::{
        Captioner, GenerationOptions, GenerationRequest, LoadOptions, Output, Task,
    };

    fn tiny(kv_cache: KvCache) -> Qwen35 {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Qwen35::load(&LoadOptions {
            model_dir: root.join("models/tiny-qwen3_5"),
            library: test_library(),
            runtime: RuntimeOptions {
                intra_threads: 2,
                kv_cache,
                ..RuntimeOptions::default()
            },
            variant_suffix: String::new(),
            vision_batch_size: 0,
            vision_max_pixels: 262_144,
            prompt_templates: None,
        })
        .expect("the tiny Qwen3.5 model")
    }

    fn requests(model: &Qwen35) -> Vec<GenerationRequest> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/fixtures_qwen");
        ["shoes-512x512.png", "mug-256x256.png", "lamp-384x256.png"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let bytes = std::fs::read(dir.join(name)).unwrap();
                let prepared = model
                    .card()
                    .frontend
                    .prepare(&bytes, &Default::default())
                    .unwrap();
                GenerationRequest {
                    image: prepared.tensor,
                    options: GenerationOptions {
                        task: Task {
                            output: Output::ALL[i + 1],
                            ..Task::default()
                        },
                        max_new_tokens: 9 + 4 * i,
                        num_beams: 1,
                        // One sampled row: its stream travels with the row.
                        sampling: (i == 1).then_some(Sampling {
                            temperature: 1.3,
                            top_p: 0.9,
                            top_k: 0,
                            seed: 5,
                        }),
                    },
                }
            })
            .collect()
    }

    /// Rows join a batch that is already stepping (request 1 after two steps, request 2 after
    /// five; request 0's longer prompt pads theirs until it leaves, then that padding is cut),
    /// and rows leave as they finish: each row's answer is its answer alone, state on the device
    /// or through the host.
    #[test]
    fn rows_joining_a_running_batch_get_their_answers_alone() {
        for kv_cache in [KvCache::Device, KvCache::Host] {
            let mut model = tiny(kv_cache);
            let requests = requests(&model);
            let alone: Vec<_> = requests
                .iter()
                .map(|r| model.generate(std::slice::from_ref(r)).unwrap().remove(0))
                .collect();

            let features = super::super::generate::vision(&mut model, &requests).unwrap();
            let prefill = |model: &mut Qwen35, i: usize| {
                vec![super::super::generate::prefill(model, i, &requests[i], &features[i]).unwrap()]
            };
            let mut batch = RunningBatch::default();
            let mut answers = vec![None; requests.len()];
            let mut steps = 0;
            let incoming = prefill(&mut model, 0);
            batch.join(&mut model, incoming).unwrap();
            while answers.iter().any(Option::is_none) {
                if steps == 2 || steps == 5 {
                    let incoming = prefill(&mut model, steps / 2);
                    batch.join(&mut model, incoming).unwrap();
                }
                for row in batch.retain(&mut model, |r| r.finish.is_none()).unwrap() {
                    answers[row.request] =
                        Some(super::super::generate::finish(&model, &row).unwrap());
                }
                batch.step(&mut model).unwrap();
                steps += 1;
            }
            assert!(batch.is_empty());
            let answers: Vec<_> = answers.into_iter().map(Option::unwrap).collect();
            assert_eq!(answers, alone, "{kv_cache}");
        }
    }
}

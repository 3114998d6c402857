//! One batch through Qwen3.5 (spec §2.7, §2.10): every image through the vision encoder in one
//! call; each row prefilled alone (the fused linear-attention layers would fold padding into
//! their state); then one decode loop over all rows, their KV caches left-padded to a common
//! length with the padding masked, each row at its own position. Finished and cancelled rows leave
//! between steps.

use std::borrow::Cow;
use std::time::Instant;

use ort::session::{SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor};

use super::rope::{TokenGrid, prompt_positions};
use super::state::DecoderState;
use super::{Qwen35, patches_of};
use crate::model::generate::FinishReason;
use crate::model::generate::sample::{Stream, apply_repetition_penalty, choose};
use crate::model::{Generated, GenerationRequest, ModelError, StageTimings, distinct_images};

/// A row of the running batch.
struct Row {
    /// Which request it answers.
    request: usize,
    /// Every id seen so far (prompt, then generated): the repetition penalty's set.
    seen: Vec<i64>,
    /// The last prompt token, then every generated token.
    sequence: Vec<i64>,
    /// Real positions in the cache (the padding not counted).
    past: usize,
    /// Left padding of this row in the joined cache.
    pad: usize,
    /// M-RoPE's `rope_delta`.
    delta: i64,
    stream: Stream,
    finish: Option<FinishReason>,
}

pub(super) fn run(
    model: &mut Qwen35,
    requests: &[GenerationRequest],
    is_cancelled: &mut dyn FnMut(usize) -> bool,
) -> Result<(Vec<Generated>, StageTimings), ModelError> {
    let mut timings = StageTimings::default();
    if requests.is_empty() {
        return Ok((Vec::new(), timings));
    }
    let started = Instant::now();
    let features = vision(model, requests)?;
    timings.vision = started.elapsed();

    let started = Instant::now();
    let mut rows = Vec::with_capacity(requests.len());
    let mut states = Vec::with_capacity(requests.len());
    for (index, (request, image)) in requests.iter().zip(&features).enumerate() {
        let (row, state) = prefill(model, index, request, image)?;
        rows.push(row);
        states.push(state);
    }
    timings.encoder = started.elapsed();

    let started = Instant::now();
    let longest = rows.iter().map(|r| r.past).max().unwrap_or(0);
    for row in &mut rows {
        row.pad = longest - row.past;
    }
    let mut state = DecoderState::join(&states, &model.states)?;
    drop(states);
    let mut results: Vec<Option<Generated>> = vec![None; requests.len()];
    loop {
        // Rows that are done, or whose caller left, leave the batch.
        for row in &mut rows {
            if row.finish.is_none() && is_cancelled(row.request) {
                row.finish = Some(FinishReason::Cancelled);
            }
        }
        let keep: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].finish.is_none())
            .collect();
        if keep.len() < rows.len() {
            let started = Instant::now();
            for row in rows.iter().filter(|r| r.finish.is_some()) {
                results[row.request] = Some(finish(model, row)?);
            }
            if keep.is_empty() {
                break;
            }
            state.gather(&keep)?;
            let mut kept = Vec::with_capacity(keep.len());
            for (i, row) in rows.into_iter().enumerate() {
                if keep.contains(&i) {
                    kept.push(row);
                }
            }
            rows = kept;
            timings.reorder += started.elapsed();
        }
        let tokens: Vec<i64> = rows
            .iter()
            .map(|r| r.sequence[r.sequence.len() - 1])
            .collect();
        let embeds = embed(model, &tokens, rows.len(), 1)?;
        let total = state.past_length(&model.states) + 1;
        let mut mask = Vec::with_capacity(rows.len() * total);
        for row in &rows {
            mask.extend(std::iter::repeat_n(0i64, row.pad));
            mask.extend(std::iter::repeat_n(1i64, total - row.pad));
        }
        let mut positions = Vec::with_capacity(3 * rows.len());
        for _ in 0..3 {
            positions.extend(rows.iter().map(|r| r.past as i64 + r.delta));
        }
        let logits = decode_call(
            model,
            &mut state,
            embeds,
            (vec![rows.len(), total], mask),
            (vec![3, rows.len(), 1], positions),
        )?;
        timings.decode_steps += 1;
        let vocab = logits.len() / rows.len();
        for (row, logits) in rows.iter_mut().zip(logits.chunks_exact(vocab)) {
            row.past += 1;
            next_token(model, row, &requests[row.request], logits.to_vec());
        }
    }
    timings.decode = started.elapsed();
    let results = results
        .into_iter()
        .map(|r| r.expect("every row finishes; this is a bug"))
        .collect();
    Ok((results, timings))
}

/// Every distinct image through the vision encoder in one call (the outputs of one image share
/// it); each request's rows of the features.
fn vision(model: &mut Qwen35, requests: &[GenerationRequest]) -> Result<Vec<Vec<f32>>, ModelError> {
    let error = ModelError::inference("vision");
    let merge = model.config.spatial_merge_size;
    let (images, of_request) = distinct_images(requests);
    let mut pixels = Vec::new();
    let mut grids = Vec::with_capacity(images.len() * 3);
    let mut tokens = Vec::with_capacity(images.len());
    let mut columns = 0;
    for image in &images {
        let (patches, grid) = patches_of(image, merge)?;
        columns = patches.ncols();
        pixels.extend(patches.iter().copied());
        grids.extend(grid);
        tokens.push(patches.nrows() / (merge * merge));
    }
    let rows = pixels.len() / columns.max(1);
    let pixel_values = Tensor::from_array(([rows, columns], pixels)).map_err(&error)?;
    let grid = Tensor::from_array(([images.len(), 3], grids)).map_err(&error)?;
    let outputs = model
        .vision
        .run(ort::inputs!["pixel_values" => pixel_values, "image_grid_thw" => grid])
        .map_err(&error)?;
    let (shape, data) = outputs["image_features"]
        .try_extract_tensor::<f32>()
        .map_err(&error)?;
    let total: usize = tokens.iter().sum();
    if shape.len() != 2 || shape[0] as usize != total {
        return Err(ModelError::Inference {
            stage: "vision",
            message: format!("image_features has shape {shape:?}, expected [{total}, hidden]"),
        });
    }
    let width = shape[1] as usize;
    let mut per_image = Vec::with_capacity(images.len());
    let mut at = 0;
    for count in tokens {
        per_image.push(&data[at * width..(at + count) * width]);
        at += count;
    }
    Ok(of_request.iter().map(|&i| per_image[i].to_vec()).collect())
}

/// `embed_tokens` over `[rows, len]` ids: the flat `[rows, len, hidden]` embeddings.
fn embed(
    model: &mut Qwen35,
    ids: &[i64],
    rows: usize,
    len: usize,
) -> Result<Tensor<f32>, ModelError> {
    let error = ModelError::inference("embed");
    let input = Tensor::from_array(([rows, len], ids.to_vec())).map_err(&error)?;
    let outputs = model
        .embed
        .run(ort::inputs!["input_ids" => input])
        .map_err(&error)?;
    let (shape, data) = outputs["inputs_embeds"]
        .try_extract_tensor::<f32>()
        .map_err(&error)?;
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    Tensor::from_array((shape, data.to_vec())).map_err(&error)
}

/// One request alone: its prompt through the decoder (image features merged at the pads), the
/// first token chosen, the state kept for the decode loop.
fn prefill(
    model: &mut Qwen35,
    index: usize,
    request: &GenerationRequest,
    features: &[f32],
) -> Result<(Row, DecoderState), ModelError> {
    let merge = model.config.spatial_merge_size;
    let (patches, grid) = patches_of(&request.image, merge)?;
    let image_tokens = patches.nrows() / (merge * merge);
    let ids = model.text.prompt_ids(&request.options.task, image_tokens)?;
    let special = model.text.special;
    let token_grid = TokenGrid {
        t: grid[0] as usize,
        h: grid[1] as usize / merge,
        w: grid[2] as usize / merge,
    };
    let positions = prompt_positions(&ids, special.image_pad, special.vision_start, &[token_grid])
        .map_err(|message| ModelError::Inference {
            stage: "prompt",
            message,
        })?;
    let len = ids.len();
    let embeds = embed(model, &ids, 1, len)?;
    let embeds = merge_features(embeds, &ids, special.image_pad, features)?;
    let mut state = DecoderState::empty(&model.states)?;
    let mut rows_of_positions = Vec::with_capacity(3 * len);
    for row in &positions.rows {
        rows_of_positions.extend_from_slice(row);
    }
    let logits = decode_call(
        model,
        &mut state,
        embeds,
        (vec![1, len], vec![1i64; len]),
        (vec![3, 1, len], rows_of_positions),
    )?;
    let seed = request.options.sampling.map_or(0, |s| s.seed);
    let mut row = Row {
        request: index,
        seen: ids.clone(),
        sequence: vec![ids[len - 1]],
        past: len,
        pad: 0,
        delta: positions.delta,
        stream: Stream::new(seed),
        finish: None,
    };
    next_token(model, &mut row, request, logits);
    Ok((row, state))
}

/// The k-th image pad of the prompt gets row k of the image's features (spec §2.7 step 3).
fn merge_features(
    embeds: Tensor<f32>,
    ids: &[i64],
    image_pad: i64,
    features: &[f32],
) -> Result<Tensor<f32>, ModelError> {
    let error = ModelError::inference("embed");
    let (shape, data) = embeds.try_extract_tensor::<f32>().map_err(&error)?;
    let hidden = shape[2] as usize;
    let pads = ids.iter().filter(|&&id| id == image_pad).count();
    if features.len() != pads * hidden {
        return Err(ModelError::Inference {
            stage: "embed",
            message: format!(
                "{pads} image pads in the prompt but {} image features of width {hidden}",
                features.len() / hidden.max(1)
            ),
        });
    }
    let mut data = data.to_vec();
    let mut next = features.chunks_exact(hidden);
    for (position, _) in ids.iter().enumerate().filter(|(_, id)| **id == image_pad) {
        let row = next.next().expect("counted above");
        data[position * hidden..(position + 1) * hidden].copy_from_slice(row);
    }
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    Tensor::from_array((shape, data)).map_err(&error)
}

/// One decoder call; the state takes the presents. Returns the last position's logits of each
/// row, `[rows, vocab]` flat.
fn decode_call(
    model: &mut Qwen35,
    state: &mut DecoderState,
    embeds: Tensor<f32>,
    mask: (Vec<usize>, Vec<i64>),
    positions: (Vec<usize>, Vec<i64>),
) -> Result<Vec<f32>, ModelError> {
    let error = ModelError::inference("decoder");
    let rows = mask.0[0];
    let embeds = embeds.into_dyn();
    let mask = Tensor::from_array(mask).map_err(&error)?.into_dyn();
    let positions = Tensor::from_array(positions).map_err(&error)?.into_dyn();
    let keep = Tensor::from_array((Vec::<usize>::new(), vec![1i64]))
        .map_err(&error)?
        .into_dyn();
    let branch = Tensor::from_array(([1usize], vec![state.past_length(&model.states) > 0]))
        .map_err(&error)?
        .into_dyn();
    let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
        (Cow::Borrowed("inputs_embeds"), (&embeds).into()),
        (Cow::Borrowed("attention_mask"), (&mask).into()),
        (Cow::Borrowed("position_ids"), (&positions).into()),
    ];
    if model.has_logits_to_keep {
        inputs.push((Cow::Borrowed("num_logits_to_keep"), (&keep).into()));
    }
    if model.has_cache_branch {
        inputs.push((Cow::Borrowed("use_cache_branch"), (&branch).into()));
    }
    let states: Vec<(&str, &DynValue)> = state.inputs(&model.states).collect();
    for (name, value) in states {
        inputs.push((Cow::Borrowed(name), value.into()));
    }
    let mut outputs = model.decoder.run(inputs).map_err(&error)?;
    let logits = last_logits(&mut outputs, rows)?;
    state.absorb(&model.states, &mut outputs)?;
    Ok(logits)
}

/// The last position's logits of each row, `[rows, vocab]` flat.
fn last_logits(outputs: &mut SessionOutputs<'_>, rows: usize) -> Result<Vec<f32>, ModelError> {
    let (shape, data) = outputs["logits"]
        .try_extract_tensor::<f32>()
        .map_err(ModelError::inference("decoder"))?;
    let (positions, vocab) = (shape[1] as usize, shape[2] as usize);
    Ok((0..rows)
        .flat_map(|r| {
            let last = r * positions + positions - 1;
            data[last * vocab..(last + 1) * vocab].iter().copied()
        })
        .collect())
}

/// Chooses a row's next token from its logits and tells whether the row is done.
fn next_token(model: &Qwen35, row: &mut Row, request: &GenerationRequest, mut logits: Vec<f32>) {
    apply_repetition_penalty(
        &mut logits,
        &row.seen,
        model.config.generation.repetition_penalty,
    );
    let token = choose(&logits, request.options.sampling.as_ref(), &mut row.stream) as i64;
    row.sequence.push(token);
    row.seen.push(token);
    let generated = row.sequence.len() - 1;
    if model.eos.contains(&token) {
        row.finish = Some(FinishReason::Eos);
    } else if generated >= request.options.max_new_tokens {
        row.finish = Some(FinishReason::Length);
    }
}

/// A finished row's answer: the text without special tokens or a thinking block, trimmed.
fn finish(model: &Qwen35, row: &Row) -> Result<Generated, ModelError> {
    let finish_reason = row.finish.expect("finished rows only");
    let text = if finish_reason == FinishReason::Cancelled {
        String::new()
    } else {
        let ids: Vec<u32> = row.sequence[1..]
            .iter()
            .filter(|id| !model.eos.contains(id))
            .map(|&id| id as u32)
            .collect();
        let text = model
            .text
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| ModelError::Inference {
                stage: "tokenizer",
                message: format!("cannot decode the answer: {e}"),
            })?;
        clean(&text)
    };
    Ok(Generated {
        text,
        token_ids: row.sequence.clone(),
        finish_reason,
    })
}

/// The answer without a leading `<think>…</think>` block (the prompt disables thinking; a
/// model may still open one), trimmed.
fn clean(text: &str) -> String {
    let text = text.trim_start();
    let text = match text.strip_prefix("<think>") {
        Some(rest) => rest.split_once("</think>").map_or(rest, |(_, after)| after),
        None => text,
    };
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn a_thinking_block_is_dropped() {
        assert_eq!(clean("  <think>\nhmm\n</think>\n\nRed shoe. "), "Red shoe.");
        assert_eq!(clean("Red shoe."), "Red shoe.");
    }
}

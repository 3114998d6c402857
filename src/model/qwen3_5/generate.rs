//! One batch through Qwen3.5 (spec §2.7, §2.10): every image through the vision encoder in one
//! call; each row prefilled alone (the fused linear-attention layers would fold padding into
//! their state); then the rows join one running batch (`batch.rs`) that steps until every row is
//! done. Finished and cancelled rows leave between steps.

use std::time::Instant;

use ort::value::{DynValue, Tensor};

use super::batch::{Row, RunningBatch};
use super::decoder::{decode_call, embed};
use super::rope::{TokenGrid, prompt_positions};
use super::state::DecoderState;
use super::{Qwen35, patches_of};
use crate::model::generate::FinishReason;
use crate::model::generate::sample::Stream;
use crate::model::{Generated, GenerationRequest, ModelError, StageTimings, distinct_images};

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
    let mut results: Vec<Option<Generated>> = vec![None; requests.len()];
    let mut prefilled = Vec::with_capacity(requests.len());
    for (index, (request, image)) in requests.iter().zip(&features).enumerate() {
        let (row, state) = prefill(model, index, request, image)?;
        // A row done at its first token never joins.
        match row.finish {
            Some(_) => results[index] = Some(finish(model, &row)?),
            None => prefilled.push((row, state)),
        }
    }
    timings.encoder = started.elapsed();

    let started = Instant::now();
    let mut batch = RunningBatch::default();
    let joining = Instant::now();
    batch.join(model, prefilled)?;
    timings.reorder += joining.elapsed();
    while !batch.is_empty() {
        // Rows whose caller left are done too; done rows leave the batch.
        for row in batch.rows_mut() {
            if row.finish.is_none() && is_cancelled(row.request) {
                row.finish = Some(FinishReason::Cancelled);
            }
        }
        let leaving = Instant::now();
        let left = batch.retain(model, |row| row.finish.is_none())?;
        timings.reorder += leaving.elapsed();
        for row in left {
            results[row.request] = Some(finish(model, &row)?);
        }
        if batch.is_empty() {
            break;
        }
        batch.step(model)?;
        timings.decode_steps += 1;
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
pub(super) fn vision(
    model: &mut Qwen35,
    requests: &[GenerationRequest],
) -> Result<Vec<Vec<f32>>, ModelError> {
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

/// One request alone: its prompt through the decoder (image features merged at the pads), the
/// first token chosen, the state kept for the decode loop.
pub(super) fn prefill(
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
    let embeds = merge_features(&embeds, &ids, special.image_pad, features)?;
    let mut state = DecoderState::empty(&model.states)?;
    let mut rows_of_positions = Vec::with_capacity(3 * len);
    for row in &positions.rows {
        rows_of_positions.extend_from_slice(row);
    }
    let logits = decode_call(
        model,
        &mut state,
        &embeds,
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
        sampling: request.options.sampling,
        max_new_tokens: request.options.max_new_tokens,
        stream: Stream::new(seed),
        finish: None,
    };
    row.choose_next(model, logits);
    Ok((row, state))
}

/// The k-th image pad of the prompt gets row k of the image's features (spec §2.7 step 3).
fn merge_features(
    embeds: &DynValue,
    ids: &[i64],
    image_pad: i64,
    features: &[f32],
) -> Result<DynValue, ModelError> {
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
    Ok(Tensor::from_array((shape, data))
        .map_err(&error)?
        .into_dyn())
}

/// A finished row's answer: the text without special tokens or a thinking block, trimmed.
pub(super) fn finish(model: &Qwen35, row: &Row) -> Result<Generated, ModelError> {
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

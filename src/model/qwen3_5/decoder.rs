//! The token sessions' calls: `embed_tokens`, and one `decoder_model_merged` call whose `present*`
//! outputs become the state's next `past*` inputs. With `KvCache::Device` the state (and a decode
//! step's embeddings) are bound by name and stay in the session's memory, only the logits come to
//! the host; with `KvCache::Host` every output comes back in host memory and is fed in again.

use std::borrow::Cow;

use ort::session::SessionInputValue;
use ort::value::{DynValue, Tensor};

use super::Qwen35;
use super::state::DecoderState;
use crate::model::ModelError;
use crate::model::runtime::{self, KvCache, Place};

/// `embed_tokens` over `[rows, len]` ids, in host memory (prefill merges image features into it).
pub(super) fn embed(
    model: &mut Qwen35,
    ids: &[i64],
    rows: usize,
    len: usize,
) -> Result<DynValue, ModelError> {
    let error = ModelError::inference("embed");
    let input = Tensor::from_array(([rows, len], ids.to_vec())).map_err(&error)?;
    let mut outputs = model
        .embed
        .run(ort::inputs!["input_ids" => input])
        .map_err(&error)?;
    outputs
        .remove("inputs_embeds")
        .ok_or_else(|| ModelError::Inference {
            stage: "embed",
            message: "output `inputs_embeds` missing".into(),
        })
}

/// One token per row for a decode step, `[rows, 1, hidden]`: on the device with the device
/// state, so the step's inputs never cross to the host but for the small mask and positions.
pub(super) fn embed_step(model: &mut Qwen35, tokens: &[i64]) -> Result<DynValue, ModelError> {
    if model.rows.kv_cache() == KvCache::Host {
        return embed(model, tokens, tokens.len(), 1);
    }
    let input = Tensor::from_array(([tokens.len(), 1], tokens.to_vec()))
        .map_err(ModelError::inference("embed"))?
        .into_dyn();
    Ok(runtime::run_bound(
        &mut model.embed,
        model.device,
        &[("input_ids", &input)],
        &[("inputs_embeds", Place::Device)],
        "embed",
    )?
    .remove(0))
}

/// One decoder call; the state takes the presents. Returns the last position's logits of each
/// row, `[rows, vocab]` flat.
pub(super) fn decode_call(
    model: &mut Qwen35,
    state: &mut DecoderState,
    embeds: &DynValue,
    mask: (Vec<usize>, Vec<i64>),
    positions: (Vec<usize>, Vec<i64>),
) -> Result<Vec<f32>, ModelError> {
    let error = ModelError::inference("decoder");
    let rows = mask.0[0];
    let mask = Tensor::from_array(mask).map_err(&error)?.into_dyn();
    let positions = Tensor::from_array(positions).map_err(&error)?.into_dyn();
    let keep = Tensor::from_array((Vec::<usize>::new(), vec![1i64]))
        .map_err(&error)?
        .into_dyn();
    let branch = Tensor::from_array(([1usize], vec![state.past_length(&model.states) > 0]))
        .map_err(&error)?
        .into_dyn();
    let mut inputs: Vec<(&str, &DynValue)> = vec![
        ("inputs_embeds", embeds),
        ("attention_mask", &mask),
        ("position_ids", &positions),
    ];
    if model.has_logits_to_keep {
        inputs.push(("num_logits_to_keep", &keep));
    }
    if model.has_cache_branch {
        inputs.push(("use_cache_branch", &branch));
    }
    inputs.extend(state.inputs(&model.states));

    let (logits, presents) = match model.rows.kv_cache() {
        KvCache::Device => {
            // I/O binding: the presents stay in the session's memory and are bound as the next
            // call's pasts as they are; only the logits are put in host memory.
            let mut outputs = vec![("logits", Place::Host)];
            outputs.extend(
                model
                    .states
                    .iter()
                    .map(|spec| (spec.present.as_str(), Place::Device)),
            );
            let mut values = runtime::run_bound(
                &mut model.decoder,
                model.device,
                &inputs,
                &outputs,
                "decoder",
            )?;
            let logits = last_logits(&values[0], rows)?;
            (logits, values.split_off(1))
        }
        KvCache::Host => {
            let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = inputs
                .iter()
                .map(|(name, value)| (Cow::Borrowed(*name), (*value).into()))
                .collect();
            let mut outputs = model.decoder.run(inputs).map_err(&error)?;
            let logits = last_logits(&outputs["logits"], rows)?;
            let presents = model
                .states
                .iter()
                .map(|spec| {
                    outputs
                        .remove(spec.present.as_str())
                        .ok_or_else(|| ModelError::Inference {
                            stage: "decoder",
                            message: format!("output `{}` missing", spec.present),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            (logits, presents)
        }
    };
    state.absorb(presents)?;
    Ok(logits)
}

/// The last position's logits of each row, `[rows, vocab]` flat.
fn last_logits(logits: &DynValue, rows: usize) -> Result<Vec<f32>, ModelError> {
    let (shape, data) = logits
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

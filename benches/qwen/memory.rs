//! What a running row costs in memory: the decoder state's size from the graph's own input
//! shapes (read by the project's Python `onnx` without the weights), and the process's peak
//! resident memory around a call, from Linux's high-water mark reset through `clear_refs`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The decoder state of one row, from `past_*` inputs: fixed-size states (conv, recurrent) and
/// the KV caches, which grow by one position per token.
#[derive(Debug, Clone, Copy)]
pub struct StateSize {
    pub fixed_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub fixed_tensors: usize,
    pub kv_tensors: usize,
}

impl StateSize {
    pub fn at(&self, tokens: usize) -> u64 {
        self.fixed_bytes + self.kv_bytes_per_token * tokens as u64
    }
}

const GRAPH_INPUTS: &str = r#"
import json, sys, onnx
graph = onnx.load(sys.argv[1], load_external_data=False).graph
print(json.dumps([
    {"name": i.name, "elem": i.type.tensor_type.elem_type,
     "dims": [d.dim_value if d.HasField("dim_value") else d.dim_param
              for d in i.type.tensor_type.shape.dim]}
    for i in graph.input]))
"#;

/// Bytes of one element of an ONNX `TensorProto.DataType`.
fn element_bytes(elem: i64) -> Option<u64> {
    match elem {
        1 | 6 | 12 => Some(4),      // float, int32, uint32
        7 | 11 | 13 => Some(8),     // int64, double, uint64
        10 | 16 | 5 | 4 => Some(2), // float16, bfloat16, int16, uint16
        2 | 3 | 9 => Some(1),       // uint8, int8, bool
        _ => None,
    }
}

/// Reads the `past_*` inputs of `decoder` (the graph only; its external data is not read).
pub fn state_size(root: &Path, decoder: &Path) -> Result<StateSize, String> {
    let env = Command::new("bash")
        .arg(root.join("scripts/python-env.sh"))
        .output()
        .map_err(|e| format!("scripts/python-env.sh: {e}"))?;
    if !env.status.success() {
        return Err("scripts/python-env.sh failed (make venv)".into());
    }
    let python = String::from_utf8_lossy(&env.stdout).trim().to_owned();
    let out = Command::new(python)
        .args(["-c", GRAPH_INPUTS])
        .arg(decoder)
        .output()
        .map_err(|e| format!("python: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let inputs: Vec<Value> =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("graph inputs: {e}"))?;
    let mut size = StateSize {
        fixed_bytes: 0,
        kv_bytes_per_token: 0,
        fixed_tensors: 0,
        kv_tensors: 0,
    };
    for input in &inputs {
        let name = input["name"].as_str().unwrap_or_default();
        if !name.starts_with("past_") {
            continue;
        }
        let elem = input["elem"].as_i64().and_then(element_bytes);
        let dims = input["dims"].as_array().cloned().unwrap_or_default();
        let kv = name.starts_with("past_key_values.");
        // Batch first; a KV cache's third axis is its past length: per row and per position.
        let mut bytes = elem.ok_or_else(|| format!("{name}: unknown element type"))?;
        for (axis, dim) in dims.iter().enumerate().skip(1) {
            match (dim.as_u64(), kv && axis == 2) {
                (_, true) => {}
                (Some(d), false) => bytes *= d,
                (None, false) => return Err(format!("{name}: symbolic axis {axis} ({dim})")),
            }
        }
        if kv {
            size.kv_bytes_per_token += bytes;
            size.kv_tensors += 1;
        } else {
            size.fixed_bytes += bytes;
            size.fixed_tensors += 1;
        }
    }
    if size.kv_tensors == 0 {
        return Err("no past_key_values.* inputs".into());
    }
    Ok(size)
}

fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resident bytes now and the peak over `work` (Linux: `VmHWM` after resetting it); `None`
/// where the peak cannot be reset.
pub fn peak_over<T>(work: impl FnOnce() -> T) -> (T, Option<(u64, u64)>) {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib("VmRSS:");
    let value = work();
    let peak = status_kib("VmHWM:");
    match (reset, before, peak) {
        (true, Some(before), Some(peak)) => (value, Some((before * 1024, peak * 1024))),
        _ => (value, None),
    }
}

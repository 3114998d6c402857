//! `preprocessor_config.json`: the keys that drive preprocessing, validated once at load time.

use std::path::Path;

use serde::Deserialize;

use super::PreprocessError;

/// Largest accepted `size.width` / `size.height`: far above any vision encoder input, low enough
/// that a typo cannot make every request allocate gigabytes.
const MAX_TARGET_SIDE: u32 = 8192;

/// Parsed `preprocessor_config.json`: the keys of Florence-2's `CLIPImageProcessor` (a fixed
/// output size) and of the Qwen2-VL image processor (`size` as pixel bounds with `patch_size` and
/// `merge_size`: the aspect kept, sides multiples of `patch_size × merge_size`; see [`SizeRule`]).
///
/// Unknown keys are ignored (the three task maps in the same file are read elsewhere). A key that
/// is missing takes the HF Python processors' default, the way the models were trained (which is
/// also the Florence-2 value of its spec, section 4, and what [`Default`] gives): 768×768,
/// bicubic, rescale by 1/255, ImageNet mean/std. (transformers.js skips normalisation when
/// `do_normalize` is missing and resizes bilinearly when `resample` is: the Qwen spec's P4.)
///
/// `do_convert_rgb` is accepted but the image is always converted to RGB: the vision encoder takes
/// three channels. `do_center_crop: true` and a `size` of pixel bounds without `patch_size` and
/// `merge_size` are refused rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PreprocessorConfig {
    /// Resize to `size` (aspect ratio not kept). When false the decoded size is kept.
    pub do_resize: bool,
    /// Target size: `height` and `width`, or the pixel bounds `shortest_edge` and `longest_edge`
    /// (Qwen2-VL names them so; they are pixel counts).
    pub size: ImageSize,
    /// PIL resampling filter number (`3` = bicubic).
    pub resample: Resample,
    /// Multiply pixel values (0..=255) by `rescale_factor`.
    pub do_rescale: bool,
    pub rescale_factor: f64,
    /// Compute `(x - image_mean[c]) / image_std[c]` after rescaling.
    pub do_normalize: bool,
    #[serde(deserialize_with = "per_channel")]
    pub image_mean: [f32; 3],
    #[serde(deserialize_with = "per_channel")]
    pub image_std: [f32; 3],
    /// Accepted for compatibility; RGB conversion always happens.
    pub do_convert_rgb: Option<bool>,
    /// Must be false or absent.
    pub do_center_crop: Option<bool>,
    /// Number of image tokens the vision encoder produces (577 for Florence-2), if stated.
    pub image_seq_length: Option<u32>,
    /// Side of a square patch in pixels (Qwen2-VL: 16).
    pub patch_size: Option<u32>,
    /// Frames a patch spans; a still image is repeated to fill them (Qwen2-VL: 2).
    pub temporal_patch_size: Option<u32>,
    /// Patches merged into one token along each side (Qwen2-VL: 2).
    pub merge_size: Option<u32>,
    /// Pixel bounds of the resized image; over `size.shortest_edge` / `size.longest_edge`.
    pub min_pixels: Option<u64>,
    pub max_pixels: Option<u64>,
}

/// `size` of the config, as the file states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSize {
    pub height: Option<u32>,
    pub width: Option<u32>,
    pub shortest_edge: Option<u64>,
    pub longest_edge: Option<u64>,
}

/// How the output size follows from the image's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRule {
    /// Exactly this size, the aspect ratio not kept (Florence-2's CLIP processor).
    Exact { width: u32, height: u32 },
    /// Qwen2-VL's `smart_resize`: the aspect ratio kept, both sides multiples of `factor`, the
    /// pixel count between the bounds.
    Smart {
        factor: u32,
        min_pixels: u64,
        max_pixels: u64,
    },
}

/// The most pixels a `Smart` rule may produce: 8192², far above any vision input.
const MAX_SMART_PIXELS: u64 = (MAX_TARGET_SIDE as u64) * (MAX_TARGET_SIDE as u64);

/// Qwen2-VL's `smart_resize` with f64 arithmetic and Python's rounding (half to even), as the HF
/// processor the models were trained with does it; transformers.js rounds halves up, so an exact
/// half (a side of 80 with factor 32) differs: the parity set avoids resizing. Sides under the
/// factor are first scaled up to it, as transformers.js does, where Python would refuse.
pub fn smart_resize(
    width: u32,
    height: u32,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> (u32, u32) {
    let factor_f = f64::from(factor);
    let (mut h, mut w) = (f64::from(height), f64::from(width));
    if h < factor_f || w < factor_f {
        let scale = (factor_f / h).max(factor_f / w);
        h = (h * scale).round();
        w = (w * scale).round();
    }
    let mut h_bar = (h / factor_f).round_ties_even() * factor_f;
    let mut w_bar = (w / factor_f).round_ties_even() * factor_f;
    if h_bar * w_bar > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        h_bar = factor_f.max((h / beta / factor_f).floor() * factor_f);
        w_bar = factor_f.max((w / beta / factor_f).floor() * factor_f);
    } else if h_bar * w_bar < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        h_bar = (h * beta / factor_f).ceil() * factor_f;
        w_bar = (w * beta / factor_f).ceil() * factor_f;
    }
    (w_bar as u32, h_bar as u32)
}

/// PIL resampling filters, by their PIL number as used in `preprocessor_config.json`.
///
/// All are implemented with `fast_image_resize`, whose convolution follows Pillow's (same
/// kernels, support scaled when shrinking, separable passes with an 8-bit intermediate and
/// output); the test suite compares each with PIL. PIL's BOX (4) is refused: it does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "u32")]
pub enum Resample {
    /// 0, `PIL.Image.NEAREST`.
    Nearest,
    /// 1, `PIL.Image.LANCZOS` (Lanczos, a = 3).
    Lanczos,
    /// 2, `PIL.Image.BILINEAR` (triangle filter).
    Bilinear,
    /// 3, `PIL.Image.BICUBIC` (Catmull-Rom, a = -0.5). Florence-2's value.
    Bicubic,
    /// 5, `PIL.Image.HAMMING`.
    Hamming,
}

impl Resample {
    /// The PIL filter number.
    pub fn pil_number(self) -> u32 {
        match self {
            Resample::Nearest => 0,
            Resample::Lanczos => 1,
            Resample::Bilinear => 2,
            Resample::Bicubic => 3,
            Resample::Hamming => 5,
        }
    }
}

impl TryFrom<u32> for Resample {
    type Error = String;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Ok(match value {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            4 => {
                // fast_image_resize breaks ties at exact half-pixel distances the other way than
                // Pillow, which changes a third of the values by one step at integer ratios.
                return Err("resample 4 (PIL BOX) is not supported".to_owned());
            }
            5 => Resample::Hamming,
            other => {
                return Err(format!(
                    "unsupported resample value {other}: expected a PIL filter number \
                     0 (nearest), 1 (lanczos), 2 (bilinear), 3 (bicubic) or 5 (hamming)"
                ));
            }
        })
    }
}

impl Default for PreprocessorConfig {
    /// The Florence-2 values of the spec, section 4.
    fn default() -> Self {
        PreprocessorConfig {
            do_resize: true,
            size: ImageSize {
                height: Some(768),
                width: Some(768),
                shortest_edge: None,
                longest_edge: None,
            },
            resample: Resample::Bicubic,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.485, 0.456, 0.406],
            image_std: [0.229, 0.224, 0.225],
            do_convert_rgb: None,
            do_center_crop: None,
            image_seq_length: None,
            patch_size: None,
            temporal_patch_size: None,
            merge_size: None,
            min_pixels: None,
            max_pixels: None,
        }
    }
}

impl PreprocessorConfig {
    /// Reads and validates a `preprocessor_config.json`; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, PreprocessError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PreprocessError::InvalidConfig {
            origin: origin.clone(),
            reason: format!("cannot read the file: {e}"),
        })?;
        Self::parse(&text, origin)
    }

    /// Parses and validates a config from JSON text.
    pub fn from_json_str(s: &str) -> Result<Self, PreprocessError> {
        Self::parse(s, "(inline JSON)".to_owned())
    }

    fn parse(text: &str, origin: String) -> Result<Self, PreprocessError> {
        let config: PreprocessorConfig =
            serde_json::from_str(text).map_err(|e| PreprocessError::InvalidConfig {
                origin: origin.clone(),
                reason: e.to_string(),
            })?;
        config
            .validate()
            .map_err(|reason| PreprocessError::InvalidConfig { origin, reason })?;
        Ok(config)
    }

    /// Checks the values; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self.size_rule()? {
            SizeRule::Exact { width, height } => {
                if !(1..=MAX_TARGET_SIDE).contains(&width)
                    || !(1..=MAX_TARGET_SIDE).contains(&height)
                {
                    return Err(format!(
                        "size {width}x{height} is out of range (each side must be 1..={MAX_TARGET_SIDE})"
                    ));
                }
            }
            SizeRule::Smart {
                min_pixels,
                max_pixels,
                ..
            } => {
                if !(1..=MAX_SMART_PIXELS).contains(&max_pixels) || min_pixels > max_pixels {
                    return Err(format!(
                        "pixel bounds {min_pixels}..={max_pixels} are out of range (at most {MAX_SMART_PIXELS}, the lower first)"
                    ));
                }
            }
        }
        if self.do_center_crop == Some(true) {
            return Err("do_center_crop=true is not supported".to_owned());
        }
        if self.do_rescale && !(self.rescale_factor.is_finite() && self.rescale_factor > 0.0) {
            return Err(format!(
                "rescale_factor must be a positive number, got {}",
                self.rescale_factor
            ));
        }
        if self.do_normalize {
            if self.image_mean.iter().any(|m| !m.is_finite()) {
                return Err(format!("image_mean {:?} is not finite", self.image_mean));
            }
            if self.image_std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(format!(
                    "image_std {:?} must be positive numbers",
                    self.image_std
                ));
            }
        }
        Ok(())
    }

    /// How the output size follows from the image's; an error says which keys are missing.
    pub fn size_rule(&self) -> Result<SizeRule, String> {
        let ImageSize {
            height,
            width,
            shortest_edge,
            longest_edge,
        } = self.size;
        match (height, width, shortest_edge.or(longest_edge)) {
            (Some(height), Some(width), None) => Ok(SizeRule::Exact { width, height }),
            (None, None, Some(_)) => {
                let (Some(patch), Some(merge)) = (self.patch_size, self.merge_size) else {
                    return Err(
                        "size.shortest_edge/longest_edge need patch_size and merge_size (a Qwen2-VL image processor)"
                            .to_owned(),
                    );
                };
                Ok(SizeRule::Smart {
                    factor: patch.max(1) * merge.max(1),
                    min_pixels: self.min_pixels.or(shortest_edge).unwrap_or(56 * 56),
                    max_pixels: self.max_pixels.or(longest_edge).unwrap_or(MAX_SMART_PIXELS),
                })
            }
            _ => {
                Err("size must have height and width, or shortest_edge and longest_edge".to_owned())
            }
        }
    }

    /// The same config with the most pixels a `Smart` rule may produce lowered to `max_pixels`
    /// (the operator's cap: tokens per image grow with the pixels).
    pub fn with_max_pixels(mut self, max_pixels: u64) -> Self {
        if let Ok(SizeRule::Smart {
            min_pixels,
            max_pixels: stated,
            ..
        }) = self.size_rule()
        {
            self.max_pixels = Some(stated.min(max_pixels).max(min_pixels));
        }
        self
    }

    /// `(width, height)` of the tensor the vision encoder gets for an image of this size (after
    /// orientation). With `do_resize: false` the image keeps its size.
    pub fn target_size(&self, width: u32, height: u32) -> (u32, u32) {
        if !self.do_resize {
            return (width, height);
        }
        match self.size_rule() {
            Ok(SizeRule::Exact { width, height }) => (width, height),
            Ok(SizeRule::Smart {
                factor,
                min_pixels,
                max_pixels,
            }) => smart_resize(width, height, factor, min_pixels, max_pixels),
            Err(_) => unreachable!("validated at load; this is a bug"),
        }
    }

    /// The most output pixels an image can have (the memory plan's model input).
    pub fn max_output_pixels(&self) -> u64 {
        match self.size_rule() {
            Ok(SizeRule::Exact { width, height }) => u64::from(width) * u64::from(height),
            Ok(SizeRule::Smart { max_pixels, .. }) => max_pixels,
            Err(_) => unreachable!("validated at load; this is a bug"),
        }
    }

    /// Bytes per output pixel of the model input at its peak: the resized RGB (3) and the f32
    /// tensor (12), or for a patch layout the RGB and the patches, which hold every pixel once per
    /// frame of `temporal_patch_size`.
    pub fn output_bytes_per_pixel(&self) -> u64 {
        match self.size_rule() {
            Ok(SizeRule::Smart { .. }) => {
                3 + 12 * u64::from(self.temporal_patch_size.unwrap_or(1).max(1))
            }
            _ => 15,
        }
    }

    /// `(width, height)` of a fixed-size rule (Florence-2's 768×768): the only output size.
    pub fn output_size(&self) -> (u32, u32) {
        match self.size_rule() {
            Ok(SizeRule::Exact { width, height }) => (width, height),
            _ => panic!("output_size() of a config without a fixed size; use target_size()"),
        }
    }

    /// Per-channel lookup tables from a u8 sample to its final value, with the same float
    /// arithmetic as the Python processor: rescale in f64 then cast to f32, normalise in f32.
    pub(super) fn lookup_tables(&self) -> [[f32; 256]; 3] {
        let mut tables = [[0f32; 256]; 3];
        for (c, table) in tables.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                let mut x = if self.do_rescale {
                    (v as f64 * self.rescale_factor) as f32
                } else {
                    v as f32
                };
                if self.do_normalize {
                    x = (x - self.image_mean[c]) / self.image_std[c];
                }
                *out = x;
            }
        }
        tables
    }
}

/// `image_mean` / `image_std`: one number for all channels, or a list of one or three.
fn per_channel<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f32; 3], D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(f32),
        Many(Vec<f32>),
    }
    match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => Ok([v; 3]),
        OneOrMany::Many(v) => match v.as_slice() {
            [x] => Ok([*x; 3]),
            [r, g, b] => Ok([*r, *g, *b]),
            _ => Err(serde::de::Error::custom(format!(
                "expected 1 or 3 per-channel values, got {}",
                v.len()
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLORENCE: &str = r#"{
        "do_center_crop": false, "crop_size": {"height": 768, "width": 768},
        "do_convert_rgb": null, "do_normalize": true, "do_rescale": true, "do_resize": true,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "CLIPImageProcessor",
        "image_seq_length": 577, "image_std": [0.229, 0.224, 0.225],
        "processor_class": "Florence2Processor", "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"height": 768, "width": 768},
        "task_prompts_without_inputs": {"<CAPTION>": "What does the image describe?"}
    }"#;

    #[test]
    fn parses_the_florence_config() {
        let c = PreprocessorConfig::from_json_str(FLORENCE).unwrap();
        let want = PreprocessorConfig {
            image_seq_length: Some(577),
            do_center_crop: Some(false),
            ..PreprocessorConfig::default()
        };
        assert_eq!(c, want);
        assert_eq!(c.output_size(), (768, 768));
    }

    #[test]
    fn missing_keys_take_florence_values() {
        let c = PreprocessorConfig::from_json_str("{}").unwrap();
        assert_eq!(c, PreprocessorConfig::default());
        let c = PreprocessorConfig::from_json_str(
            r#"{"size": {"height": 32, "width": 48}, "image_mean": 0.5, "image_std": [0.5]}"#,
        )
        .unwrap();
        assert_eq!(c.output_size(), (48, 32));
        assert_eq!(c.image_mean, [0.5; 3]);
        assert_eq!(c.image_std, [0.5; 3]);
    }

    #[test]
    fn refuses_bad_values() {
        for (json, needle) in [
            (r#"{"resample": 7}"#, "unsupported resample value 7"),
            (r#"{"resample": 4}"#, "BOX"),
            (r#"{"size": {"shortest_edge": 224}}"#, "shortest_edge"),
            (r#"{"size": {"height": 224}}"#, "height and width"),
            (r#"{"size": {"height": 0, "width": 768}}"#, "out of range"),
            (r#"{"image_std": [0.2, 0.0, 0.2]}"#, "image_std"),
            (r#"{"image_mean": [0.2, 0.3]}"#, "1 or 3"),
            (r#"{"do_center_crop": true}"#, "do_center_crop"),
            (r#"{"rescale_factor": -1}"#, "rescale_factor"),
            ("not json", "expected"),
        ] {
            let err = PreprocessorConfig::from_json_str(json).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, PreprocessError::InvalidConfig { .. }) && msg.contains(needle),
                "{json}: {msg}"
            );
        }
    }

    #[test]
    fn smart_resize_keeps_the_aspect_within_the_bounds() {
        // The spec's run: 96x64 scales up to the minimum (grid 1x14x20).
        assert_eq!(smart_resize(96, 64, 32, 65_536, 16_777_216), (320, 224));
        // Already multiples of 32 inside the bounds: unchanged.
        assert_eq!(smart_resize(448, 320, 32, 65_536, 262_144), (448, 320));
        // Over the cap: the largest multiples of 32 under it, the aspect kept.
        let (w, h) = smart_resize(4000, 3000, 32, 65_536, 262_144);
        assert_eq!((w % 32, h % 32), (0, 0));
        assert!(u64::from(w) * u64::from(h) <= 262_144, "{w}x{h}");
        assert_eq!((w, h), (576, 416));
        // An exact half rounds to even as in Python (transformers.js would give 96).
        assert_eq!(smart_resize(320, 80, 32, 1024, 16_777_216).1, 64);
        // A side under the factor is scaled up first.
        let (w, h) = smart_resize(600, 20, 32, 1024, 16_777_216);
        assert_eq!((w % 32, h), (0, 32));
    }

    #[test]
    fn reads_the_qwen2_vl_keys() {
        let qwen = r#"{"size": {"longest_edge": 16777216, "shortest_edge": 65536},
            "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "processor_class": "Qwen3VLProcessor"}"#;
        let c = PreprocessorConfig::from_json_str(qwen).unwrap();
        assert_eq!(
            c.size_rule().unwrap(),
            SizeRule::Smart {
                factor: 32,
                min_pixels: 65_536,
                max_pixels: 16_777_216
            }
        );
        let capped = c.clone().with_max_pixels(262_144);
        assert_eq!(capped.max_output_pixels(), 262_144);
        assert_eq!(capped.target_size(4000, 3000), (576, 416));
        // A cap below the minimum keeps the minimum.
        assert_eq!(c.with_max_pixels(10).max_output_pixels(), 65_536);
    }

    #[test]
    fn file_errors_name_the_file() {
        let path = Path::new("/nonexistent/dir/preprocessor_config.json");
        let msg = PreprocessorConfig::from_file(path).unwrap_err().to_string();
        assert!(
            msg.contains("/nonexistent/dir/preprocessor_config.json"),
            "{msg}"
        );
    }

    #[test]
    fn white_maps_to_the_spec_test_vector() {
        let t = PreprocessorConfig::default().lookup_tables();
        let white = [t[0][255], t[1][255], t[2][255]];
        for (got, want) in white.iter().zip([2.2489, 2.4286, 2.6400]) {
            assert!((got - want).abs() < 1e-4, "{white:?}");
        }
        let mean = white.iter().sum::<f32>() / 3.0;
        assert!((mean - 2.439_159_9).abs() < 1e-5, "{mean}");
    }
}

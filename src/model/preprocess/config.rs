//! `preprocessor_config.json`: the keys that drive preprocessing, validated once at load time.

use std::path::Path;

use serde::Deserialize;

use super::PreprocessError;

/// Largest accepted `size.width` / `size.height`: far above any vision encoder input, low enough
/// that a typo cannot make every request allocate gigabytes.
const MAX_TARGET_SIDE: u32 = 8192;

/// Parsed `preprocessor_config.json` (the Florence-2 `CLIPImageProcessor` keys).
///
/// Unknown keys are ignored (the three task maps in the same file are read elsewhere). A key that
/// is missing takes the Florence-2 value of the spec (section 4), which is also what
/// [`Default`] gives: 768×768, bicubic, rescale by 1/255, ImageNet mean/std.
///
/// `do_convert_rgb` is accepted but the image is always converted to RGB: the vision encoder takes
/// three channels. `do_center_crop: true` and `size: {"shortest_edge": …}` are refused (the
/// Florence-2 processor uses neither) rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PreprocessorConfig {
    /// Resize to `size` (aspect ratio not kept). When false the decoded size is kept.
    pub do_resize: bool,
    /// Target size.
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
}

/// `size` of the config: the exact output height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSize {
    pub height: u32,
    pub width: u32,
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
                height: 768,
                width: 768,
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
        let ImageSize { width, height } = self.size;
        if !(1..=MAX_TARGET_SIDE).contains(&width) || !(1..=MAX_TARGET_SIDE).contains(&height) {
            return Err(format!(
                "size {width}x{height} is out of range (each side must be 1..={MAX_TARGET_SIDE})"
            ));
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

    /// `(width, height)` of the tensor the vision encoder gets: `size`. (With `do_resize: false`
    /// the tensor keeps the decoded image's size instead; Florence-2 always resizes.)
    pub fn output_size(&self) -> (u32, u32) {
        (self.size.width, self.size.height)
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

//! Image preprocessing: comparison with the Python reference
//! (`tests/reference/preprocess_reference.py`, PIL + numpy as the Python Florence-2 processor) on
//! generated images of every supported kind, and hostile inputs; `preprocess/limits.rs` has the
//! shapes and headers that test the memory bounds, on `prepare_image` and on the real server.
//!
//! Tolerance, in 8-bit steps of the resized image (one step is 1/255/std[c], 0.0171 to 0.0175 on
//! the normalised tensor), per class of test image:
//!
//! * `Exact`: already 768×768 and losslessly stored, so no resize: the same tensor (≤ 1e-6).
//! * `Lossless` (PNG, BMP, TIFF, GIF, lossless WebP; RGB, gray, palette, 16-bit, alpha): the
//!   decoded pixels are identical and only the resizers differ (fast_image_resize keeps 16-bit
//!   coefficients where Pillow keeps 22 bits, so a value is sometimes one step off after each of
//!   the two passes): max ≤ 2 steps (≈ 0.035), mean ≤ 0.02 step (measured: about 0.005).
//! * `Lossy` (JPEG, lossy WebP): the decoders differ too (zune-jpeg / image-webp against
//!   libjpeg-turbo / libwebp: IDCT and chroma upsampling rounding): max ≤ 8 steps (≈ 0.14),
//!   mean ≤ 0.6 step (measured: up to about 6 and 0.45 on 4:2:0 JPEGs).
//!
//! The Python interpreter is the project venv (`scripts/python-env.sh`, which `make test` sets up).

use crate::common;
mod limits;

use std::io::Cursor;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use altimage::model::preprocess::{
    ImageKind, ImageLimits, PreparedImage, PreprocessError, PreprocessorConfig, prepare_image,
};

/// The Florence-2 `preprocessor_config.json` values of the spec, section 4 (inline so that the test
/// does not depend on the test model's files).
const FLORENCE2_CONFIG: &str = r#"{
  "crop_size": {"height": 768, "width": 768},
  "do_center_crop": false,
  "do_convert_rgb": null,
  "do_normalize": true,
  "do_rescale": true,
  "do_resize": true,
  "image_mean": [0.485, 0.456, 0.406],
  "image_processor_type": "CLIPImageProcessor",
  "image_seq_length": 577,
  "image_std": [0.229, 0.224, 0.225],
  "processor_class": "Florence2Processor",
  "resample": 3,
  "rescale_factor": 0.00392156862745098,
  "size": {"height": 768, "width": 768}
}"#;

fn florence2() -> PreprocessorConfig {
    PreprocessorConfig::from_json_str(FLORENCE2_CONFIG).unwrap()
}

fn prepare(bytes: &[u8]) -> Result<PreparedImage, PreprocessError> {
    prepare_image(bytes, &florence2(), &ImageLimits::default())
}

// ---------------------------------------------------------------------------------------------
// Comparison with the Python reference
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tolerance {
    Exact,
    Lossless,
    Lossy,
}

impl Tolerance {
    /// (max, mean) absolute difference in 8-bit steps.
    fn limits(self) -> (f64, f64) {
        match self {
            Tolerance::Exact => (1e-6 * 0.229 * 255.0, 1e-9),
            Tolerance::Lossless => (2.0, 0.02),
            Tolerance::Lossy => (8.0, 0.6),
        }
    }
}

struct Case {
    file: &'static str,
    kind: ImageKind,
    tolerance: Tolerance,
    /// A config other than Florence-2's (JSON), for the resample filters.
    config: Option<&'static str>,
}

const fn case(file: &'static str, kind: ImageKind, tolerance: Tolerance) -> Case {
    Case {
        file,
        kind,
        tolerance,
        config: None,
    }
}

const DOWN_200X150: &str = r#"{"size": {"height": 150, "width": 200}, "resample": RESAMPLE}"#;
const UP_500X700: &str = r#"{"size": {"height": 700, "width": 500}, "resample": RESAMPLE}"#;

fn cases() -> Vec<Case> {
    use ImageKind::*;
    use Tolerance::*;
    let mut cases = vec![
        case("rgb_1024x768.jpg", Jpeg, Lossy),
        case("rgb_500x300_444.jpg", Jpeg, Lossy),
        case("rgb_2000x1500.jpg", Jpeg, Lossy),
        case("rgb_1200x900.png", Png, Lossless),
        case("rgb_333x517.png", Png, Lossless),
        case("rgb_768x768.png", Png, Exact),
        case("rgb_2000x50.png", Png, Lossless),
        case("rgb_1x1.png", Png, Lossless),
        case("rgb_900x600_lossless.webp", Webp, Lossless),
        case("rgb_900x600_lossy.webp", Webp, Lossy),
        case("rgb_640x480.bmp", Bmp, Lossless),
        case("rgb_800x600.tiff", Tiff, Lossless),
        case("rgb_800x600_lzw.tiff", Tiff, Lossless),
        case("gray_700x500.png", Png, Lossless),
        case("gray_600x400.jpg", Jpeg, Lossy),
        case("cmyk_800x600.jpg", Jpeg, Lossy),
        case("palette_500x400.png", Png, Lossless),
        case("palette_trns_400x300.png", Png, Lossless),
        case("gray16_640x480.png", Png, Lossless),
        case("gray16_640x480.tiff", Tiff, Lossless),
        case("rgb16_640x480.png", Png, Lossless),
        case("rgb16_640x480.tiff", Tiff, Lossless),
        case("rgba16_500x400.png", Png, Lossless),
        case("rgba_900x700.png", Png, Lossless),
        case("rgba_600x400.webp", Webp, Lossless),
        case("la_300x200.png", Png, Lossless),
        case("anim_400x300.gif", Gif, Lossless),
        case("exif6_1000x700.jpg", Jpeg, Lossy),
        case("exif6_rotated_700x1000.png", Png, Lossless),
    ];
    for template in [DOWN_200X150, UP_500X700] {
        let file = if template == DOWN_200X150 {
            "rgb_1200x900.png"
        } else {
            "rgb_333x517.png"
        };
        for resample in ["0", "1", "2", "3", "5"] {
            let config: &'static str = template.replace("RESAMPLE", resample).leak();
            cases.push(Case {
                config: Some(config),
                ..case(file, ImageKind::Png, Tolerance::Lossless)
            });
        }
    }
    cases
}

/// The project venv's python, or `None` when the caller asked to skip.
fn run_python(python: &Path, args: &[&str]) -> String {
    common::command::text_of(
        Command::new(python)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        &format!("python {args:?}"),
    )
}

/// Test images PIL cannot write: 16-bit RGB and RGBA.
fn write_sixteen_bit_images(dir: &Path) {
    let rgb = image::ImageBuffer::from_fn(640, 480, |x, y| {
        let n = noise(x, y);
        image::Rgb([
            (x * 100 + n % 3000) as u16,
            (y * 130 + n % 2000) as u16,
            (((x + y) * 57) as u16) ^ (n as u16 & 0x0FFF),
        ])
    });
    let rgb = image::DynamicImage::ImageRgb16(rgb);
    rgb.save(dir.join("rgb16_640x480.png")).unwrap();
    rgb.save(dir.join("rgb16_640x480.tiff")).unwrap();
    let rgba = image::ImageBuffer::from_fn(500, 400, |x, y| {
        let n = noise(x, y);
        image::Rgba([
            (x * 120 + n % 4000) as u16,
            (y * 150) as u16,
            (n % 65536) as u16,
            (x * 131) as u16,
        ])
    });
    image::DynamicImage::ImageRgba16(rgba)
        .save(dir.join("rgba16_500x400.png"))
        .unwrap();
}

/// Deterministic per-pixel noise.
fn noise(x: u32, y: u32) -> u32 {
    let mut h = x.wrapping_mul(0x9E37_79B9) ^ y.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^ (h >> 12)
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// (max, mean) absolute difference, in normalised units and in 8-bit steps.
struct Diff {
    max: f64,
    mean: f64,
    max_steps: f64,
    mean_steps: f64,
}

fn diff(ours: &ndarray::Array3<f32>, reference: &[f32], config: &PreprocessorConfig) -> Diff {
    assert_eq!(ours.len(), reference.len(), "tensor sizes differ");
    let plane = ours.len() / 3;
    let ours = ours.as_slice().expect("standard layout");
    let (mut max, mut sum, mut max_steps, mut sum_steps) = (0f64, 0f64, 0f64, 0f64);
    for (i, (&a, &b)) in ours.iter().zip(reference).enumerate() {
        let d = f64::from((a - b).abs());
        let steps = d * f64::from(config.image_std[i / plane]) * 255.0;
        max = max.max(d);
        max_steps = max_steps.max(steps);
        sum += d;
        sum_steps += steps;
    }
    let n = ours.len() as f64;
    Diff {
        max,
        mean: sum / n,
        max_steps,
        mean_steps: sum_steps / n,
    }
}

#[test]
fn matches_python_reference() {
    let python = common::python();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    run_python(
        &python,
        &[
            "tests/reference/make_preprocess_fixtures.py",
            root.to_str().unwrap(),
        ],
    );
    write_sixteen_bit_images(root);

    let cases = cases();
    let jobs: Vec<serde_json::Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "image": root.join(c.file),
                "output": root.join(format!("ref_{i}.f32")),
                "config": serde_json::from_str::<serde_json::Value>(
                    c.config.unwrap_or(FLORENCE2_CONFIG)
                ).unwrap(),
            })
        })
        .collect();
    let jobs_path = root.join("jobs.json");
    std::fs::write(&jobs_path, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let stdout = run_python(
        &python,
        &[
            "tests/reference/preprocess_reference.py",
            "--jobs",
            jobs_path.to_str().unwrap(),
        ],
    );
    let reports: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), cases.len());

    eprintln!(
        "{:<28} {:<10} {:>10} {:>11} {:>9} {:>10} {:>5}",
        "image", "resample", "max|d|", "mean|d|", "max step", "mean step", "ok"
    );
    let mut failures = Vec::new();
    for (i, (case, report)) in cases.iter().zip(&reports).enumerate() {
        let config =
            PreprocessorConfig::from_json_str(case.config.unwrap_or(FLORENCE2_CONFIG)).unwrap();
        let bytes = std::fs::read(root.join(case.file)).unwrap();
        let ours = prepare_image(&bytes, &config, &ImageLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let reference = read_f32(&root.join(format!("ref_{i}.f32")));

        let (w, h) = config.output_size();
        assert_eq!(ours.pixel_values.shape(), &[3, h as usize, w as usize]);
        assert_eq!(report["shape"], serde_json::json!([3, h, w]));
        assert_eq!(ours.format, case.kind, "{}", case.file);
        assert_eq!(
            (ours.original_width, ours.original_height),
            (
                report["original_width"].as_u64().unwrap() as u32,
                report["original_height"].as_u64().unwrap() as u32
            ),
            "{}: oriented size",
            case.file
        );

        let d = diff(&ours.pixel_values, &reference, &config);
        let (max_steps, mean_steps) = case.tolerance.limits();
        // Steps are computed from float differences: allow for their rounding.
        let ok = d.max_steps <= max_steps + 1e-3 && d.mean_steps <= mean_steps;
        eprintln!(
            "{:<28} {:<10} {:>10.6} {:>11.8} {:>9.3} {:>10.5} {:>5}",
            case.file,
            format!("{:?}", config.resample),
            d.max,
            d.mean,
            d.max_steps,
            d.mean_steps,
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            failures.push(format!(
                "{} ({:?}, {:?}): max {:.3} steps (limit {max_steps}), mean {:.4} steps \
                 (limit {mean_steps})",
                case.file, config.resample, case.tolerance, d.max_steps, d.mean_steps
            ));
        }
    }

    // EXIF orientation: the orientation-6 JPEG gives the image PIL decodes from it, rotated.
    let exif = prepare(&std::fs::read(root.join("exif6_1000x700.jpg")).unwrap()).unwrap();
    assert_eq!((exif.original_width, exif.original_height), (700, 1000));
    let rotated_index = cases
        .iter()
        .position(|c| c.file == "exif6_rotated_700x1000.png")
        .unwrap();
    let rotated = read_f32(&root.join(format!("ref_{rotated_index}.f32")));
    let d = diff(&exif.pixel_values, &rotated, &florence2());
    eprintln!(
        "exif6 JPEG vs PIL-rotated pixels: max {:.3} steps, mean {:.5} steps",
        d.max_steps, d.mean_steps
    );
    let (max_steps, mean_steps) = Tolerance::Lossy.limits();
    assert!(d.max_steps <= max_steps + 1e-3 && d.mean_steps <= mean_steps);

    // GIF: the first frame, not a later one.
    let gif = prepare(&std::fs::read(root.join("anim_400x300.gif")).unwrap()).unwrap();
    let first = prepare(&std::fs::read(root.join("first_frame_400x300.png")).unwrap()).unwrap();
    assert_eq!(gif.pixel_values, first.pixel_values, "GIF: first frame");

    assert!(
        failures.is_empty(),
        "outside tolerance:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Behaviour without the reference
// ---------------------------------------------------------------------------------------------

fn encode(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn photo(width: u32, height: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::ImageBuffer::from_fn(width, height, |x, y| {
        let n = noise(x, y);
        image::Rgb([
            (x * 255 / width.max(1)) as u8 ^ (n & 15) as u8,
            (y * 255 / height.max(1)) as u8,
            (n >> 8) as u8,
        ])
    }))
}

fn jpeg(image: &image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(image)
        .unwrap();
    out
}

#[test]
fn white_image_gives_the_spec_test_vector() {
    let white = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
        300,
        300,
        image::Rgb([255, 255, 255]),
    ));
    for format in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
        let out = prepare(&encode(&white, format)).unwrap();
        assert_eq!(out.pixel_values.shape(), &[3, 768, 768]);
        for (c, want) in [2.2489f32, 2.4286, 2.6400].into_iter().enumerate() {
            let plane = out.pixel_values.index_axis(ndarray::Axis(0), c);
            let worst = plane.iter().map(|v| (v - want).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{format:?} channel {c}: off by {worst}");
        }
        let values = &out.pixel_values;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        eprintln!("white {format:?}: mean {mean:.6}");
        assert!((mean - 2.439_159_870_147_705).abs() < 1e-4, "{mean}");
    }
}

#[test]
fn resize_skipped_at_target_size_and_shapes_follow_config() {
    let image = photo(768, 768);
    let png = encode(&image, image::ImageFormat::Png);
    let out = prepare(&png).unwrap();
    let config = florence2();
    let lut = |c: usize, v: u8| {
        let x = (f64::from(v) * config.rescale_factor) as f32;
        (x - config.image_mean[c]) / config.image_std[c]
    };
    let raw = image.as_rgb8().unwrap();
    for (x, y) in [(0, 0), (767, 0), (13, 700), (767, 767)] {
        let px = raw.get_pixel(x, y);
        for c in 0..3 {
            assert_eq!(
                out.pixel_values[[c, y as usize, x as usize]],
                lut(c, px[c]),
                "pixel ({x}, {y}) channel {c}"
            );
        }
    }

    let config = PreprocessorConfig::from_json_str(
        r#"{"size": {"height": 100, "width": 60}, "do_normalize": false}"#,
    )
    .unwrap();
    let out = prepare_image(&png, &config, &ImageLimits::default()).unwrap();
    assert_eq!(out.pixel_values.shape(), &[3, 100, 60]);
    assert!(out.pixel_values.iter().all(|v| (0.0..=1.0).contains(v)));

    let config = PreprocessorConfig::from_json_str(r#"{"do_resize": false}"#).unwrap();
    let out = prepare_image(
        &encode(&photo(50, 20), image::ImageFormat::Bmp),
        &config,
        &ImageLimits::default(),
    )
    .unwrap();
    assert_eq!(out.pixel_values.shape(), &[3, 20, 50]);
    assert_eq!(out.format, ImageKind::Bmp);
}

#[test]
fn format_comes_from_the_bytes() {
    let image = photo(40, 30);
    for (format, kind) in [
        (image::ImageFormat::Png, ImageKind::Png),
        (image::ImageFormat::Jpeg, ImageKind::Jpeg),
        (image::ImageFormat::Gif, ImageKind::Gif),
        (image::ImageFormat::Bmp, ImageKind::Bmp),
        (image::ImageFormat::Tiff, ImageKind::Tiff),
        (image::ImageFormat::WebP, ImageKind::Webp),
    ] {
        let out = prepare(&encode(&image, format)).unwrap();
        assert_eq!(out.format, kind);
        assert_eq!((out.original_width, out.original_height), (40, 30));
        assert_eq!(kind.as_str(), kind.to_string());
    }
}

/// Error variant of `prepare`, and that it came quickly.
fn refused(bytes: &[u8]) -> PreprocessError {
    let start = Instant::now();
    let err = match prepare(bytes) {
        Ok(_) => panic!("accepted a hostile input of {} bytes", bytes.len()),
        Err(e) => e,
    };
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(2), "{err}: took {elapsed:?}");
    let msg = err.to_string();
    assert!(
        msg.len() < 400 && msg.chars().all(|c| c.is_ascii_graphic() || c == ' '),
        "message not short printable text: {msg:?}"
    );
    assert!(err.is_client_error(), "{err}");
    eprintln!("{:>7} bytes -> {}: {msg}", bytes.len(), err.code());
    err
}

/// A real small PNG whose IHDR claims `width`×`height`.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = encode(&photo(16, 16), image::ImageFormat::Png);
    // Signature (8), length (4), "IHDR" at 12..16, data 16..29, CRC 29..33.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = common::crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// A real small JPEG whose frame header claims `width`×`height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut data = jpeg(&photo(16, 16));
    let sof = data
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .unwrap();
    // FF C0, length (2), precision (1), height (2), width (2).
    data[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    data[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    data
}

/// A hand-made baseline TIFF of a few hundred bytes claiming `width`×`height` 8-bit gray.
fn tiff_claiming(width: u32, height: u32) -> Vec<u8> {
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, width),  // ImageWidth, LONG
        (257, 4, height), // ImageLength
        (258, 3, 8),      // BitsPerSample, SHORT
        (259, 3, 1),      // Compression: none
        (262, 3, 1),      // Photometric: BlackIsZero
        (273, 4, 200),    // StripOffsets
        (277, 3, 1),      // SamplesPerPixel
        (278, 4, height), // RowsPerStrip
        (279, 4, 64),     // StripByteCounts
    ];
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, value) in entries {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&typ.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        if typ == 3 {
            t.extend_from_slice(&(value as u16).to_le_bytes());
            t.extend_from_slice(&[0, 0]);
        } else {
            t.extend_from_slice(&value.to_le_bytes());
        }
    }
    t.extend_from_slice(&0u32.to_le_bytes());
    t.resize(264, 0x80);
    t
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    let bombs: Vec<(&str, Vec<u8>, (u32, u32))> = vec![
        ("png", png_claiming(30_000, 30_000), (30_000, 30_000)),
        ("png", png_claiming(1_000_000, 100), (1_000_000, 100)),
        ("jpeg", jpeg_claiming(65_000, 65_000), (65_000, 65_000)),
        ("tiff", tiff_claiming(100_000, 100_000), (100_000, 100_000)),
        (
            "gif",
            {
                let mut g = encode(&photo(8, 8), image::ImageFormat::Gif);
                g[6..8].copy_from_slice(&65_535u16.to_le_bytes());
                g[8..10].copy_from_slice(&65_535u16.to_le_bytes());
                g
            },
            (65_535, 65_535),
        ),
        (
            "bmp",
            {
                let mut b = encode(&photo(8, 8), image::ImageFormat::Bmp);
                b[18..22].copy_from_slice(&50_000i32.to_le_bytes());
                b[22..26].copy_from_slice(&50_000i32.to_le_bytes());
                b
            },
            (50_000, 50_000),
        ),
    ];
    for (name, bytes, (width, height)) in bombs {
        assert!(bytes.len() < 4096, "{name} bomb is {} bytes", bytes.len());
        match refused(&bytes) {
            PreprocessError::TooManyPixels {
                width: w,
                height: h,
                limit,
            } => {
                assert_eq!((w, h), (width, height), "{name}");
                assert_eq!(limit, ImageLimits::default().max_pixels);
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn lying_headers_within_the_limit_fail_to_decode() {
    // 5000×5000 is allowed, but the data is that of a 16×16 image.
    for bytes in [png_claiming(5000, 5000), tiff_claiming(5000, 5000)] {
        assert!(matches!(refused(&bytes), PreprocessError::Decode(_)));
    }
    // A JPEG's missing scan data is caught by the end-marker check or the decoder.
    let mut j = jpeg_claiming(4000, 4000);
    j.truncate(j.len() / 2);
    assert!(matches!(refused(&j), PreprocessError::Decode(_)));
}

#[test]
fn custom_pixel_limit() {
    let png = encode(&photo(100, 100), image::ImageFormat::Png);
    let limits = ImageLimits { max_pixels: 9_999 };
    match prepare_image(&png, &florence2(), &limits) {
        Err(PreprocessError::TooManyPixels {
            width: 100,
            height: 100,
            limit: 9_999,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(prepare_image(&png, &florence2(), &ImageLimits { max_pixels: 10_000 }).is_ok());
}

#[test]
fn hostile_inputs_get_the_right_error() {
    assert!(matches!(refused(b""), PreprocessError::Empty));
    assert!(matches!(
        refused(b"Hello, this is a text file.\nNot an image.\n"),
        PreprocessError::UnsupportedFormat
    ));
    assert!(matches!(
        refused(br#"<svg xmlns="http://www.w3.org/2000/svg"/>"#),
        PreprocessError::UnsupportedFormat
    ));
    assert!(matches!(
        refused(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"),
        PreprocessError::UnsupportedFormat
    ));
    let random: Vec<u8> = (0..10_000u32)
        .map(|i| (noise(i, 7) >> 3) as u8 | 1)
        .collect();
    assert!(matches!(
        refused(&random),
        PreprocessError::UnsupportedFormat
    ));

    // Right magic, garbage after it.
    for magic in [
        &b"\x89PNG\r\n\x1a\n"[..],
        b"\xFF\xD8\xFF",
        b"GIF89a",
        b"BM",
        b"II*\0",
    ] {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&random[..2000]);
        // GIF and BMP take their size (or header kind) from the garbage.
        assert!(matches!(
            refused(&bytes),
            PreprocessError::Decode(_)
                | PreprocessError::TooManyPixels { .. }
                | PreprocessError::AspectRatioUnsupported { .. }
                | PreprocessError::MemoryLimit
                | PreprocessError::UnsupportedFeature(_)
        ));
    }

    // Truncated files.
    let image = photo(300, 200);
    let jpeg = jpeg(&image);
    for cut in [3, 10, 200, jpeg.len() / 2, jpeg.len() - 2] {
        assert!(
            matches!(refused(&jpeg[..cut]), PreprocessError::Decode(_)),
            "JPEG cut at {cut}"
        );
    }
    let png = encode(&image, image::ImageFormat::Png);
    for cut in [8, 20, 40, png.len() / 2, png.len() - 12] {
        assert!(
            matches!(refused(&png[..cut]), PreprocessError::Decode(_)),
            "PNG cut at {cut}"
        );
    }
}

/// No input built by truncating or corrupting valid files makes `prepare_image` panic.
#[test]
fn corrupted_files_never_panic() {
    let image = photo(64, 48);
    let files = [
        jpeg(&image),
        encode(&image, image::ImageFormat::Png),
        encode(&image, image::ImageFormat::Gif),
        encode(&image, image::ImageFormat::Bmp),
        encode(&image, image::ImageFormat::Tiff),
        encode(&image, image::ImageFormat::WebP),
    ];
    let mut outcomes = [0usize; 2];
    for (f, file) in files.iter().enumerate() {
        for step in 1..60u32 {
            let cut = file.len() * step as usize / 60;
            outcomes[usize::from(prepare(&file[..cut]).is_ok())] += 1;
            let mut flipped = file.clone();
            for k in 0..4 {
                let at = noise(step, f as u32 * 4 + k) as usize % flipped.len();
                flipped[at] ^= (noise(k, step) | 1) as u8;
            }
            outcomes[usize::from(prepare(&flipped).is_ok())] += 1;
        }
    }
    eprintln!(
        "corrupted inputs: {} refused, {} decoded anyway",
        outcomes[0], outcomes[1]
    );
}

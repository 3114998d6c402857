//! Shapes and headers that used to abort or bloat the process: extreme aspect ratios (refused
//! from the header), near-limit images within the ratio (accepted), WebP sizes image-webp
//! misreads, images the memory budget cannot hold, and the real server's peak memory on all of
//! them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use altimage::model::preprocess::{
    ImageLimits, MAX_ASPECT_RATIO, PreprocessError, PreprocessorConfig,
};
use image::ImageEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};

use super::common::server::{Server, post_png};
use super::{png_claiming, prepare};

/// Valid PNGs the hostile-input run found to abort (1×40,000,000: a 92 GB resize intermediate)
/// or to take gigabytes (coefficient tables proportional to the long side). All are within the
/// default pixel limit.
const REFUSED: [(u32, u32); 4] = [
    (1, 40_000_000),
    (40_000_000, 1),
    (4, 1_000_000),
    (16, 400_000),
];
/// The most elongated shapes the default limits accept: 200:1 exactly, 39,961,800 pixels.
const ACCEPTED: [(u32, u32); 2] = [(447, 89_400), (89_400, 447)];

/// A generated PNG, shared between the tests of this binary.
type Png = Arc<Vec<u8>>;

/// A real RGB PNG of that shape with a gradient, at best compression (tens of KB), made once per
/// test binary.
fn png_of_shape(width: u32, height: u32) -> Png {
    static MADE: OnceLock<Mutex<HashMap<(u32, u32), Png>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    if let Some(png) = made.lock().unwrap().get(&(width, height)) {
        return png.clone();
    }
    let (w, h) = (width as usize, height as usize);
    let mut raw = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            raw.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Sub)
        .write_image(&raw, width, height, image::ExtendedColorType::Rgb8)
        .unwrap();
    let png = Arc::new(png);
    made.lock().unwrap().insert((width, height), png.clone());
    png
}

#[test]
fn extreme_aspect_ratios_are_refused_from_the_header() {
    for (w, h) in REFUSED {
        let png = png_of_shape(w, h);
        let err = prepare(&png).unwrap_err();
        eprintln!("{w}x{h} ({} bytes): {}: {err}", png.len(), err.code());
        match &err {
            PreprocessError::AspectRatioUnsupported { width, height } => {
                assert_eq!((*width, *height), (w, h))
            }
            other => panic!("{w}x{h}: {other:?}"),
        }
        assert_eq!(err.code(), "image_aspect_ratio_unsupported");
        assert!(err.is_client_error());
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{w}x{h}")) && msg.contains("crop"),
            "{msg}"
        );
        // The same header over 16×16 pixels of data gets the same answer, not a decode error:
        // nothing was decoded.
        assert!(matches!(
            prepare(&png_claiming(w, h)),
            Err(PreprocessError::AspectRatioUnsupported { .. })
        ));
    }
    assert_eq!(MAX_ASPECT_RATIO, 200);
    for (w, h, accepted) in [
        (2, 400, true),
        (400, 2, true),
        (1, 200, true),
        (2, 402, false),
        (1, 201, false),
        (201, 1, false),
    ] {
        let result = prepare(&png_of_shape(w, h));
        assert_eq!(result.is_ok(), accepted, "{w}x{h}: {:?}", result.err());
    }
}

#[test]
fn near_limit_shapes_within_the_ratio_are_accepted() {
    for (w, h) in ACCEPTED {
        let out = prepare(&png_of_shape(w, h)).unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
        assert_eq!(out.pixel_values.shape(), &[3, 768, 768]);
        assert_eq!((out.original_width, out.original_height), (w, h));
    }
}

/// A RIFF/WEBP file of one chunk.
fn webp(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(12 + payload.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A lossless WebP header for `width`×`height` (each 1..=16384: 14 bits of `side - 1`).
fn vp8l(width: u32, height: u32) -> Vec<u8> {
    let bits = (width - 1) | ((height - 1) << 14);
    let mut payload = vec![0x2F];
    payload.extend_from_slice(&bits.to_le_bytes());
    payload.extend_from_slice(&[0; 16]);
    webp(b"VP8L", &payload)
}

#[test]
fn webp_sizes_come_from_the_header() {
    let mut vp8x = vec![0; 10];
    vp8x[4..7].copy_from_slice(&16383u32.to_le_bytes()[..3]);
    vp8x[7..10].copy_from_slice(&16383u32.to_le_bytes()[..3]);
    for bytes in [vp8l(16384, 16384), webp(b"VP8X", &vp8x)] {
        match prepare(&bytes) {
            Err(PreprocessError::TooManyPixels {
                width: 16384,
                height: 16384,
                limit,
            }) => assert_eq!(limit, ImageLimits::default().max_pixels),
            other => panic!("{other:?}"),
        }
    }
    // Within the limits, image-webp 0.2.4 reads a lossless side of 16384 as 0: say so.
    match prepare(&vp8l(16384, 100)) {
        Err(PreprocessError::UnsupportedFeature(msg)) => {
            assert!(
                msg.contains("16384x100") && msg.contains("16384 pixels"),
                "{msg}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        prepare(&vp8l(16383, 100)),
        Err(PreprocessError::Decode(_))
    ));
}

/// A hand-made uncompressed RGBA 16-bit TIFF claiming `width`×`height`, with 64 bytes of data.
fn tiff_rgba16_claiming(width: u32, height: u32) -> Vec<u8> {
    let entries: [(u16, u16, u32, u32); 10] = [
        (256, 4, 1, width),  // ImageWidth, LONG
        (257, 4, 1, height), // ImageLength
        (258, 3, 4, 134),    // BitsPerSample: 4 SHORTs at offset 134
        (259, 3, 1, 1),      // Compression: none
        (262, 3, 1, 2),      // Photometric: RGB
        (273, 4, 1, 200),    // StripOffsets
        (277, 3, 1, 4),      // SamplesPerPixel
        (278, 4, 1, height), // RowsPerStrip
        (279, 4, 1, 64),     // StripByteCounts
        (338, 3, 1, 2),      // ExtraSamples: unassociated alpha
    ];
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, count, value) in entries {
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&typ.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        if typ == 3 && count == 1 {
            t.extend_from_slice(&(value as u16).to_le_bytes());
            t.extend_from_slice(&[0, 0]);
        } else {
            t.extend_from_slice(&value.to_le_bytes());
        }
    }
    t.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(t.len(), 134);
    for _ in 0..4 {
        t.extend_from_slice(&16u16.to_le_bytes());
    }
    t.resize(264, 0x80);
    t
}

#[test]
fn images_beyond_the_memory_budget_are_refused_before_decoding() {
    // A 16-bit RGBA TIFF needs 16 bytes a pixel (the tiff crate's buffer and the output): 36 MP
    // do not fit the budget of 40 MP × 12 bytes, 30 MP do (and then fail on the missing data).
    match prepare(&tiff_rgba16_claiming(6000, 6000)) {
        Err(PreprocessError::MemoryLimit) => {}
        other => panic!("{other:?}"),
    }
    match prepare(&tiff_rgba16_claiming(6000, 5000)) {
        Err(PreprocessError::Decode(_)) => {}
        other => panic!("{other:?}"),
    }
}

/// A field of /proc/<pid>/status in bytes: `VmHWM` (peak resident memory) or `VmRSS`.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb * 1024
}

/// Resets the process's peak resident memory to its current one (Linux ≥ 4.0), so that each
/// image's own peak can be read; false where the kernel does not allow it.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// What the server holds besides preparing the image, above its idle peak: the request body,
/// HTTP buffers, one inference of the tiny model (its warm-up, at the maximum batch size, is in
/// the baseline already).
const SERVING_SLACK_BYTES: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn extreme_shapes_keep_the_server_alive_and_within_its_memory_bound() {
    let shapes: Vec<((u32, u32), Png)> = REFUSED
        .iter()
        .chain(&ACCEPTED)
        .map(|&(w, h)| ((w, h), png_of_shape(w, h)))
        .collect();
    let server = Server::start(&[]);
    let pid = server.pid();
    let config = PreprocessorConfig::from_file(
        &super::common::tiny_model_dir().join("preprocessor_config.json"),
    )
    .unwrap();
    let largest = shapes
        .iter()
        .map(|(_, png)| png.len() as u64)
        .max()
        .unwrap();
    let image_bound = ImageLimits::default().worst_case_bytes(&config, largest);
    let bound = image_bound + SERVING_SLACK_BYTES;
    let mb = |b: u64| b as f64 / 1e6;
    let baseline = proc_status_bytes(pid, "VmHWM");
    eprintln!(
        "idle: VmHWM {:.1} MB, VmRSS {:.1} MB; bound per image {:.1} MB (worst case {:.1} MB + \
         {:.1} MB serving slack)",
        mb(baseline),
        mb(proc_status_bytes(pid, "VmRSS")),
        mb(bound),
        mb(image_bound),
        mb(SERVING_SLACK_BYTES)
    );
    let client = server.client();
    for ((w, h), png) in &shapes {
        // Each image's peak above the memory resident just before it, where the kernel can reset
        // the peak; otherwise above the idle peak, which only over-counts the earlier images.
        let before = if reset_peak(pid) {
            proc_status_bytes(pid, "VmRSS")
        } else {
            baseline
        };
        let response = post_png(&client, server.url("/v1/descriptions"), png.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{w}x{h}: {e}\n{}", server.log()));
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        if REFUSED.contains(&(*w, *h)) {
            assert_eq!(
                status,
                reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                "{w}x{h}: {body}"
            );
            let error = &body["error"];
            assert_eq!(error["code"], "image_aspect_ratio_unsupported", "{body}");
            assert!(error["type"].is_string(), "{body}");
            assert!(
                error["message"].as_str().unwrap().contains("crop"),
                "{body}"
            );
        } else {
            assert_eq!(status, reqwest::StatusCode::CREATED, "{w}x{h}: {body}");
        }
        let peak = proc_status_bytes(pid, "VmHWM");
        let above = peak.saturating_sub(before);
        eprintln!(
            "{w}x{h} ({} bytes): {status}, peak VmHWM {:.1} MB, {:.1} MB above the {:.1} MB before",
            png.len(),
            mb(peak),
            mb(above),
            mb(before)
        );
        assert!(
            above <= bound,
            "{w}x{h}: {:.1} MB > {:.1} MB",
            mb(above),
            mb(bound)
        );
    }

    let live = super::common::server::http_client()
        .get(server.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), reqwest::StatusCode::OK);
}

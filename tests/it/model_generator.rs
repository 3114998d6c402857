//! The committed tiny model is exactly what the generator writes with its fixed seed, so anyone
//! can rebuild it and nobody can change it silently.

use crate::common;

#[test]
fn generator_reproduces_the_committed_tiny_model_byte_for_byte() {
    common::command::stdout_of(
        std::process::Command::new(common::python())
            .arg(common::root().join("models/tools/make_florence2.py"))
            .args(["--preset", "tiny", "--check"])
            .arg(common::tiny_model_dir()),
        "make_florence2.py --check (models/tiny-florence2 differs from a fresh build)",
    );
}

#[test]
fn generator_reproduces_the_committed_tiny_qwen3_5_model_byte_for_byte() {
    let python = common::python();
    let dir = common::root().join("models/tiny-qwen3_5");
    let out = std::process::Command::new(python)
        .arg(common::root().join("models/tools/make_qwen3_5.py"))
        .args(["--preset", "tiny", "--check"])
        .arg(&dir)
        .output()
        .expect("run make_qwen3_5.py");
    assert!(
        out.status.success(),
        "models/tiny-qwen3_5 differs from a fresh build:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

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

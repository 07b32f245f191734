//! Sets `cfg(fibquant_model)` when the evaluation model is on disk (`FIBQUANT_MODEL`, or
//! `<repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf`, where `fibquant-eval fetch-model` puts it),
//! so that the tests that need it are reported as ignored, not passed, when it is absent.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fibquant_model)");
    println!("cargo::rerun-if-env-changed=FIBQUANT_MODEL");
    let path = std::env::var_os("FIBQUANT_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default())
                .join("..")
                .join("models")
                .join("SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    // A missing file makes cargo run this script again on every build, so fetching the model
    // later is seen.
    println!("cargo::rerun-if-changed={}", path.display());
    if path.is_file() {
        println!("cargo::rustc-cfg=fibquant_model");
    }
}

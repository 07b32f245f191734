//! Default locations of the model and the evaluation text.

use std::path::{Path, PathBuf};

/// File name of the default model.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The repository root: the nearest ancestor of the current directory holding
/// `data/persuasion.txt`, else the parent of this crate's source directory (when it still exists),
/// else the current directory.
pub fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if let Some(dir) = cwd
        .ancestors()
        .find(|d| d.join("data").join("persuasion.txt").is_file())
    {
        return dir.to_path_buf();
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if built.join("data").join("persuasion.txt").is_file() {
        return built;
    }
    cwd
}

/// `<repo root>/models`, where `fetch-model` puts the model.
pub fn default_model_dir() -> PathBuf {
    repo_root().join("models")
}

/// `<repo root>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
pub fn default_model_path() -> PathBuf {
    default_model_dir().join(MODEL_FILE)
}

/// `<repo root>/data/persuasion.txt`.
pub fn default_text_path() -> PathBuf {
    repo_root().join("data").join("persuasion.txt")
}

/// The model file for tests: `$FIBQUANT_MODEL` or [`default_model_path`]. When it is absent,
/// prints why the caller skips (and how to fetch the model) and returns `None`.
pub fn model_for_tests() -> Option<PathBuf> {
    let path: PathBuf = std::env::var_os("FIBQUANT_MODEL")
        .map(Into::into)
        .unwrap_or_else(default_model_path);
    if path.is_file() {
        return Some(path);
    }
    eprintln!(
        "SKIPPED: model {} not found; run `fibquant-eval fetch-model` (or set FIBQUANT_MODEL)",
        path.display()
    );
    None
}

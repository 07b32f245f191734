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

//! Every seed (`corpus/<target>/*`) and every input that ever made a target panic
//! (`regressions/<target>/*`, listed with what each found in `regressions/README.md`) runs
//! through its target without a panic.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, target) in fibquant_fuzz::TARGETS {
        for path in files(&root().join(kind).join(name)) {
            let bytes = std::fs::read(&path).expect("readable input");
            count += 1;
            if panic::catch_unwind(AssertUnwindSafe(|| target(&bytes))).is_err() {
                failures.push(format!("{name}: {}", path.display()));
            }
        }
    }
    (count, failures)
}

#[test]
fn every_target_has_seeds() {
    for (name, _) in fibquant_fuzz::TARGETS {
        let n = files(&root().join("corpus").join(name)).len();
        assert!(n > 0, "corpus/{name} is empty");
    }
}

#[test]
fn seeds_do_not_panic() {
    let (count, failures) = replay("corpus");
    assert!(count > 0);
    assert!(
        failures.is_empty(),
        "seeds that panic:\n{}",
        failures.join("\n")
    );
}

#[test]
fn regressions_do_not_panic() {
    let (count, failures) = replay("regressions");
    assert!(count > 0);
    assert!(
        failures.is_empty(),
        "regression inputs that panic:\n{}",
        failures.join("\n")
    );
}

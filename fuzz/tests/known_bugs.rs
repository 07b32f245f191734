//! The inputs in `known/<target>/` reproduce bugs of the code under test that are not fixed
//! yet (each is described in `known/README.md`); the targets steer around them unless
//! [`fibquant_fuzz::reach_known_bugs`] is on. This test checks they still panic, so that a fix
//! is noticed: when one of them stops panicking, move it to `regressions/<target>/` (and its
//! entry to `regressions/README.md`) and delete the guard in `src/lib.rs` that names it.
//! (A separate test binary: the switch is process-wide.)

use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;

#[test]
fn known_bugs_still_reproduce() {
    fibquant_fuzz::reach_known_bugs(true);
    panic::set_hook(Box::new(|_| {}));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("known");
    let mut fixed = Vec::new();
    let mut count = 0;
    for (name, target) in fibquant_fuzz::TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.is_file()) {
            let bytes = std::fs::read(&path).expect("readable input");
            count += 1;
            if panic::catch_unwind(AssertUnwindSafe(|| target(&bytes))).is_ok() {
                fixed.push(format!("{name}: {}", path.display()));
            }
        }
    }
    let _ = panic::take_hook();
    assert!(
        fixed.is_empty(),
        "known bugs that no longer reproduce (fixed? move them to regressions/ and drop their \
         guard in src/lib.rs):\n{}",
        fixed.join("\n")
    );
    eprintln!("{count} known, unfixed bug inputs still reproduce");
}

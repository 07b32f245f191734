//! The runtime's layers import in one direction only: each module of `src/` uses only itself and
//! the layers listed before it in [`LAYERS`] (test code excepted: a search's tests may load a
//! registry codebook). This test reads the sources and fails on any import against that order,
//! so a cycle cannot come back unnoticed.

use std::collections::HashMap;
use std::path::Path;

/// The layers in pipeline order; a layer may use the ones before it. `error` and `util` are the
/// foundation every layer may use.
const LAYERS: [&[&str]; 8] = [
    &["error", "util"],
    &["kernels"],
    &["search"],
    &["codebook"],
    &["registry"],
    &["codec"],
    &["attention"],
    &["cache"],
];

fn rank_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Non-test code of a source file: comment lines dropped, everything from a `#[cfg(test)]`
/// module on cut, and trailing `//` comments removed.
fn code_of(source: &str) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let next = lines.get(i + 1).map_or("", |l| l.trim_start());
        if t.starts_with("#[cfg(test)]")
            && (next.starts_with("mod ") || next.starts_with("pub mod "))
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" //").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The crate-root names (`crate::X`) each root re-export stands for: `X` -> its module. A
/// re-export starts a line with `pub use ` and may continue over lines (rustfmt breaks long
/// brace groups) up to its `;`.
fn root_reexports(lib: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let mut lines = lib.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("pub use ") {
            continue;
        }
        let mut statement = line.to_string();
        while !statement.contains(';') {
            match lines.next() {
                Some(more) => statement.push_str(more),
                None => break,
            }
        }
        let path: String = statement["pub use ".len()..]
            .split(';')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let module = path.split("::").next().unwrap_or("").to_string();
        let tail = path.rsplit("::").next().unwrap_or("");
        let tail = path
            .find('{')
            .map_or(tail, |b| path[b + 1..].trim_end_matches('}'));
        for name in tail.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            names.insert(name.to_string(), module.clone());
        }
    }
    names
}

/// Every import against the layer order in `code` of module `module`: `(target, reason)`.
fn violations(module: &str, code: &str, reexports: &HashMap<String, String>) -> Vec<String> {
    let Some(own) = rank_of(module) else {
        return vec![format!("module `{module}` is in no layer")];
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let first: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
            .collect();
        let names: Vec<String> = if first == "{" || first.starts_with('{') {
            let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
            group
                .split(',')
                .map(|p| p.trim().split("::").next().unwrap_or("").to_string())
                .filter(|p| !p.is_empty())
                .collect()
        } else {
            vec![first]
        };
        for name in names {
            let target = reexports.get(&name).cloned().unwrap_or(name.clone());
            match rank_of(&target) {
                Some(r) if r <= own => {}
                Some(_) => found.push(format!(
                    "`{module}` uses `crate::{name}` (layer `{target}`)"
                )),
                None => found.push(format!("`{module}` uses `crate::{name}`, in no layer")),
            }
        }
    }
    found
}

#[test]
fn every_layer_imports_only_from_the_layers_before_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let reexports = root_reexports(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in files {
        let relative = path.strip_prefix(&src).unwrap();
        let name = relative.file_stem().unwrap().to_str().unwrap();
        // The crate root, test-only files and test support are not layers.
        if relative == Path::new("lib.rs") || name == "tests" || name == "test_support" {
            continue;
        }
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs");
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        for v in violations(module, &code, &reexports) {
            problems.push(format!("{}: {v}", relative.display()));
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} source files found");
    assert!(
        problems.is_empty(),
        "imports against the layer order:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_finds_an_upward_import() {
    let reexports = root_reexports(
        "pub use codec::{Codec, CodecConfig};\npub use cache::{\n    CachePolicy,\n    KvCache,\n};",
    );
    assert_eq!(reexports.get("KvCache").map(String::as_str), Some("cache"));
    assert_eq!(
        reexports.get("CachePolicy").map(String::as_str),
        Some("cache")
    );
    let code = code_of(
        "use crate::util::rng;\n/// [`crate::Codec`] in a doc comment is fine.\nuse crate::{kernels, Codec};\n#[cfg(test)]\nmod tests {\n    use crate::cache::KvCache;\n}\n",
    );
    let found = violations("search", &code, &reexports);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("crate::Codec"), "{found:?}");
    assert_eq!(violations("cache", &code, &reexports), Vec::<String>::new());
    assert!(!violations("util", "let x = crate::kernels::detect();", &reexports).is_empty());
}

//! `docs/architecture.md` checked against the code: every crate's module table names exactly
//! the modules its `lib.rs` declares, and the public surface of `Store` and the sessions it
//! lists is the one the code has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The backticked names in the first column of the table under `heading`.
fn table_modules(doc: &str, heading: &str) -> BTreeSet<String> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("architecture.md has no {heading:?}"));
    let mut out = BTreeSet::new();
    let mut in_table = false;
    for line in doc[start..].lines().skip(1) {
        if line.starts_with("## ") {
            break;
        }
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let first = line.split('|').nth(1).unwrap_or("");
        for part in first.split(',') {
            let name = part.trim().trim_matches('`');
            if !name.is_empty() && name != "module" && !name.starts_with('-') {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// The modules `lib` declares (`mod x;` and `pub mod x;`).
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.strip_suffix(';')?.to_string())
        })
        .collect()
}

#[test]
fn every_crates_module_table_matches_its_modules() {
    let doc = read("docs/architecture.md");
    for (krate, dir) in [
        ("cairn-store", "store"),
        ("cairn-remote", "remote"),
        ("cairn-oci", "oci"),
        ("cairn-serve", "serve"),
    ] {
        let documented = table_modules(&doc, &format!("## Modules of `{krate}`"));
        let declared = declared_modules(&read(&format!("{dir}/src/lib.rs")));
        assert_eq!(
            documented, declared,
            "docs/architecture.md's table of {krate} (left) vs {dir}/src/lib.rs (right)"
        );
    }
}

/// Names of the `pub fn`s in `impl TYPE {` blocks (not trait impls) of every file under `dir`.
fn public_methods(dir: &Path, ty: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let mut inside = false;
            for line in text.lines() {
                if line == format!("impl {ty} {{") {
                    inside = true;
                } else if inside && line == "}" {
                    inside = false;
                } else if inside && let Some(rest) = line.strip_prefix("    pub fn ") {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// The backticked names after `marker` up to the end of its sentence.
fn listed_after(doc: &str, marker: &str) -> BTreeSet<String> {
    let start = doc
        .find(marker)
        .unwrap_or_else(|| panic!("architecture.md has no {marker:?}"))
        + marker.len();
    let rest = &doc[start..];
    let end = [");", ").", ". "]
        .iter()
        .filter_map(|e| rest.find(e))
        .min()
        .unwrap_or(rest.len());
    rest[..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn the_documented_public_surface_is_the_codes() {
    let doc = read("docs/architecture.md");
    let src = repo().join("store/src");
    let store = public_methods(&src, "Store");
    let count = format!("`Store` has {} public methods:", store.len());
    assert!(
        doc.contains(&count),
        "architecture.md does not say {count:?} (the code has {store:?})"
    );
    assert_eq!(listed_after(&doc, &count), store, "Store's methods");
    assert!(
        store.len() <= 20,
        "Store has {} public methods",
        store.len()
    );
    assert_eq!(
        listed_after(
            &doc,
            "Everything that reads what a key names is on `ReadSession` ("
        ),
        public_methods(&src, "ReadSession"),
        "ReadSession's methods"
    );
    assert_eq!(
        listed_after(&doc, "staging and committing is on `ImportSession` ("),
        public_methods(&src, "ImportSession"),
        "ImportSession's methods"
    );
}

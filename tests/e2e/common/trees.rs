//! Trees for tests: a replayable PRNG, generated trees held as models, and comparisons of a
//! restored folder with its source or model.

use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Helpers for the concurrency and crash tests.

/// A small deterministic PRNG (xorshift64*), so that a failing randomized run can be replayed
/// from the seed it printed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The seed of a randomized test: `CAIRN_TEST_SEED` if set, else taken from the clock. It is
/// printed (shown when the test fails) so that the run can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("CAIRN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (CAIRN_TEST_SEED={seed} replays it)");
    seed
}

/// One entry of a [`TreeModel`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// Content and whether it is executable.
    File(Vec<u8>, bool),
    Symlink(String),
}

/// A tree held in memory: `/`-separated relative path -> entry, parents before children.
pub type TreeModel = std::collections::BTreeMap<String, Node>;

/// The tree [`gen_tree`] writes: `small` small files spread over folders, an executable, a
/// symlink, an empty folder, and one file of `n` bytes per entry of `big` (pseudo-random, so
/// incompressible, for even entries; compressible text for odd ones). Every eighth small file
/// and the big files depend on `tag`; the other small files are the same for every tag, so
/// trees made with different tags share most of their blobs (and differ in the same paths).
pub fn tree_model(tag: &str, small: usize, big: &[usize]) -> TreeModel {
    const DIRS: usize = 40;
    let mut m = TreeModel::new();
    for d in 0..DIRS.min(small.max(1)) {
        m.insert(format!("d{d:02}"), Node::Dir);
    }
    for i in 0..small {
        let line = if i % 8 == 0 {
            format!("{tag} file {i}\n")
        } else {
            format!("file {i}\n")
        };
        m.insert(
            format!("d{:02}/f{i}.txt", i % DIRS),
            Node::File(line.repeat(i % 7 + 1).into_bytes(), false),
        );
    }
    m.insert("bin".into(), Node::Dir);
    m.insert(
        "bin/run.sh".into(),
        Node::File(format!("#!/bin/sh\necho {tag}\n").into_bytes(), true),
    );
    m.insert("d00/link".into(), Node::Symlink("../bin/run.sh".into()));
    m.insert("empty".into(), Node::Dir);
    let mut rng = Rng::new(tag.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    }));
    for (j, &n) in big.iter().enumerate() {
        let mut data = vec![0u8; n];
        if j % 2 == 0 {
            rng.fill(&mut data);
        } else {
            let text = format!("{tag} line of compressible text {j}\n").repeat(n / 30 + 1);
            data.copy_from_slice(&text.as_bytes()[..n]);
        }
        m.insert(format!("big{j}.bin"), Node::File(data, false));
    }
    m
}

fn write_node(root: &Path, rel: &str, node: &Node) {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(rel);
    match node {
        Node::Dir => std::fs::create_dir_all(&p).unwrap(),
        Node::File(data, exec) => {
            std::fs::write(&p, data).unwrap();
            let mode = if *exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Symlink(target) => {
            let _ = std::fs::remove_file(&p);
            std::os::unix::fs::symlink(target, &p).unwrap();
        }
    }
}

/// Writes `model` under `root`.
pub fn write_model(root: &Path, model: &TreeModel) {
    std::fs::create_dir_all(root).unwrap();
    for (rel, node) in model {
        write_node(root, rel, node);
    }
}

/// Turns the tree `old` written under `root` into `new` (same paths, as [`tree_model`] makes
/// for different tags), rewriting only the entries that differ.
pub fn rewrite_model(root: &Path, old: &TreeModel, new: &TreeModel) {
    assert!(old.keys().eq(new.keys()), "models with different paths");
    for (rel, node) in new {
        if old.get(rel) != Some(node) {
            write_node(root, rel, node);
        }
    }
}

/// Writes [`tree_model`]`(tag, small, big)` under `root`.
pub fn gen_tree(root: &Path, tag: &str, small: usize, big: &[usize]) {
    write_model(root, &tree_model(tag, small, big));
}

/// The first difference between `model` and the folder `actual`, or `None` if it holds exactly
/// the model's entries, contents, executable bits and symlink targets.
pub fn model_diff(model: &TreeModel, actual: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = TreeModel::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = actual.join(&rel);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => return Some(format!("{}: {e}", dir.display())),
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let node = if md.file_type().is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap();
                Node::Symlink(t.into_os_string().into_string().unwrap())
            } else if md.is_dir() {
                stack.push(sub.clone());
                Node::Dir
            } else {
                let data = std::fs::read(e.path()).unwrap();
                Node::File(data, md.permissions().mode() & 0o100 != 0)
            };
            found.insert(sub, node);
        }
    }
    if found.keys().ne(model.keys()) {
        let extra: Vec<_> = found.keys().filter(|k| !model.contains_key(*k)).collect();
        let missing: Vec<_> = model.keys().filter(|k| !found.contains_key(*k)).collect();
        return Some(format!(
            "{}: missing {missing:?}, unexpected {extra:?}",
            actual.display()
        ));
    }
    for (rel, want) in model {
        let got = &found[rel];
        if got != want {
            let show = |n: &Node| match n {
                Node::File(d, x) => format!("file of {} bytes (executable: {x})", d.len()),
                other => format!("{other:?}"),
            };
            return Some(format!(
                "{}/{rel}: {}, want {}",
                actual.display(),
                show(got),
                show(want)
            ));
        }
    }
    None
}

/// The first difference between the tree (or file) `expected` and `actual`: names, types, file
/// contents, executable bits and symlink targets. `None` if they match.
pub fn tree_diff(expected: &Path, actual: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    fn cmp(e: &Path, a: &Path) -> Result<(), String> {
        let me = std::fs::symlink_metadata(e).map_err(|x| format!("{}: {x}", e.display()))?;
        let ma = std::fs::symlink_metadata(a).map_err(|x| format!("{}: {x}", a.display()))?;
        let (te, ta) = (me.file_type(), ma.file_type());
        if te.is_symlink() || ta.is_symlink() {
            let le = std::fs::read_link(e).ok();
            let la = std::fs::read_link(a).ok();
            if le != la {
                return Err(format!("{}: symlink {la:?}, want {le:?}", a.display()));
            }
        } else if te.is_dir() {
            if !ta.is_dir() {
                return Err(format!("{}: not a directory", a.display()));
            }
            let names = |d: &Path| -> Result<Vec<std::ffi::OsString>, String> {
                let mut v: Vec<_> = std::fs::read_dir(d)
                    .map_err(|x| format!("{}: {x}", d.display()))?
                    .map(|x| x.unwrap().file_name())
                    .collect();
                v.sort();
                Ok(v)
            };
            let (ne, na) = (names(e)?, names(a)?);
            if ne != na {
                return Err(format!("{}: holds {na:?}, want {ne:?}", a.display()));
            }
            for n in ne {
                cmp(&e.join(&n), &a.join(&n))?;
            }
        } else if te.is_file() {
            if !ta.is_file() {
                return Err(format!("{}: not a regular file", a.display()));
            }
            let xe = me.permissions().mode() & 0o100 != 0;
            let xa = ma.permissions().mode() & 0o100 != 0;
            if xe != xa {
                return Err(format!("{}: executable {xa}, want {xe}", a.display()));
            }
            let ce = std::fs::read(e).map_err(|x| format!("{}: {x}", e.display()))?;
            let ca = std::fs::read(a).map_err(|x| format!("{}: {x}", a.display()))?;
            if ce != ca {
                return Err(format!(
                    "{}: {} bytes differ from the {} expected",
                    a.display(),
                    ca.len(),
                    ce.len()
                ));
            }
        } else if te != ta {
            return Err(format!("{}: type {ta:?}, want {te:?}", a.display()));
        }
        Ok(())
    }
    cmp(expected, actual).err()
}

/// Panics unless `actual` is an exact copy of `expected` (see [`tree_diff`]).
pub fn assert_same_tree(expected: &Path, actual: &Path, context: &str) {
    if let Some(d) = tree_diff(expected, actual) {
        panic!("{context}: restored tree differs from its source: {d}");
    }
}

/// `n` pseudo-random bytes (xorshift).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

//! OCI image indexes and manifests, and docker-save `manifest.json`, from untrusted sources:
//! `cairn_oci::import` must never panic; whatever it accepts must leave a store that verifies
//! clean, an image that `inspect` walks, and (for OCI layouts) an export byte-identical to the
//! input.
//!
//! The input is a small set of documents that the harness lays out as an image archive, so that
//! the fuzzer reaches the JSON parsers and the walk instead of dying at the digest checks:
//!
//! - byte 0 holds the options: bit 0 = docker-save archive (document 0 is `manifest.json`)
//!   instead of an OCI layout (document 0 is `index.json`); bit 1 = gzip the archive; bit 2 =
//!   no `--name` (the import must find the name in the index);
//! - the rest is split at NUL bytes into documents 0..=9 (more are ignored); document N ≥ 1 is
//!   stored as the blob `blobs/sha256/<sha256 of its bytes>`;
//! - in document M, `@N` (N a digit, N > M) is replaced by the hex sha256 of document N, and
//!   `#N` by its size in bytes, after document N's own substitutions. So a seed writes
//!   `"digest":"sha256:@2","size":#2` to point at document 2, and documents form a DAG.
#![no_main]

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_store::{Key, NoProgress, Store, StoreOptions};
use libfuzzer_sys::fuzz_target;
use sha2::Digest;

/// A fresh store every this many accepted images keeps the full verify cheap.
const STORE_GENERATION: u64 = 64;
const MAX_DOCS: usize = 10;

struct State {
    /// `$TMPDIR/cairn-fuzz-oci_manifest/<pid>`: everything this process writes.
    base: PathBuf,
    store: Store,
    store_dir: PathBuf,
    generation: u64,
    accepted: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits the input into documents and resolves `@N` / `#N` from the last document back.
fn documents(rest: &[u8]) -> Vec<Vec<u8>> {
    let mut docs: Vec<Vec<u8>> = rest
        .split(|&b| b == 0)
        .take(MAX_DOCS)
        .map(<[u8]>::to_vec)
        .collect();
    let mut digests: Vec<Option<(String, usize)>> = vec![None; docs.len()];
    for m in (0..docs.len()).rev() {
        let doc = &docs[m];
        let mut out = Vec::with_capacity(doc.len());
        let mut i = 0;
        while i < doc.len() {
            let c = doc[i];
            if (c == b'@' || c == b'#') && i + 1 < doc.len() && doc[i + 1].is_ascii_digit() {
                let n = (doc[i + 1] - b'0') as usize;
                if n > m
                    && let Some(Some((h, size))) = digests.get(n)
                {
                    if c == b'@' {
                        out.extend_from_slice(h.as_bytes());
                    } else {
                        out.extend_from_slice(size.to_string().as_bytes());
                    }
                    i += 2;
                    continue;
                }
            }
            out.push(c);
            i += 1;
        }
        digests[m] = Some((hex(&sha2::Sha256::digest(&out)), out.len()));
        docs[m] = out;
    }
    docs
}

/// A tar of `files`, with fixed metadata.
fn tar_of(files: &[(String, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p, *c).unwrap();
    }
    b.into_inner().unwrap()
}

impl State {
    fn new() -> State {
        let parent = std::env::temp_dir().join("cairn-fuzz-oci_manifest");
        fs::create_dir_all(&parent).unwrap();
        // Remove what earlier processes (now gone) left behind.
        for e in fs::read_dir(&parent).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let base = parent.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("in")).unwrap();
        fs::create_dir_all(base.join("out")).unwrap();
        let (store, store_dir) = Self::open_store(&base, 0);
        State {
            base,
            store,
            store_dir,
            generation: 0,
            accepted: 0,
        }
    }

    fn open_store(base: &Path, generation: u64) -> (Store, PathBuf) {
        let dir = base.join(format!("store-{generation}"));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, StoreOptions::default()).expect("opening a fresh store");
        (store, dir)
    }

    fn rotate(&mut self) {
        let old = self.store_dir.clone();
        self.generation += 1;
        let (store, dir) = Self::open_store(&self.base, self.generation);
        self.store = store;
        self.store_dir = dir;
        fs::remove_dir_all(&old).unwrap();
    }

    fn run(&mut self, data: &[u8]) {
        let Some((&flags, rest)) = data.split_first() else {
            return;
        };
        let docker = flags & 1 != 0;
        let docs = documents(rest);
        let mut files: Vec<(String, &[u8])> = Vec::new();
        if docker {
            files.push(("manifest.json".into(), &docs[0]));
        } else {
            files.push((
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
            ));
            files.push(("index.json".into(), &docs[0]));
        }
        let mut seen = BTreeSet::new();
        for d in &docs[1..] {
            let name = format!("blobs/sha256/{}", hex(&sha2::Sha256::digest(d)));
            if seen.insert(name.clone()) {
                files.push((name, d));
            }
        }
        let mut archive = tar_of(&files);
        if flags & 2 != 0 {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&archive).unwrap();
            archive = e.finish().unwrap();
        }
        let input = self.base.join("in").join("image.tar");
        fs::write(&input, &archive).unwrap();

        let key = Key::new("fuzz/img").unwrap();
        let name = (flags & 4 == 0).then_some(&key);
        let result = cairn_oci::import(&self.store, &input, name, None);
        let leftovers = names(&self.store_dir.join("tmp"));
        assert!(
            leftovers.is_empty(),
            "import left temp files behind: {leftovers:?} (result: {result:?})"
        );
        let imported = match result {
            Ok(i) => i,
            Err(_) => return,
        };
        self.accepted += 1;
        let target = imported.record.key.as_str().to_string();

        let report = self
            .store
            .read()
            .expect("a read session")
            .verify(&[], &NoProgress)
            .expect("verify must run on a store import just wrote");
        assert!(
            report.is_clean(),
            "store does not verify clean after an accepted image: {:?}",
            report.problems
        );
        if let Err(e) = cairn_oci::inspect(&self.store, &target) {
            panic!("accepted image {target} does not inspect: {e}");
        }
        let out = self.base.join("out").join("layout");
        if let Err(e) = cairn_oci::export_layout(&self.store, &target, &out, &NoProgress) {
            panic!("accepted image {target} does not export: {e}");
        }
        if !docker {
            // Every blob the walk kept comes back byte for byte; index.json and oci-layout too.
            for (path, bytes) in &files {
                let p = out.join(path);
                if let Ok(got) = fs::read(&p) {
                    assert_eq!(&got[..], *bytes, "{path} changed in the round trip");
                } else {
                    assert!(
                        path.starts_with("blobs/"),
                        "{path} is missing from the export"
                    );
                }
            }
        }
        fs::remove_dir_all(&out).unwrap();
        assert_eq!(names(&self.base.join("out")), BTreeSet::new());
        if self.accepted % STORE_GENERATION == 0 {
            self.rotate();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(State::new).run(data);
});

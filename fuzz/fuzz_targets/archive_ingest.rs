//! Archive ingest on hostile input: `Store::add` of an archive must never panic; whatever it accepts
//! must leave a store that verifies clean and a root that materializes into a fresh folder
//! without error and without writing anything beside that folder.
//!
//! Input: byte 0 holds the options (bit 0: `preserve`), the rest is the archive (plain tar,
//! gzip or zstd, as the store detects it).
#![no_main]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cairn_store::{IngestOptions, Input, NoProgress, Root, Store, StoreOptions};
use libfuzzer_sys::fuzz_target;

/// A fresh store every this many accepted archives keeps the full verify cheap.
const STORE_GENERATION: u64 = 64;

struct State {
    /// `$TMPDIR/cairn-fuzz-archive_ingest/<pid>`: everything this process writes.
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

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl State {
    fn new() -> State {
        let parent = std::env::temp_dir().join("cairn-fuzz-archive_ingest");
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
        fs::create_dir_all(base.join("mat")).unwrap();
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

    fn expected_base(&self) -> BTreeSet<String> {
        let store = format!("store-{}", self.generation);
        set(&["in", "mat", store.as_str()])
    }

    fn run(&mut self, data: &[u8]) {
        let Some((&flags, archive)) = data.split_first() else {
            return;
        };
        let opts = IngestOptions {
            preserve: flags & 1 != 0,
            epoch: 0,
        };
        let input = self.base.join("in").join("archive");
        fs::write(&input, archive).unwrap();
        let result = self.store.add(Input::Archive(&input), &opts, &NoProgress);
        // Whatever happened, the store's temp folder holds nothing afterwards.
        let leftovers = names(&self.store_dir.join("tmp"));
        assert!(
            leftovers.is_empty(),
            "ingest left temp files behind: {leftovers:?} (result: {result:?})"
        );
        let added = match result {
            Ok(added) => added,
            Err(_) => return,
        };
        self.accepted += 1;

        let session = self.store.read().expect("a read session");
        let report = session
            .verify(&[], &NoProgress)
            .expect("verify must run on a store ingest just wrote");
        assert!(
            report.is_clean(),
            "store does not verify clean after an accepted archive: {:?}",
            report.problems
        );

        let mat = self.base.join("mat");
        let dest = mat.join("out");
        let stats = session.materialize(&added.root, &dest, false, &NoProgress);
        if let Err(e) = &stats {
            panic!("accepted root {:?} does not materialize: {e}", added.root);
        }
        assert_eq!(
            names(&mat),
            set(&["out"]),
            "materialize wrote beside its destination"
        );
        assert_eq!(
            names(&self.base),
            self.expected_base(),
            "materialize wrote outside its destination's parent"
        );
        assert_eq!(names(&self.base.join("in")), set(&["archive"]));
        match added.root {
            Root::Tree { .. } => {
                // Make everything removable (preserved modes may lack write bits; root
                // ignores them, others would not).
                fs::remove_dir_all(&dest).unwrap()
            }
            Root::File { .. } => fs::remove_file(&dest).unwrap(),
        }
        if self.accepted % STORE_GENERATION == 0 {
            self.rotate();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(State::new).run(data);
});

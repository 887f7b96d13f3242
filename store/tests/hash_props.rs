//! Property: the id of a normalized ingest depends only on names, contents, types, the
//! owner-exec bit and symlink targets; not on creation (walk) order, mtimes, owners or umask.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use cairn_store::{IngestOptions, Store};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Item {
    File { content: Vec<u8>, exec: bool },
    Link(String),
    Dir,
}

fn arb_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        4 => (proptest::collection::vec(any::<u8>(), 0..200), any::<bool>())
            .prop_map(|(content, exec)| Item::File { content, exec }),
        1 => "[a-z./]{1,12}".prop_map(Item::Link),
        1 => Just(Item::Dir),
    ]
}

/// Relative paths (up to two levels) and what to put there.
fn arb_layout() -> impl Strategy<Value = Vec<(String, Item)>> {
    proptest::collection::btree_map("[a-c]{1,2}(/[a-e]{1,3}){0,1}", arb_item(), 1..12).prop_map(
        |m| {
            // Drop entries whose parent is itself an entry that is not a directory.
            let mut out: Vec<(String, Item)> = Vec::new();
            for (p, item) in m {
                let parent_is_leaf = out
                    .iter()
                    .any(|(q, it)| p.starts_with(&format!("{q}/")) && !matches!(it, Item::Dir));
                if !parent_is_leaf {
                    out.push((p, item));
                }
            }
            out
        },
    )
}

/// Materializes `layout` under `root` in `order`, with the given extra mode bits, mtime and owner.
fn build(
    root: &Path,
    layout: &[(String, Item)],
    reverse: bool,
    group_bits: u32,
    mtime: i64,
    owner: u32,
) {
    fs::create_dir_all(root).unwrap();
    let mut items: Vec<&(String, Item)> = layout.iter().collect();
    if reverse {
        items.reverse();
    }
    for (rel, item) in items {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        match item {
            Item::File { content, exec } => {
                fs::write(&p, content).unwrap();
                let mode = if *exec { 0o700 } else { 0o600 } | group_bits;
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            Item::Link(t) => {
                // A later entry may already have created this path as a parent folder.
                if !p.exists() {
                    symlink(t, &p).unwrap();
                }
            }
            Item::Dir => fs::create_dir_all(&p).unwrap(),
        }
    }
    let is_root = rustix::process::geteuid().is_root();
    for ent in walk(root) {
        let t = filetime(mtime);
        let _ = rustix::fs::utimensat(
            rustix::fs::CWD,
            &ent,
            &t,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        );
        if is_root {
            rustix::fs::chownat(
                rustix::fs::CWD,
                &ent,
                Some(rustix::fs::Uid::from_raw(owner)),
                Some(rustix::fs::Gid::from_raw(owner)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .unwrap();
        }
    }
}

fn filetime(secs: i64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn hash_ignores_order_mtime_owner_and_umask(
        layout in arb_layout(),
        mtime_a in 0i64..2_000_000_000,
        mtime_b in 0i64..2_000_000_000,
        owner in 1u32..60000,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        build(&a, &layout, false, 0o000, mtime_a, 0);
        build(&b, &layout, true, 0o055, mtime_b, owner);
        let opts = IngestOptions { preserve: false, epoch: 0 };
        let ha = Store::hash(&a, &opts).unwrap().root;
        let hb = Store::hash(&b, &opts).unwrap().root;
        prop_assert_eq!(ha, hb);
    }

    #[test]
    fn hash_sees_content_changes(layout in arb_layout(), extra in proptest::collection::vec(any::<u8>(), 1..50)) {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        build(&a, &layout, false, 0, 0, 0);
        let opts = IngestOptions { preserve: false, epoch: 0 };
        let before = Store::hash(&a, &opts).unwrap().root;
        fs::write(a.join("zz-new-file"), &extra).unwrap();
        let after = Store::hash(&a, &opts).unwrap().root;
        prop_assert_ne!(before, after);
    }
}

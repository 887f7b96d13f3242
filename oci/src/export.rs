//! `oci export`: the stored layout tree back out, as a folder (`cairn get`) or a deterministic
//! tar (`cairn export`): every blob byte-identical to what was imported.

use std::path::Path;

use cairn_store::{ArchiveFormat, EntryKind, MaterializeStats, Progress, ReadSession, Root, Store};

use crate::error::{OciError, Result};

/// Resolves `target` (a key or id) and checks that it is an OCI image layout tree: `index.json`
/// and `oci-layout` files and a `blobs` folder at the top.
pub fn check_layout(session: &ReadSession, target: &str) -> Result<Root> {
    let store = session;
    let root = store.resolve(target)?;
    let not = |reason: &str| OciError::NotALayout {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    let Root::Tree { id } = root else {
        return Err(not("a single file, not a tree"));
    };
    let tree = store.tree(&id)?;
    for (name, want_dir) in [
        ("blobs", true),
        ("index.json", false),
        ("oci-layout", false),
    ] {
        match tree.get(name.as_bytes()).map(|e| &e.kind) {
            Some(EntryKind::Dir { .. }) if want_dir => {}
            Some(EntryKind::File { .. }) if !want_dir => {}
            _ => return Err(not(&format!("no {name}"))),
        }
    }
    Ok(root)
}

/// Writes the image `target` as an OCI image layout in `dir` (created if absent; must be empty).
pub fn export_layout(
    store: &Store,
    target: &str,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<MaterializeStats> {
    let session = store.read()?;
    let root = check_layout(&session, target)?;
    Ok(session.materialize(&root, dir, false, progress)?)
}

/// Writes the image `target` as an OCI archive: the layout as a deterministic tar (entries
/// sorted, mtime 0, owner 0, fixed modes), compressed if `file` ends in `.tar.gz`/`.tgz` or
/// `.tar.zst`/`.tzst`, plain otherwise. Returns the number of entries.
pub fn export_archive(store: &Store, target: &str, file: &Path) -> Result<u64> {
    let session = store.read()?;
    let root = check_layout(&session, target)?;
    let format = ArchiveFormat::from_path(file).unwrap_or(ArchiveFormat::Tar);
    Ok(session.export(&root, file, format)?)
}

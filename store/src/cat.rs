//! `cat`: one file's content, verified in full before its first byte is written.

use std::io::Write;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::key::Root;
use crate::session::ReadSession;
use crate::tree::EntryKind;

impl ReadSession {
    /// Writes the content of a file to `out`, verified. `path` selects a file inside a tree
    /// root (following no symlinks; a hardlink leads to its target); a file root takes no
    /// path. The blob is checked in full before the first byte is written, so a corrupt blob
    /// produces no output.
    pub fn cat(&self, root: &Root, path: Option<&str>, out: &mut dyn Write) -> Result<u64> {
        let (id, size) = match (root, path) {
            (Root::File { id, .. }, None) => (*id, None),
            (Root::File { id, .. }, Some(p)) => {
                return Err(Error::TreePath {
                    path: p.to_string(),
                    root: *id,
                    reason: "the root is a single file, not a tree".into(),
                });
            }
            (Root::Tree { id }, None) => {
                return Err(Error::TreePath {
                    path: String::new(),
                    root: *id,
                    reason: "the root is a tree: give the path of a file inside it".into(),
                });
            }
            (Root::Tree { id }, Some(p)) => {
                let (blob, size) = self.find_file(*id, p)?;
                (blob, Some(size))
            }
        };
        let place = self.store.placement(&id)?;
        let check = self.open_blob(&id, size, place)?;
        crate::blobs::copy_verified(check, &mut std::io::sink())?;
        let reader = self.open_blob(&id, size, place)?;
        Ok(crate::blobs::copy_verified(reader, out)?)
    }

    /// The blob and size of the regular file at `path` in tree `root`, following hardlinks
    /// (whose targets are paths from the root), never symlinks.
    fn find_file(&self, root: Id, path: &str) -> Result<(Id, u64)> {
        let fail = |reason: &str| Error::TreePath {
            path: path.to_string(),
            root,
            reason: reason.to_string(),
        };
        let mut wanted = path.to_string();
        // A hardlink chain longer than a tree's entries would be a loop.
        for _ in 0..crate::tree::MAX_DEPTH {
            let segs: Vec<&str> = wanted
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .collect();
            if segs.is_empty() {
                return Err(fail("empty path"));
            }
            let mut tree = self.tree(&root)?;
            let mut next = None;
            for (i, seg) in segs.iter().enumerate() {
                let entry = tree
                    .get(seg.as_bytes())
                    .ok_or_else(|| fail("no such entry"))?;
                let last = i + 1 == segs.len();
                match (&entry.kind, last) {
                    (EntryKind::Dir { tree: t }, false) => {
                        let t = *t;
                        tree = self.tree(&t)?;
                    }
                    (EntryKind::File { size, blob }, true) => return Ok((*blob, *size)),
                    (EntryKind::Hardlink { target }, true) => {
                        next = Some(String::from_utf8_lossy(target).into_owned());
                    }
                    (_, false) => return Err(fail(&format!("{seg:?} is not a directory"))),
                    (k, true) => {
                        return Err(fail(&format!("is a {}, not a file", k.type_name())));
                    }
                }
            }
            wanted = next.expect("the loop returns unless the path ends at a hardlink");
        }
        Err(fail("hardlinks lead in a loop"))
    }
}

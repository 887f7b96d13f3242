//! Merging decomposed layers into one filesystem, as a container runtime would see it: layers
//! applied lowest first; in each folder, an opaque marker (`.wh..wh..opq`) hides everything
//! lower layers put there, a whiteout (`.wh.NAME`) deletes `NAME` from lower layers, and every
//! other entry replaces what was at its path (a folder over a folder merges into it, keeping
//! the lower folder's metadata only when the layer never named that folder itself). Hardlinks
//! are resolved against the merged filesystem once their layer is applied, so they may point
//! at files of lower layers. The result is an in-memory [`Node`] tree of stored blobs; nothing
//! here touches a disk.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cairn_store::ingest::{Content, Node};
use cairn_store::tree::check_name;
use cairn_store::{EntryKind, Id, Meta, Tree};

use crate::layer::LayerTree;

use crate::error::{OciError, Result};

/// Prefix of whiteout file names.
const WHITEOUT: &[u8] = b".wh.";
/// Name of the opaque-folder marker.
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Metadata of a folder that a layer creates without naming it (a missing parent): what
/// `mkdir -p` by root with umask 022 gives, at the epoch.
fn implicit_meta() -> Meta {
    Meta {
        mode: 0o755,
        ..Meta::default()
    }
}

/// An empty root folder, to apply layers onto.
pub(crate) fn empty_root() -> Node {
    Node::Dir {
        meta: implicit_meta(),
        children: Vec::new(),
    }
}

/// Applies layers to a root.
pub(crate) struct Merger {
    next_group: u64,
}

/// A hardlink waiting for its layer to be fully applied.
struct PendingLink {
    path: Vec<Vec<u8>>,
    target: Vec<Vec<u8>>,
}

fn show(segs: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&segs.join(&b'/')).into_owned()
}

impl Merger {
    pub(crate) fn new() -> Merger {
        Merger { next_group: 0 }
    }

    /// Applies `layer` (whose trees are in `trees`) onto `root`. `from` names the layer in
    /// errors.
    pub(crate) fn apply(
        &mut self,
        root: &mut Node,
        layer: &LayerTree,
        trees: &HashMap<Id, Tree>,
        from: &Path,
    ) -> Result<()> {
        let implicit: HashSet<&[u8]> = layer.implicit.iter().map(Vec::as_slice).collect();
        let mut links = Vec::new();
        let mut path = Vec::new();
        let Node::Dir { children, .. } = root else {
            unreachable!("the root is a folder");
        };
        let cx = Cx {
            trees,
            implicit: &implicit,
            from,
        };
        cx.apply_dir(children, layer.tree, &mut path, &mut links)?;
        self.resolve_links(root, links, from)
    }

    fn resolve_links(
        &mut self,
        root: &mut Node,
        mut links: Vec<PendingLink>,
        from: &Path,
    ) -> Result<()> {
        // A link may name another link of the same layer: resolve until nothing moves.
        while !links.is_empty() {
            let before = links.len();
            let mut left = Vec::new();
            for link in links {
                match lookup_mut(root, &link.target) {
                    Some(Node::File {
                        meta,
                        content,
                        link_group,
                    }) => {
                        let group = *link_group.get_or_insert_with(|| {
                            self.next_group += 1;
                            self.next_group
                        });
                        let node = Node::File {
                            meta: meta.clone(),
                            content: content.clone(),
                            link_group: Some(group),
                        };
                        let (name, parent) = link.path.split_last().expect("non-empty path");
                        match lookup_mut(root, parent) {
                            Some(Node::Dir { children, .. }) => set(children, name, node),
                            _ => {
                                return Err(entry_error(
                                    from,
                                    &link.path,
                                    "its folder was replaced before the link was made".into(),
                                ));
                            }
                        }
                    }
                    _ => left.push(link),
                }
            }
            if left.len() == before {
                let link = &left[0];
                return Err(entry_error(
                    from,
                    &link.path,
                    format!(
                        "hardlink target {:?} is not a regular file of the image (links never pass through symlinks)",
                        show(&link.target)
                    ),
                ));
            }
            links = left;
        }
        Ok(())
    }
}

struct Cx<'a> {
    trees: &'a HashMap<Id, Tree>,
    implicit: &'a HashSet<&'a [u8]>,
    from: &'a Path,
}

impl Cx<'_> {
    fn tree(&self, id: Id, path: &[Vec<u8>]) -> Result<&Tree> {
        self.trees.get(&id).ok_or_else(|| {
            entry_error(
                self.from,
                path,
                format!("layer tree {id} is missing from the store"),
            )
        })
    }

    /// Whether the layer folder `tree_id` at `path` holds only whiteouts, directly or in
    /// folders of the layer's that it made only to hold them.
    fn only_whiteouts(&self, tree_id: Id, path: &mut Vec<Vec<u8>>) -> Result<bool> {
        let tree = self.tree(tree_id, path)?;
        for e in &tree.entries {
            if e.name.starts_with(WHITEOUT) {
                continue;
            }
            let EntryKind::Dir { tree } = &e.kind else {
                return Ok(false);
            };
            path.push(e.name.clone());
            let implicit = self.implicit.contains(path.join(&b'/').as_slice());
            let only = implicit && self.only_whiteouts(*tree, path)?;
            path.pop();
            if !only {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn apply_dir(
        &self,
        children: &mut Vec<(Vec<u8>, Node)>,
        tree_id: Id,
        path: &mut Vec<Vec<u8>>,
        links: &mut Vec<PendingLink>,
    ) -> Result<()> {
        let tree = self.tree(tree_id, path)?;
        if tree.get(OPAQUE).is_some() {
            children.clear();
        }
        // Whiteouts first: they delete what lower layers put here, never this layer's entries.
        for e in &tree.entries {
            let Some(victim) = e.name.strip_prefix(WHITEOUT) else {
                continue;
            };
            if e.name == OPAQUE {
                continue;
            }
            if let Err(reason) = check_name(victim) {
                path.push(e.name.clone());
                let err = entry_error(
                    self.from,
                    path,
                    format!("whiteout of an invalid name: {reason}"),
                );
                return Err(err);
            }
            if let Ok(i) = children.binary_search_by(|(n, _)| n.as_slice().cmp(victim)) {
                children.remove(i);
            }
        }
        for e in &tree.entries {
            if e.name.starts_with(WHITEOUT) {
                continue;
            }
            path.push(e.name.clone());
            match &e.kind {
                EntryKind::Dir { tree } => {
                    let named = !self.implicit.contains(path.join(&b'/').as_slice());
                    let over_folder = matches!(
                        children.binary_search_by(|(n, _)| n.as_slice().cmp(&e.name)),
                        Ok(i) if matches!(children[i].1, Node::Dir { .. })
                    );
                    if !named && !over_folder && self.only_whiteouts(*tree, path)? {
                        // A folder the layer made only to hold whiteouts, over a path that is
                        // absent or not a folder below: nothing there to delete, so nothing
                        // changes (never a folder made, never a file or symlink replaced, as
                        // umoci and containerd apply it).
                        path.pop();
                        continue;
                    }
                    let i = match children.binary_search_by(|(n, _)| n.as_slice().cmp(&e.name)) {
                        Ok(i) if matches!(children[i].1, Node::Dir { .. }) => {
                            if named && let Node::Dir { meta, .. } = &mut children[i].1 {
                                *meta = e.meta.clone();
                            }
                            i
                        }
                        found => {
                            let node = Node::Dir {
                                meta: if named {
                                    e.meta.clone()
                                } else {
                                    implicit_meta()
                                },
                                children: Vec::new(),
                            };
                            match found {
                                Ok(i) => {
                                    children[i].1 = node;
                                    i
                                }
                                Err(i) => {
                                    children.insert(i, (e.name.clone(), node));
                                    i
                                }
                            }
                        }
                    };
                    let Node::Dir { children: sub, .. } = &mut children[i].1 else {
                        unreachable!("made a folder above");
                    };
                    self.apply_dir(sub, *tree, path, links)?;
                }
                EntryKind::File { size, blob } => set(
                    children,
                    &e.name,
                    Node::File {
                        meta: e.meta.clone(),
                        content: Content::Stored {
                            id: *blob,
                            size: *size,
                        },
                        link_group: None,
                    },
                ),
                EntryKind::Hardlink { target } => {
                    if let Ok(i) = children.binary_search_by(|(n, _)| n.as_slice().cmp(&e.name)) {
                        children.remove(i);
                    }
                    links.push(PendingLink {
                        path: path.clone(),
                        target: target.split(|&b| b == b'/').map(<[u8]>::to_vec).collect(),
                    });
                }
                kind => set(
                    children,
                    &e.name,
                    Node::Other {
                        meta: e.meta.clone(),
                        kind: kind.clone(),
                    },
                ),
            }
            path.pop();
        }
        Ok(())
    }
}

/// Puts `node` at `name` in a sorted child list, replacing what was there.
fn set(children: &mut Vec<(Vec<u8>, Node)>, name: &[u8], node: Node) {
    match children.binary_search_by(|(n, _)| n.as_slice().cmp(name)) {
        Ok(i) => children[i].1 = node,
        Err(i) => children.insert(i, (name.to_vec(), node)),
    }
}

/// The node at `segs`, descending through folders only (never a symlink).
fn lookup_mut<'a>(mut node: &'a mut Node, segs: &[Vec<u8>]) -> Option<&'a mut Node> {
    for seg in segs {
        let Node::Dir { children, .. } = node else {
            return None;
        };
        let i = children
            .binary_search_by(|(n, _)| n.as_slice().cmp(seg))
            .ok()?;
        node = &mut children[i].1;
    }
    Some(node)
}

fn lookup<'a>(mut node: &'a Node, segs: &[Vec<u8>]) -> std::result::Result<&'a Node, String> {
    for (i, seg) in segs.iter().enumerate() {
        let Node::Dir { children, .. } = node else {
            return Err(format!(
                "{:?} is not a folder (symlinks are not followed)",
                show(&segs[..i])
            ));
        };
        let j = children
            .binary_search_by(|(n, _)| n.as_slice().cmp(seg))
            .map_err(|_| "no such path in the image".to_string())?;
        node = &children[j].1;
    }
    Ok(node)
}

fn entry_error(from: &Path, path: &[Vec<u8>], reason: String) -> OciError {
    OciError::Source {
        src: from.to_path_buf(),
        entry: Some(show(path)),
        reason,
    }
}

/// Splits a path given on the command line (`/usr/bin`, `etc/os-release`) into checked
/// segments; `.` segments and extra slashes are dropped, `..` is refused.
pub(crate) fn split_path(p: &str) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(format!("path {p:?}: '..' is not allowed")),
            s => {
                check_name(s.as_bytes()).map_err(|e| format!("path {p:?}: {e}"))?;
                out.push(s.as_bytes().to_vec());
            }
        }
    }
    Ok(out)
}

/// The part of `root` that `paths` name: each path's node with all below it, and the folders
/// above it (their metadata, and only the children on the way). `image` names the image in
/// errors.
pub(crate) fn select(root: &Node, paths: &[Vec<Vec<u8>>], image: &Path) -> Result<Node> {
    let Node::Dir { meta, .. } = root else {
        unreachable!("the root is a folder");
    };
    let mut out = Node::Dir {
        meta: meta.clone(),
        children: Vec::new(),
    };
    for segs in paths {
        let found = lookup(root, segs).map_err(|reason| entry_error(image, segs, reason))?;
        if segs.is_empty() {
            return Ok(root.clone());
        }
        let mut cur = &mut out;
        for (i, seg) in segs.iter().enumerate() {
            let Node::Dir { children, .. } = cur else {
                unreachable!("only folders are descended into");
            };
            let last = i + 1 == segs.len();
            let idx = match children.binary_search_by(|(n, _)| n.as_slice().cmp(seg)) {
                Ok(j) if !last => j,
                found_at => {
                    let node = if last {
                        found.clone()
                    } else {
                        let Ok(Node::Dir { meta, .. }) = lookup(root, &segs[..=i]) else {
                            unreachable!("the full path resolved through folders");
                        };
                        Node::Dir {
                            meta: meta.clone(),
                            children: Vec::new(),
                        }
                    };
                    match found_at {
                        Ok(j) => {
                            children[j].1 = node;
                            j
                        }
                        Err(j) => {
                            children.insert(j, (seg.clone(), node));
                            j
                        }
                    }
                }
            };
            cur = &mut children[idx].1;
        }
    }
    Ok(out)
}

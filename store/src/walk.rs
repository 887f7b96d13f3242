//! The one way trees are walked: iteratively, with an explicit stack, so that a tree nested
//! arbitrarily deep (say, from a hostile remote) costs heap, never a stack overflow.
//!
//! Two orders, for two kinds of question:
//! - [`closure`] visits each distinct tree a set of roots reaches once (what is reachable: gc's
//!   mark, verify, push, pull, the closure check before a key is bound), and [`totals`] sums a
//!   closure per path as ingest counts it;
//! - [`paths`] visits every entry under its path, depth-first in name order (what a tree looks
//!   like on disk: materialize, export, listings), refusing more than [`MAX_DEPTH`] levels.
//!
//! Both take the trees from a caller's loader, so the same code walks trees from the index, from
//! memory, or fetched from a remote.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::tree::{Entry, EntryKind, MAX_DEPTH, Tree};

/// What a loader knows of a tree the walk reached.
pub enum Load {
    /// Here it is: visit it and walk into its folders.
    Tree(Tree),
    /// Known to be complete (say, a tree the local index holds, whose closure the index holds
    /// too): do not walk into it.
    Known,
}

/// Visits every distinct tree `roots` reach, each once, parents before children. `load` gives
/// each tree (an error stops the walk: a missing tree is the loader's to report); `visit` sees
/// each loaded tree.
pub fn closure<E>(
    roots: impl IntoIterator<Item = Id>,
    mut load: impl FnMut(&Id) -> std::result::Result<Load, E>,
    mut visit: impl FnMut(&Id, &Tree) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Id> = roots.into_iter().collect();
    stack.reverse();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Load::Tree(tree) = load(&id)? else {
            continue;
        };
        visit(&id, &tree)?;
        for e in tree.entries.iter().rev() {
            if let EntryKind::Dir { tree } = e.kind
                && !seen.contains(&tree)
            {
                stack.push(tree);
            }
        }
    }
    Ok(())
}

/// Every tree and blob a root reaches.
#[derive(Debug, Default)]
pub struct Closure {
    /// Every tree, by id, each checked against its id when it was loaded.
    pub trees: HashMap<Id, Tree>,
    /// The trees in the order [`closure`] met them: each after the first tree that names it
    /// (not a topological order: a tree may also sit below a tree met later).
    pub order: Vec<Id>,
    /// Every blob, with its size, each once, in the order met.
    pub blobs: Vec<(Id, u64)>,
}

impl Closure {
    /// Collects what `roots` reach, loading each tree with `load` (which reports a missing one).
    pub fn collect(
        roots: impl IntoIterator<Item = Id>,
        mut load: impl FnMut(&Id) -> Result<Tree>,
    ) -> Result<Closure> {
        let mut out = Closure::default();
        let mut trees = HashMap::new();
        let mut blobs = HashSet::new();
        closure(
            roots,
            |id| load(id).map(Load::Tree),
            |id, tree| {
                out.order.push(*id);
                for e in &tree.entries {
                    if let EntryKind::File { size, blob } = e.kind
                        && blobs.insert(blob)
                    {
                        out.blobs.push((blob, size));
                    }
                }
                trees.insert(*id, tree.clone());
                Ok(())
            },
        )?;
        out.trees = trees;
        Ok(out)
    }

    /// The tree `id`, which the closure must hold.
    pub fn tree(&self, id: &Id) -> Result<&Tree> {
        self.trees.get(id).ok_or(Error::UnknownObject(*id))
    }
}

/// Sizes of a tree counted per path, as ingest counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeTotals {
    /// Bytes of regular-file content (a hardlink counts its target's size).
    pub size: u64,
    /// Regular files and hardlinks.
    pub files: u64,
    /// Most path segments of any entry below the root (`a/b/f` has 3; 0 for an empty tree).
    pub depth: usize,
}

/// Totals of the tree `root` of `closure`: per path, each subtree counted once per place it
/// appears (computed once per distinct tree, children first). A hardlink's target is a path
/// from `root`; one that is not a regular file of the tree is an error naming it.
pub fn totals(closure: &Closure, root: &Id) -> Result<TreeTotals> {
    let root_tree = closure.tree(root)?;
    let mut done: HashMap<Id, TreeTotals> = HashMap::new();
    // Depth-first, each tree's totals after its children's (the closure's order is not enough:
    // a tree met first as one folder's child may also sit deeper under another).
    let mut stack = vec![(*root, false)];
    while let Some((id, children_done)) = stack.pop() {
        if done.contains_key(&id) {
            continue;
        }
        let tree = closure.tree(&id)?;
        if !children_done {
            stack.push((id, true));
            for e in &tree.entries {
                if let EntryKind::Dir { tree: child } = e.kind
                    && !done.contains_key(&child)
                {
                    stack.push((child, false));
                }
            }
            continue;
        }
        let mut t = TreeTotals::default();
        for e in &tree.entries {
            t.depth = t.depth.max(1);
            match &e.kind {
                EntryKind::File { size, .. } => {
                    t.size += size;
                    t.files += 1;
                }
                EntryKind::Hardlink { target } => {
                    t.size += hardlink_size(closure, *root, root_tree, target)?;
                    t.files += 1;
                }
                EntryKind::Dir { tree } => {
                    // Absent only for a tree that (by a hash collision) contains itself.
                    let child = done.get(tree).ok_or(Error::UnknownObject(*tree))?;
                    t.size += child.size;
                    t.files += child.files;
                    t.depth = t.depth.max(child.depth + 1);
                }
                _ => {}
            }
        }
        done.insert(id, t);
    }
    done.get(root).copied().ok_or(Error::UnknownObject(*root))
}

/// The content size of the regular file at `target` (a `/`-separated path from `root`).
fn hardlink_size(closure: &Closure, root: Id, root_tree: &Tree, target: &[u8]) -> Result<u64> {
    let segs: Vec<&[u8]> = target.split(|&b| b == b'/').collect();
    let mut cur = root_tree;
    for (i, seg) in segs.iter().enumerate() {
        match (cur.get(seg).map(|e| &e.kind), i + 1 == segs.len()) {
            (Some(EntryKind::File { size, .. }), true) => return Ok(*size),
            (Some(EntryKind::Dir { tree }), false) => cur = closure.tree(tree)?,
            _ => break,
        }
    }
    Err(Error::HardlinkTarget {
        root,
        target: String::from_utf8_lossy(target).into_owned(),
    })
}

/// What [`paths`] does after visiting an entry.
pub enum Step<C> {
    /// Go on with the next entry.
    Next,
    /// The entry is a folder: walk into it, with this context for its entries.
    Descend(C),
    /// End the walk (successfully).
    Stop,
}

/// Visits every entry below the tree `root`, depth-first in name order, each under its path
/// (the names from the root's entries down to the entry's own). `visit` gets the context of
/// the entry's folder (`root_ctx` at the top) and decides whether to descend into a folder.
/// `tree` gives the trees (from a [`Closure`], say). A folder more than [`MAX_DEPTH`] levels
/// down is an error naming its path: nothing deeper can be written as a path on disk.
pub fn paths<'a, C>(
    root: &Id,
    root_ctx: C,
    mut tree: impl FnMut(&Id) -> Result<&'a Tree>,
    mut visit: impl FnMut(&C, &[Vec<u8>], &'a Entry) -> Result<Step<C>>,
) -> Result<()> {
    struct Frame<'a, C> {
        tree: &'a Tree,
        next: usize,
        ctx: C,
    }
    let mut stack = vec![Frame {
        tree: tree(root)?,
        next: 0,
        ctx: root_ctx,
    }];
    let mut path: Vec<Vec<u8>> = Vec::new();
    while let Some(frame) = stack.last_mut() {
        let Some(entry) = frame.tree.entries.get(frame.next) else {
            stack.pop();
            path.pop();
            continue;
        };
        frame.next += 1;
        path.push(entry.name.clone());
        match visit(&frame.ctx, &path, entry)? {
            Step::Next => {
                path.pop();
            }
            Step::Stop => return Ok(()),
            Step::Descend(ctx) => {
                let EntryKind::Dir { tree: child } = &entry.kind else {
                    path.pop();
                    continue;
                };
                let child = tree(child)?;
                if path.len() >= MAX_DEPTH && !child.entries.is_empty() {
                    return Err(Error::TooDeep {
                        root: *root,
                        path: String::from_utf8_lossy(&path.join(&b'/')).into_owned(),
                    });
                }
                stack.push(Frame {
                    tree: child,
                    next: 0,
                    ctx,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Meta;

    fn dir(name: &str, tree: Id) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            meta: Meta {
                mode: 0o755,
                ..Meta::default()
            },
            kind: EntryKind::Dir { tree },
        }
    }

    fn file(name: &str, content: &[u8]) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            meta: Meta {
                mode: 0o644,
                ..Meta::default()
            },
            kind: EntryKind::File {
                size: content.len() as u64,
                blob: Id::of(content),
            },
        }
    }

    fn put(trees: &mut HashMap<Id, Tree>, t: Tree) -> Id {
        let (id, _) = t.encode_with_id().unwrap();
        trees.insert(id, t);
        id
    }

    /// A chain of `n` folders, each holding the next: (root, trees).
    fn chain(n: usize) -> (Id, HashMap<Id, Tree>) {
        let mut trees = HashMap::new();
        let mut child = put(
            &mut trees,
            Tree {
                entries: vec![file("f", b"x")],
            },
        );
        for _ in 0..n {
            child = put(
                &mut trees,
                Tree {
                    entries: vec![dir("d", child)],
                },
            );
        }
        (child, trees)
    }

    #[test]
    fn deep_trees_cost_no_stack() {
        let (root, trees) = chain(200_000);
        // On a small thread: recursion would need ~100 bytes and more per level.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let c = Closure::collect([root], |id| Ok(trees[id].clone())).unwrap();
                assert_eq!(c.trees.len(), 200_001);
                let t = totals(&c, &root).unwrap();
                assert_eq!((t.size, t.files, t.depth), (1, 1, 200_001));
                let err =
                    paths(&root, (), |id| c.tree(id), |_, _, _| Ok(Step::Descend(()))).unwrap_err();
                assert!(matches!(err, Error::TooDeep { .. }), "{err}");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn shared_subtrees_count_per_path_and_load_once() {
        let mut trees = HashMap::new();
        let leaf = put(
            &mut trees,
            Tree {
                entries: vec![file("f", b"abc")],
            },
        );
        let root = put(
            &mut trees,
            Tree {
                entries: vec![dir("a", leaf), dir("b", leaf)],
            },
        );
        let mut loads = 0;
        let c = Closure::collect([root], |id| {
            loads += 1;
            Ok(trees[id].clone())
        })
        .unwrap();
        assert_eq!(loads, 2);
        assert_eq!(c.blobs, vec![(Id::of(b"abc"), 3)]);
        let t = totals(&c, &root).unwrap();
        assert_eq!((t.size, t.files, t.depth), (6, 2, 2));
        // A tree met first near the top and again deeper down (`x` and `y/z/x`).
        let mid = put(
            &mut trees,
            Tree {
                entries: vec![dir("x", leaf)],
            },
        );
        let top = put(
            &mut trees,
            Tree {
                entries: vec![dir("x", leaf), dir("y", mid)],
            },
        );
        let deeper = Closure::collect([top], |id| Ok(trees[id].clone())).unwrap();
        let t = totals(&deeper, &top).unwrap();
        assert_eq!((t.size, t.files, t.depth), (6, 2, 3));
        let mut seen = Vec::new();
        paths(
            &root,
            (),
            |id| c.tree(id),
            |_, p, _| {
                seen.push(p.join(&b'/'));
                Ok(Step::Descend(()))
            },
        )
        .unwrap();
        assert_eq!(seen, [&b"a"[..], b"a/f", b"b", b"b/f"]);
    }
}

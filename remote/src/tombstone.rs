//! Tombstones (`gc/tombstones/…`): the mark of remote gc's first phase, and what pushes read to
//! avoid relying on objects about to go.
//!
//! A remote's deletable units are packs (`packs/<xx>/<id>.pack` with its `.idx`) and standalone
//! blobs (`blobs/<xx>/<id>.zst`). A tombstone names one unit, is written create-only, never
//! changes, and its `Last-Modified` is when the unit was found unreachable. The unit is deleted by
//! a later gc only if the tombstone is older than the grace period, no key record names the unit
//! and the unit was not rewritten after the tombstone; otherwise the tombstone is dropped (the
//! unit is recovered).

use std::collections::HashMap;

use cairn_store::Id;

use crate::connection::Remote;
use crate::error::Result;

/// Folder of the tombstones, relative to the remote's root.
pub const TOMBSTONES: &str = "gc/tombstones/";

/// A deletable unit of a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// A pack and its index.
    Pack(Id),
    /// A standalone blob.
    Blob(Id),
}

impl Unit {
    /// Its tombstone's path, relative to the remote's root.
    pub fn tombstone(&self) -> String {
        match self {
            Unit::Pack(id) => format!("{TOMBSTONES}packs/{}", id.to_hex()),
            Unit::Blob(id) => format!("{TOMBSTONES}blobs/{}", id.to_hex()),
        }
    }

    /// The unit a tombstone path (relative to the remote's root) names.
    pub fn of_tombstone(rel: &str) -> Option<Unit> {
        let rest = rel.strip_prefix(TOMBSTONES)?;
        let (kind, hex) = rest.split_once('/')?;
        let id = parse_hex(hex)?;
        match kind {
            "packs" => Some(Unit::Pack(id)),
            "blobs" => Some(Unit::Blob(id)),
            _ => None,
        }
    }

    /// Its objects' paths: the index before the pack (a pack without its index is never
    /// relied on, so deleting the index first withdraws the pack at once).
    pub fn paths(&self, remote: &Remote) -> Vec<object_store::path::Path> {
        match self {
            Unit::Pack(id) => vec![remote.index_path(id), remote.pack_path(id)],
            Unit::Blob(id) => vec![remote.blob_path(id)],
        }
    }

    /// The path whose time tells when the unit was (re)written: a pack's index (written after
    /// the pack), a blob's file.
    pub fn stamp_path(&self, remote: &Remote) -> object_store::path::Path {
        match self {
            Unit::Pack(id) => remote.index_path(id),
            Unit::Blob(id) => remote.blob_path(id),
        }
    }

    /// The unit an object path (relative to the remote's root) belongs to, if any.
    pub fn of_object(rel: &str) -> Option<Unit> {
        let mut parts = rel.split('/');
        let (top, fan, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let (hex, ext) = name.split_once('.')?;
        if fan.len() != 2 || !hex.starts_with(fan) {
            return None;
        }
        let id = parse_hex(hex)?;
        match (top, ext) {
            ("packs", "pack" | "idx") => Some(Unit::Pack(id)),
            ("blobs", "zst") => Some(Unit::Blob(id)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unit::Pack(id) => write!(f, "pack {id}"),
            Unit::Blob(id) => write!(f, "blob {id}"),
        }
    }
}

fn parse_hex(hex: &str) -> Option<Id> {
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(Id(out))
}

/// Prefix of the grace markers: `gc/grace-<seconds>`, written by a gc before it first marks
/// with that grace period, never deleted. Pushes read them (in the listing of `gc/` they make
/// anyway) to know how long they may run before they must re-check what they rely on.
pub const GRACE_MARKER: &str = "gc/grace-";

/// What a push needs to know of a remote's gcs: the tombstones, and the shortest grace period
/// any gc ever used there.
#[derive(Clone, Debug, Default)]
pub struct GcState {
    /// Unit → its tombstone's time on the object store (epoch seconds).
    pub tombstones: HashMap<Unit, i64>,
    /// The shortest grace period (seconds) of any gc ever run on the remote.
    pub min_grace: Option<u64>,
}

/// Lists `gc/` once: tombstones and grace markers.
pub async fn scan(remote: &Remote) -> Result<GcState> {
    let mut out = GcState::default();
    for m in remote.list("gc/").await? {
        let rel = remote.relative(&m.location);
        if let Some(unit) = Unit::of_tombstone(rel) {
            out.tombstones.insert(unit, m.last_modified.timestamp());
        } else if let Some(g) = rel
            .strip_prefix(GRACE_MARKER)
            .and_then(|g| g.parse::<u64>().ok())
        {
            out.min_grace = Some(out.min_grace.map_or(g, |m| m.min(g)));
        }
    }
    Ok(out)
}

/// Every tombstone on `remote`: unit → its time on the object store (epoch seconds).
pub async fn list(remote: &Remote) -> Result<HashMap<Unit, i64>> {
    Ok(remote
        .list(TOMBSTONES)
        .await?
        .into_iter()
        .filter_map(|m| {
            let unit = Unit::of_tombstone(remote.relative(&m.location))?;
            Some((unit, m.last_modified.timestamp()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let id = Id::of(b"x");
        let h = id.to_hex();
        for u in [Unit::Pack(id), Unit::Blob(id)] {
            assert_eq!(Unit::of_tombstone(&u.tombstone()), Some(u));
        }
        assert_eq!(
            Unit::of_object(&format!("packs/{}/{h}.idx", &h[..2])),
            Some(Unit::Pack(id))
        );
        assert_eq!(
            Unit::of_object(&format!("blobs/{}/{h}.zst", &h[..2])),
            Some(Unit::Blob(id))
        );
        assert_eq!(Unit::of_object(&format!("blobs/zz/{h}.zst")), None);
        assert_eq!(Unit::of_object("keys/a.key"), None);
    }
}

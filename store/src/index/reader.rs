//! [`Reader`]: typed reads of one index transaction (a read transaction, or the reads a write
//! transaction makes of its own view).

use redb::{ReadTransaction, ReadableTable, TableError};

use super::tables::{
    ALIASES, BLOBS, CHECKOUTS, CheckoutKey, CheckoutRow, DERIVED, DerivedKey, DerivedValue,
    KEY_LOG, KEYS, PACKED, PINS, TREES, USAGE,
};
use crate::blobs::{Encoding, Placement};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::key::{KeyRecord, LogEntry};
use crate::packs::{PackId, PackSlot};
use crate::pins::Pin;
use crate::tree::Tree;

type Ro<K, V> = redb::ReadOnlyTable<K, V>;
type Id32 = &'static [u8; 32];

/// A `blobs` row: content size, stored size, encoding code.
pub(crate) type BlobRow = (u64, u64, u8);

/// A `derived` row: the derived tree and the caller's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DerivedRow {
    /// Namespace the caller chose.
    pub namespace: String,
    /// The source blob.
    pub source: Id,
    /// The derived tree.
    pub tree: Id,
    /// The caller's bytes.
    pub payload: Vec<u8>,
}

/// The typed read side of an index transaction.
pub(crate) struct Reader {
    keys: Ro<&'static str, &'static [u8]>,
    key_log: Ro<(&'static str, u64), &'static [u8]>,
    blobs: Ro<Id32, BlobRow>,
    trees: Ro<Id32, &'static [u8]>,
    packed: Option<Ro<Id32, (u128, u64)>>,
    derived: Option<Ro<DerivedKey, DerivedValue>>,
    aliases: Option<Ro<&'static str, Id32>>,
    usage: Option<Ro<&'static str, u64>>,
    pins: Option<Ro<&'static str, &'static [u8]>>,
    checkouts: Option<Ro<CheckoutKey, CheckoutRow>>,
}

/// Opens a table that an older layout may lack (`None` then).
fn optional<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> Result<Option<Ro<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
/// Decodes a key record's JSON; an unreadable one is [`Error::CorruptRecord`], never taken for
/// an absent key.
/// Every row of `table` whose name starts with `prefix`, in name order, each turned into an `R`
/// by `each` (the prefix scans of `keys`, `usage` and `pins`).
pub(crate) fn rows_under<V, R>(
    table: &impl ReadableTable<&'static str, V>,
    prefix: &str,
    mut each: impl FnMut(&str, V::SelfType<'_>) -> Result<R>,
) -> Result<Vec<R>>
where
    V: redb::Value + 'static,
{
    let mut out = Vec::new();
    for item in table.range(prefix..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(each(k.value(), v.value())?);
    }
    Ok(out)
}

pub(crate) fn decode_record(key: &str, bytes: &[u8]) -> Result<KeyRecord> {
    let rec: KeyRecord = serde_json::from_slice(bytes).map_err(|e| Error::CorruptRecord {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    if rec.key.as_str() != key {
        return Err(Error::CorruptRecord {
            key: key.to_string(),
            reason: format!("it names key {}", rec.key),
        });
    }
    Ok(rec)
}

/// Decodes a pin's JSON; an unreadable one is [`Error::CorruptRecord`] naming the pin.
pub(crate) fn decode_pin(name: &str, bytes: &[u8]) -> Result<Pin> {
    serde_json::from_slice(bytes).map_err(|e| Error::CorruptRecord {
        key: format!("pin {name}"),
        reason: e.to_string(),
    })
}

/// Decodes tree bytes from the index after checking they hash to `id`.
pub(crate) fn decode_tree(id: Id, bytes: &[u8]) -> Result<Tree> {
    let got = Id::of(bytes);
    if got != id {
        return Err(Error::CorruptTree {
            id,
            reason: format!("encoding hashes to {got}"),
        });
    }
    Tree::decode(bytes).map_err(|e| Error::CorruptTree {
        id,
        reason: e.to_string(),
    })
}

/// Where a `blobs` row (and the blob's `packed` row, if any) says the blob is; `None` for an
/// unknown encoding code.
pub(crate) fn placement_of(
    (_, stored_size, code): BlobRow,
    slot: Option<(u128, u64)>,
) -> Option<Placement> {
    Some(Placement {
        encoding: Encoding::from_code(code)?,
        stored_size,
        pack: slot.map(|(pack, offset)| PackSlot {
            pack: PackId(pack),
            offset,
        }),
    })
}

/// The reads both [`Reader`] and [`super::Writer`] offer, written once over their table fields
/// (`keys`, `key_log`, `blobs`, `trees`, and the optional `packed`, `derived`, `aliases`,
/// `usage`, `pins`, `checkouts`), which
/// are read-only tables in one and writable tables of the same types in the other.
macro_rules! read_methods {
    ($(#[$attr:meta])*) => {
        /// The record bound to `key`, if any.
        $(#[$attr])*
        pub(crate) fn record(&self, key: &str) -> Result<Option<KeyRecord>> {
            self.keys
                .get(key)?
                .map(|v| decode_record(key, v.value()))
                .transpose()
        }

        /// Every record whose key starts with `prefix`, in key order.
        $(#[$attr])*
        pub(crate) fn records(&self, prefix: &str) -> Result<Vec<KeyRecord>> {
            rows_under(&self.keys, prefix, decode_record)
        }

        /// Every record, each decoded or with the reason it cannot be (for `verify`, which
        /// reports a corrupt record rather than stopping at it).
        $(#[$attr])*
        pub(crate) fn all_records(&self) -> Result<Vec<(String, Result<KeyRecord>)>> {
            let mut out = Vec::new();
            for item in self.keys.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_string(), decode_record(k.value(), v.value())));
            }
            Ok(out)
        }

        /// The history of `key`, oldest first.
        $(#[$attr])*
        pub(crate) fn log(&self, key: &str) -> Result<Vec<LogEntry>> {
            let mut out = Vec::new();
            for item in self.key_log.range((key, 0)..=(key, u64::MAX))? {
                let (_, v) = item?;
                out.push(serde_json::from_slice(v.value()).map_err(|e| {
                    Error::CorruptRecord {
                        key: key.to_string(),
                        reason: format!("its log is unreadable: {e}"),
                    }
                })?);
            }
            Ok(out)
        }

        /// Whether the index records the tree `id`.
        $(#[$attr])*
        pub(crate) fn has_tree(&self, id: &Id) -> Result<bool> {
            Ok(self.trees.get(&id.0)?.is_some())
        }

        /// The tree `id`, checked against its id; `None` if the index lacks it.
        $(#[$attr])*
        pub(crate) fn tree_opt(&self, id: &Id) -> Result<Option<Tree>> {
            match self.trees.get(&id.0)? {
                Some(v) => Ok(Some(decode_tree(*id, v.value())?)),
                None => Ok(None),
            }
        }

        /// The tree `id`, checked against its id; [`Error::UnknownObject`] if the index lacks
        /// it.
        $(#[$attr])*
        pub(crate) fn tree(&self, id: &Id) -> Result<Tree> {
            self.tree_opt(id)?.ok_or(Error::UnknownObject(*id))
        }

        /// Whether the index records the blob `id`.
        $(#[$attr])*
        pub(crate) fn has_blob(&self, id: &Id) -> Result<bool> {
            Ok(self.blobs.get(&id.0)?.is_some())
        }

        /// The content size of blob `id`, if the index records it.
        $(#[$attr])*
        pub(crate) fn blob_size(&self, id: &Id) -> Result<Option<u64>> {
            Ok(self.blobs.get(&id.0)?.map(|v| v.value().0))
        }

        /// Where the index says blob `id` is kept, with its content size; `None` if it lacks
        /// the blob (or records an encoding this version does not know).
        $(#[$attr])*
        pub(crate) fn placement(&self, id: &Id) -> Result<Option<(u64, Placement)>> {
            let Some(row) = self.blobs.get(&id.0)?.map(|v| v.value()) else {
                return Ok(None);
            };
            let slot = match &self.packed {
                Some(t) => t.get(&id.0)?.map(|v| v.value()),
                None => None,
            };
            Ok(placement_of(row, slot).map(|p| (row.0, p)))
        }

        /// Calls `f` with every `blobs` row and the blob's pack slot, if it has one.
        $(#[$attr])*
        pub(crate) fn each_blob(
            &self,
            mut f: impl FnMut(Id, BlobRow, Option<(u128, u64)>) -> Result<()>,
        ) -> Result<()> {
            for item in self.blobs.iter()? {
                let (k, v) = item?;
                let slot = match &self.packed {
                    Some(t) => t.get(k.value())?.map(|v| v.value()),
                    None => None,
                };
                f(Id(*k.value()), v.value(), slot)?;
            }
            Ok(())
        }

        /// Calls `f` with every `packed` row: (blob, pack, offset).
        $(#[$attr])*
        pub(crate) fn each_packed(&self, mut f: impl FnMut(Id, u128, u64)) -> Result<()> {
            if let Some(t) = &self.packed {
                for item in t.iter()? {
                    let (k, v) = item?;
                    let (pack, offset) = v.value();
                    f(Id(*k.value()), pack, offset);
                }
            }
            Ok(())
        }

        /// Calls `f` with every tree row (id, bytes as stored, unchecked).
        $(#[$attr])*
        pub(crate) fn each_tree(&self, mut f: impl FnMut(Id, &[u8]) -> Result<()>) -> Result<()> {
            for item in self.trees.iter()? {
                let (k, v) = item?;
                f(Id(*k.value()), v.value())?;
            }
            Ok(())
        }

        /// The tree derived from blob `source` in `namespace`, if one was recorded and its tree
        /// is still present: (tree, payload).
        $(#[$attr])*
        pub(crate) fn derived(&self, namespace: &str, source: &Id) -> Result<Option<(Id, Vec<u8>)>> {
            let Some(t) = &self.derived else {
                return Ok(None);
            };
            let Some(v) = t.get((namespace, &source.0))? else {
                return Ok(None);
            };
            let (tree, payload) = v.value();
            let tree = Id(*tree);
            Ok(self.has_tree(&tree)?.then(|| (tree, payload.to_vec())))
        }

        /// Every `derived` row.
        $(#[$attr])*
        pub(crate) fn all_derived(&self) -> Result<Vec<DerivedRow>> {
            let Some(t) = &self.derived else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                let (namespace, source) = k.value();
                let (tree, payload) = v.value();
                out.push(DerivedRow {
                    namespace: namespace.to_string(),
                    source: Id(*source),
                    tree: Id(*tree),
                    payload: payload.to_vec(),
                });
            }
            Ok(out)
        }

        /// The blob an alias names, if it was recorded and the blob is still present.
        $(#[$attr])*
        pub(crate) fn alias(&self, name: &str) -> Result<Option<Id>> {
            let Some(t) = &self.aliases else {
                return Ok(None);
            };
            let Some(id) = t.get(name)?.map(|v| Id(*v.value())) else {
                return Ok(None);
            };
            Ok(self.has_blob(&id)?.then_some(id))
        }

        /// When `key` was last read, if that was ever recorded.
        $(#[$attr])*
        pub(crate) fn last_used(&self, key: &str) -> Result<Option<u64>> {
            let Some(t) = &self.usage else {
                return Ok(None);
            };
            Ok(t.get(key)?.map(|v| v.value()))
        }

        /// Every recorded last use of a key starting with `prefix`: (key, time).
        $(#[$attr])*
        pub(crate) fn usage_under(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
            let Some(t) = &self.usage else {
                return Ok(Vec::new());
            };
            rows_under(t, prefix, |k, at| Ok((k.to_string(), at)))
        }

        /// The pin called `name`, expired or not (gc's writer reads it; readers list pins).
        $(#[$attr])*
        #[allow(dead_code)]
        pub(crate) fn pin(&self, name: &str) -> Result<Option<Pin>> {
            let Some(t) = &self.pins else {
                return Ok(None);
            };
            t.get(name)?.map(|v| decode_pin(name, v.value())).transpose()
        }

        /// Every pin whose name starts with `prefix`, expired or not, in name order.
        $(#[$attr])*
        pub(crate) fn pins_under(&self, prefix: &str) -> Result<Vec<Pin>> {
            let Some(t) = &self.pins else {
                return Ok(Vec::new());
            };
            rows_under(t, prefix, decode_pin)
        }

        /// Every alias as (name, blob).
        $(#[$attr])*
        pub(crate) fn all_aliases(&self) -> Result<Vec<(String, Id)>> {
            let Some(t) = &self.aliases else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_string(), Id(*v.value())));
            }
            Ok(out)
        }

        /// The recorded checkout objects of blob `id`: (variant name, row).
        $(#[$attr])*
        pub(crate) fn checkouts_of(&self, id: &Id) -> Result<Vec<(String, CheckoutRow)>> {
            let Some(t) = &self.checkouts else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in t.range((&id.0, "")..)? {
                let (k, v) = item?;
                let (blob, variant) = k.value();
                if blob != &id.0 {
                    break;
                }
                out.push((variant.to_string(), v.value()));
            }
            Ok(out)
        }

        /// Every `checkouts` row: (blob, variant name, row).
        $(#[$attr])*
        pub(crate) fn all_checkouts(&self) -> Result<Vec<(Id, String, CheckoutRow)>> {
            let Some(t) = &self.checkouts else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in t.iter()? {
                let (k, v) = item?;
                let (blob, variant) = k.value();
                out.push((Id(*blob), variant.to_string(), v.value()));
            }
            Ok(out)
        }
    };
}
pub(super) use read_methods;

impl Reader {
    pub(super) fn new(txn: &ReadTransaction) -> Result<Reader> {
        Ok(Reader {
            keys: txn.open_table(KEYS)?,
            key_log: txn.open_table(KEY_LOG)?,
            blobs: txn.open_table(BLOBS)?,
            trees: txn.open_table(TREES)?,
            packed: optional(txn, PACKED)?,
            derived: optional(txn, DERIVED)?,
            aliases: optional(txn, ALIASES)?,
            usage: optional(txn, USAGE)?,
            pins: optional(txn, PINS)?,
            checkouts: optional(txn, CHECKOUTS)?,
        })
    }

    read_methods!();
}

//! [`Writer`]: typed writes (and reads) of one write transaction.

use redb::{ReadableTable, Table, WriteTransaction};

use super::reader::{
    BlobRow, DerivedRow, decode_pin, decode_record, decode_tree, placement_of, read_methods,
    rows_under,
};
use super::tables::{
    ALIASES, BLOBS, CHECKOUTS, CheckoutKey, CheckoutRow, DERIVED, DerivedKey, DerivedValue,
    KEY_LOG, KEYS, PACKED, PINS, TREES, USAGE,
};
use crate::blobs::{Placement, StoredBlob};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::key::{Key, KeyRecord, LogAction, LogEntry};
use crate::pins::Pin;
use crate::tree::Tree;

type Id32 = &'static [u8; 32];

/// The typed side of a write transaction: every write the store makes, and the same reads as
/// [`super::Reader`] (they see this transaction's own writes).
pub(crate) struct Writer<'t> {
    keys: Table<'t, &'static str, &'static [u8]>,
    key_log: Table<'t, (&'static str, u64), &'static [u8]>,
    blobs: Table<'t, Id32, BlobRow>,
    trees: Table<'t, Id32, &'static [u8]>,
    // Always present in a write transaction (the layout check creates them); optional only so
    // that the reads are shared with `Reader`, where an older layout may lack them.
    packed: Option<Table<'t, Id32, (u128, u64)>>,
    derived: Option<Table<'t, DerivedKey, DerivedValue>>,
    aliases: Option<Table<'t, &'static str, Id32>>,
    usage: Option<Table<'t, &'static str, u64>>,
    pins: Option<Table<'t, &'static str, &'static [u8]>>,
    checkouts: Option<Table<'t, CheckoutKey, CheckoutRow>>,
}

impl<'t> Writer<'t> {
    pub(super) fn new(txn: &'t WriteTransaction) -> Result<Writer<'t>> {
        super::check_layout(txn)?;
        Ok(Writer {
            keys: txn.open_table(KEYS)?,
            key_log: txn.open_table(KEY_LOG)?,
            blobs: txn.open_table(BLOBS)?,
            trees: txn.open_table(TREES)?,
            packed: Some(txn.open_table(PACKED)?),
            derived: Some(txn.open_table(DERIVED)?),
            aliases: Some(txn.open_table(ALIASES)?),
            usage: Some(txn.open_table(USAGE)?),
            pins: Some(txn.open_table(PINS)?),
            checkouts: Some(txn.open_table(CHECKOUTS)?),
        })
    }

    // Only some of the shared reads are needed inside write transactions.
    read_methods!(#[allow(dead_code)]);

    fn packed_mut(&mut self) -> &mut Table<'t, Id32, (u128, u64)> {
        self.packed.as_mut().expect("opened by Writer::new")
    }

    /// Records a durable blob (and its pack slot) unless the index has it already: a present
    /// blob's row, and the copy it points to, are never replaced. Returns whether it is new.
    pub(crate) fn record_blob(&mut self, s: &StoredBlob) -> Result<bool> {
        if self.blobs.get(&s.id.0)?.is_some() {
            return Ok(false);
        }
        self.blobs
            .insert(&s.id.0, (s.size, s.stored_size, s.encoding.code()))?;
        if let Some(slot) = s.pack {
            self.packed_mut()
                .insert(&s.id.0, (slot.pack.0, slot.offset))?;
        }
        Ok(true)
    }

    /// Records tree `id` (its canonical bytes, which the caller has checked) unless present.
    pub(crate) fn insert_tree(&mut self, id: &Id, bytes: &[u8]) -> Result<bool> {
        if self.trees.get(&id.0)?.is_some() {
            return Ok(false);
        }
        self.trees.insert(&id.0, bytes)?;
        Ok(true)
    }

    /// Writes `rec` as its key's record, without a log entry (a record changed in place: an
    /// attachment or a signature added).
    pub(crate) fn put_record(&mut self, rec: &KeyRecord) -> Result<()> {
        let json = serde_json::to_vec(rec).expect("records serialize");
        self.keys.insert(rec.key.as_str(), json.as_slice())?;
        Ok(())
    }

    /// Binds `rec` (a first binding or a rebinding) and logs it. The caller has made sure that
    /// everything the record reaches is recorded in this transaction or before it. A previous
    /// record that cannot be read is replaced: binding again is how a damaged record is mended.
    pub(crate) fn bind(&mut self, rec: KeyRecord) -> Result<KeyRecord> {
        let key = rec.key.clone();
        let previous = match self.record(key.as_str()) {
            Ok(old) => old.map(|r| r.root),
            Err(Error::CorruptRecord { reason, .. }) => {
                tracing::warn!("key {key}: replacing a record that was unreadable ({reason})");
                None
            }
            Err(e) => return Err(e),
        };
        self.put_record(&rec)?;
        self.append_log(
            &key,
            LogEntry {
                time: crate::records::now(),
                action: if previous.is_some() {
                    LogAction::Rebind
                } else {
                    LogAction::Bind
                },
                root: Some(rec.root),
                previous,
            },
        )?;
        Ok(rec)
    }

    /// Unbinds `key` and logs it. Returns what it was bound to: `Ok(None)` if the key is not
    /// bound, `Ok(Some(Err(..)))` for a record that could not be read (removed all the same:
    /// removing is one way to mend it).
    pub(crate) fn unbind(&mut self, key: &Key) -> Result<Option<Result<KeyRecord>>> {
        let old = match self.keys.remove(key.as_str())? {
            Some(v) => decode_record(key.as_str(), v.value()),
            None => return Ok(None),
        };
        self.usage
            .as_mut()
            .expect("opened by Writer::new")
            .remove(key.as_str())?;
        self.append_log(
            key,
            LogEntry {
                time: crate::records::now(),
                action: LogAction::Remove,
                root: None,
                previous: old.as_ref().ok().map(|r| r.root),
            },
        )?;
        Ok(Some(old))
    }

    /// Records that `key` was read at `time`.
    pub(crate) fn set_used(&mut self, key: &str, time: u64) -> Result<()> {
        self.usage
            .as_mut()
            .expect("opened by Writer::new")
            .insert(key, time)?;
        Ok(())
    }

    /// Writes `pin` (replacing a pin of the same name).
    pub(crate) fn put_pin(&mut self, pin: &Pin) -> Result<()> {
        let json = serde_json::to_vec(pin).expect("pins serialize");
        self.pins
            .as_mut()
            .expect("opened by Writer::new")
            .insert(pin.name.as_str(), json.as_slice())?;
        Ok(())
    }

    /// Deletes the pin called `name`; returns it if there was one (`Err` inside for a pin
    /// that could not be read, deleted all the same).
    pub(crate) fn remove_pin(&mut self, name: &str) -> Result<Option<Result<Pin>>> {
        Ok(self
            .pins
            .as_mut()
            .expect("opened by Writer::new")
            .remove(name)?
            .map(|v| decode_pin(name, v.value())))
    }

    fn append_log(&mut self, key: &Key, entry: LogEntry) -> Result<()> {
        let k = key.as_str();
        let next = self
            .key_log
            .range((k, 0)..=(k, u64::MAX))?
            .next_back()
            .transpose()?
            .map_or(0, |(key, _)| key.value().1 + 1);
        let json = serde_json::to_vec(&entry).expect("log entries serialize");
        self.key_log.insert((k, next), json.as_slice())?;
        Ok(())
    }

    /// Records the tree derived from blob `source` in `namespace` (replacing an earlier one).
    pub(crate) fn put_derived(
        &mut self,
        namespace: &str,
        source: &Id,
        tree: &Id,
        payload: &[u8],
    ) -> Result<()> {
        self.derived
            .as_mut()
            .expect("opened by Writer::new")
            .insert((namespace, &source.0), (&tree.0, payload))?;
        Ok(())
    }

    /// Records that `name` is another name of blob `blob`.
    pub(crate) fn put_alias(&mut self, name: &str, blob: &Id) -> Result<()> {
        self.aliases
            .as_mut()
            .expect("opened by Writer::new")
            .insert(name, &blob.0)?;
        Ok(())
    }

    /// Deletes tree `id`'s row.
    pub(crate) fn remove_tree(&mut self, id: &Id) -> Result<()> {
        self.trees.remove(&id.0)?;
        Ok(())
    }

    /// Deletes blob `id`'s rows (`blobs` and `packed`).
    pub(crate) fn remove_blob(&mut self, id: &Id) -> Result<()> {
        self.blobs.remove(&id.0)?;
        self.packed_mut().remove(&id.0)?;
        Ok(())
    }

    /// Deletes a `derived` row.
    pub(crate) fn remove_derived(&mut self, row: &DerivedRow) -> Result<()> {
        self.derived
            .as_mut()
            .expect("opened by Writer::new")
            .remove((row.namespace.as_str(), &row.source.0))?;
        Ok(())
    }

    /// Deletes an alias.
    pub(crate) fn remove_alias(&mut self, name: &str) -> Result<()> {
        self.aliases
            .as_mut()
            .expect("opened by Writer::new")
            .remove(name)?;
        Ok(())
    }

    /// Moves blob `id` to a new pack slot, if its row still points at `old` (gc's repack).
    pub(crate) fn repoint_packed(
        &mut self,
        id: &Id,
        old: (u128, u64),
        new: (u128, u64),
    ) -> Result<bool> {
        if self.packed_mut().get(&id.0)?.map(|v| v.value()) != Some(old) {
            return Ok(false);
        }
        self.packed_mut().insert(&id.0, new)?;
        Ok(true)
    }

    fn checkouts_mut(&mut self) -> &mut Table<'t, CheckoutKey, CheckoutRow> {
        self.checkouts.as_mut().expect("opened by Writer::new")
    }

    /// Records checkout object `variant` of blob `id` (replacing an earlier row: the object
    /// was made again).
    pub(crate) fn put_checkout(&mut self, id: &Id, variant: &str, row: CheckoutRow) -> Result<()> {
        self.checkouts_mut().insert((&id.0, variant), row)?;
        Ok(())
    }

    /// Deletes the row of checkout object `variant` of blob `id`.
    pub(crate) fn remove_checkout(&mut self, id: &Id, variant: &str) -> Result<()> {
        self.checkouts_mut().remove((&id.0, variant))?;
        Ok(())
    }
}

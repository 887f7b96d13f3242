//! Key records: listing, history, removal, attachments and signatures. Binding happens where
//! objects are committed (`Store::commit`, `Import`); these change or read records only.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::ingest::IngestOptions;
use crate::key::{Attachment, AttachmentName, Key, KeyRecord, LogEntry, Root};
use crate::sign::Signature;
use crate::store::Store;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// The record of `key`.
    pub fn record(&self, key: &Key) -> Result<KeyRecord> {
        self.index
            .read(|r| r.record(key.as_str()))?
            .ok_or_else(|| Error::UnknownKey(key.to_string()))
    }

    /// Every key whose name starts with `prefix`, in name order.
    pub fn keys(&self, prefix: &str) -> Result<Vec<KeyRecord>> {
        self.index.read(|r| r.records(prefix))
    }

    /// The history of `key`, oldest first.
    pub fn log(&self, key: &Key) -> Result<Vec<LogEntry>> {
        let out = self.index.read(|r| r.log(key.as_str()))?;
        if out.is_empty() {
            return Err(Error::UnknownKey(key.to_string()));
        }
        Ok(out)
    }

    /// Unbinds `key` (its objects stay until `gc`) and returns the record it had: `None` for
    /// a record that could not be read, which is removed all the same (a way to mend it).
    pub fn remove_key(&self, key: &Key) -> Result<Option<KeyRecord>> {
        match self.index.write(|w| w.unbind(key))? {
            None => Err(Error::UnknownKey(key.to_string())),
            Some(Ok(rec)) => Ok(Some(rec)),
            Some(Err(e)) => {
                tracing::warn!("{e}; removed");
                Ok(None)
            }
        }
    }

    /// Stores the file at `path` and attaches it to `key` as `name` (replacing an attachment of
    /// that name). Signatures on the record no longer cover it, so they are dropped; the new
    /// record is returned with the number of signatures dropped.
    pub fn attach(
        &self,
        key: &Key,
        name: &AttachmentName,
        path: &Path,
    ) -> Result<(KeyRecord, usize)> {
        let session = self.import()?;
        let opts = IngestOptions::default();
        let (built, stored, _) =
            crate::put::ingest_path(self, path, &opts, &crate::progress::NoProgress)?;
        let Root::File { id, .. } = built.root else {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                reason: "an attachment must be a regular file".into(),
            });
        };
        self.commit(&built, &stored, None)?;
        let out = self.index.write(|w| {
            let mut rec = w
                .record(key.as_str())?
                .ok_or_else(|| Error::UnknownKey(key.to_string()))?;
            rec.attachments.insert(
                name.clone(),
                Attachment {
                    id,
                    size: built.totals.size,
                },
            );
            let dropped = std::mem::take(&mut rec.signatures).len();
            w.put_record(&rec)?;
            Ok((rec, dropped))
        });
        drop(session);
        out
    }

    /// Adds `sig` to `key`'s record, provided the record is still `signed` (apart from its
    /// signatures): a record rebound meanwhile is never given a signature meant for another.
    /// A signature by the same key name replaces the old one.
    pub fn add_signature(&self, signed: &KeyRecord, sig: Signature) -> Result<KeyRecord> {
        self.index.write(|w| {
            let key = signed.key.as_str();
            let mut rec = w
                .record(key)?
                .ok_or_else(|| Error::UnknownKey(key.to_string()))?;
            let mut a = rec.clone();
            a.signatures.clear();
            let mut b = signed.clone();
            b.signatures.clear();
            if a != b {
                return Err(Error::RecordChanged {
                    key: key.to_string(),
                    what: "it was being signed",
                });
            }
            rec.signatures.retain(|s| s.key != sig.key);
            rec.signatures.push(sig);
            rec.signatures.sort();
            w.put_record(&rec)?;
            Ok(rec)
        })
    }
}

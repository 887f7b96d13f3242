//! `cairn rm --remote`: deleting key records from a remote. Their objects stay until the next
//! `cairn remote gc` finds them unreachable.

use cairn_store::Key;

use crate::connection::Remote;
use crate::error::{RemoteError, Result};

/// Deletes the records of `keys` (and their usage objects) from `remote`. Every key must be
/// there: one that is not fails the whole removal before anything is deleted.
pub async fn remove_keys(remote: &Remote, keys: &[Key]) -> Result<Vec<(Key, bool)>> {
    if remote.read_only() {
        return Err(RemoteError::ReadOnly(remote.url().to_string()));
    }
    for key in keys {
        if remote.head(&remote.key_path(key)).await?.is_none() {
            return Err(RemoteError::NoSuchKey {
                remote: remote.url().to_string(),
                key: key.to_string(),
            });
        }
    }
    let mut out = Vec::new();
    for key in keys {
        remote.delete(&remote.key_path(key)).await?;
        remote.delete(&remote.usage_path(key)).await?;
        out.push((key.clone(), true));
    }
    Ok(out)
}

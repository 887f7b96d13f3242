//! Usage objects on a remote (`usage/<key>.used`): their `Last-Modified` is when the key was
//! last pulled, for `cairn remote gc --policy` (`max-age-unused`, least recently used first).
//!
//! A pull refreshes the objects of the keys it bound, at most once per
//! [`REMOTE_USAGE_RESOLUTION`]: one HEAD per key, and a conditional put (create-only, or
//! only-if-unchanged) when the object is missing or older, so machines pulling the same key at
//! once write it once. A failure is only logged: usage is advisory.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_store::Key;

use crate::connection::Remote;

/// A usage object is rewritten only when older than this.
pub const REMOTE_USAGE_RESOLUTION: Duration = Duration::from_secs(24 * 3600);

/// Records on `remote` that `keys` were just used (see the module docs).
pub(crate) async fn touch(remote: &Remote, keys: &[Key]) {
    if remote.read_only() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for key in keys {
        let path = remote.usage_path(key);
        let body = Bytes::from(serde_json::to_vec(&serde_json::json!({"key": key})).expect("json"));
        let r = match remote.head(&path).await {
            Ok(None) => remote.put_if(&path, body, None).await.map(drop),
            Ok(Some(m))
                if now - m.last_modified.timestamp() > REMOTE_USAGE_RESOLUTION.as_secs() as i64 =>
            {
                let etag = m.e_tag.unwrap_or_default();
                remote.put_if(&path, body, Some(&etag)).await.map(drop)
            }
            Ok(Some(_)) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::debug!("{key}: usage on {} not recorded: {e}", remote.url());
        }
    }
}

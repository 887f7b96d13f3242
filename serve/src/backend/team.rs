//! The team cache and the fallback remote.
//!
//! **Team cache.** Other machines use the server as a read-only `http://` remote
//! (`cairn remote add team http://HOST:5000/cache`). The server keeps a `file://` remote in
//! `STORE/serve/team-cache/` in the store's remote layout (`docs/format.md`, "Remote layout")
//! and serves its files. It is filled on demand by the ordinary push code: a request for
//! `keys/<key>.key` first pushes that key there if the remote's record is missing or differs
//! from the store's (a push sends only what the folder lacks), so packs and blobs named by a
//! record served are always present. A key removed from the store has its record deleted there
//! on the next request for it.
//!
//! **Fallback remote** (`--remote NAME`): a key missing locally is pulled from the configured
//! remote once; concurrent requests for the same key wait for that one pull.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn_remote::{RemoteConfig, TransferOptions, TrustPolicy};
use cairn_store::{Key, NoProgress, Store};

use super::{BackendError, CacheFile, Result};

/// Folder of the team cache's remote, under `STORE/serve/`.
const TEAM_DIR: &str = "team-cache";

/// One lock per name being fetched, so concurrent requests for it wait for one transfer.
#[derive(Default)]
struct Inflight(Mutex<HashMap<String, Arc<Mutex<()>>>>);

impl Inflight {
    /// Runs `f` while holding the lock of `name`; other callers for `name` wait meanwhile.
    fn run<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        let lock = self
            .0
            .lock()
            .expect("inflight map")
            .entry(name.to_string())
            .or_default()
            .clone();
        let out = {
            let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
            f()
        };
        let mut map = self.0.lock().expect("inflight map");
        // Drop the entry once nobody else holds a handle to it.
        if Arc::strong_count(&lock) <= 2 {
            map.remove(name);
        }
        out
    }
}

fn remote_err(e: cairn_remote::RemoteError) -> BackendError {
    BackendError::Remote(e.to_string())
}

/// A configured remote the server pulls missing keys from.
pub(crate) struct Fallback {
    remote: cairn_remote::Remote,
    trust: TrustPolicy,
    runtime: tokio::runtime::Handle,
    inflight: Inflight,
}

impl Fallback {
    pub(crate) fn new(
        name: &str,
        cfg: &RemoteConfig,
        opts: &TransferOptions,
        trust: TrustPolicy,
        runtime: tokio::runtime::Handle,
    ) -> Result<Fallback> {
        Ok(Fallback {
            remote: cairn_remote::Remote::open(name, cfg, opts).map_err(remote_err)?,
            trust,
            runtime,
            inflight: Inflight::default(),
        })
    }

    /// Pulls `key` if the local store lacks it and the remote has it; true if it is now bound.
    pub(crate) fn pull(&self, store: &Store, key: &Key) -> Result<bool> {
        self.inflight.run(key.as_str(), || {
            match store.record(key) {
                Ok(_) => return Ok(true), // another request pulled it meanwhile
                Err(cairn_store::Error::UnknownKey(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let found = self
                .runtime
                .block_on(cairn_remote::fetch_record(&self.remote, key))
                .map_err(remote_err)?;
            if found.is_none() {
                return Ok(false);
            }
            let summary = self
                .runtime
                .block_on(cairn_remote::pull(
                    store,
                    &self.remote,
                    std::slice::from_ref(key),
                    &self.trust,
                    &NoProgress,
                ))
                .map_err(remote_err)?;
            tracing::info!(
                "pulled {key} from {} ({} objects, {} bytes)",
                self.remote.url(),
                summary.objects_received,
                summary.bytes_received
            );
            Ok(true)
        })
    }
}

/// The team cache's `file://` remote.
pub(crate) struct TeamCache {
    dir: PathBuf,
    remote: cairn_remote::Remote,
    runtime: tokio::runtime::Handle,
    inflight: Inflight,
}

/// What a team-cache path names.
#[derive(Debug, PartialEq, Eq)]
enum CachePath {
    /// `cairn-remote.json`.
    Layout,
    /// `keys/<key>.key`.
    Record(Key),
    /// A pack, pack index or standalone blob: served if present.
    Object,
}

/// Parses a path of the remote layout; anything else (`..`, other names) is `None`.
fn parse_path(path: &str) -> Option<CachePath> {
    if path == cairn_remote::LAYOUT_FILE {
        return Some(CachePath::Layout);
    }
    if let Some(k) = path.strip_prefix("keys/") {
        let key = Key::new(k.strip_suffix(".key")?).ok()?;
        if key.as_str().starts_with(crate::names::RESERVED_PREFIX) {
            return None;
        }
        return Some(CachePath::Record(key));
    }
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = path.split('/').collect();
    let [top, fan, file] = parts.as_slice() else {
        return None;
    };
    let (stem, ext) = file.split_once('.')?;
    let ok = hex(fan, 2)
        && hex(stem, 64)
        && stem.starts_with(fan)
        && matches!(
            (*top, ext),
            ("packs", "pack") | ("packs", "idx") | ("blobs", "zst")
        );
    ok.then_some(CachePath::Object)
}

impl TeamCache {
    pub(crate) fn new(
        serve_dir: &Path,
        opts: &TransferOptions,
        runtime: tokio::runtime::Handle,
    ) -> Result<TeamCache> {
        let dir = serve_dir.join(TEAM_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackendError::Store(format!("{}: {e}", dir.display())))?;
        let cfg = RemoteConfig {
            url: format!("file://{}", dir.display()),
            ..RemoteConfig::default()
        };
        Ok(TeamCache {
            remote: cairn_remote::Remote::open("team-cache", &cfg, opts).map_err(remote_err)?,
            dir,
            runtime,
            inflight: Inflight::default(),
        })
    }

    fn present(&self, rel: &str) -> Result<Option<CacheFile>> {
        let path = self.dir.join(rel);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(CacheFile { path, len: m.len() })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::Store(format!("{}: {e}", path.display()))),
        }
    }

    /// The record the folder holds for `key`, if any.
    fn pushed(&self, key: &Key) -> Option<cairn_store::KeyRecord> {
        let bytes = std::fs::read(self.dir.join(format!("keys/{key}.key"))).ok()?;
        serde_json::from_slice::<cairn_remote::RemoteRecord>(&bytes)
            .ok()
            .map(|r| r.record)
    }

    /// Makes the folder's record of `key` match the store: push it, or delete a stale one.
    fn refresh(
        &self,
        store: &Store,
        gate: &Mutex<()>,
        fallback: Option<&Fallback>,
        key: &Key,
    ) -> Result<()> {
        let local = {
            let _g = gate.lock().unwrap_or_else(|p| p.into_inner());
            store.record(key)
        };
        let local = match local {
            Ok(r) => Some(r),
            Err(cairn_store::Error::UnknownKey(_)) => match fallback {
                Some(f) if f.pull(store, key)? => Some(store.record(key)?),
                _ => None,
            },
            Err(e) => return Err(e.into()),
        };
        let pushed = self.pushed(key);
        match local {
            Some(rec) if pushed.as_ref() != Some(&rec) => {
                let summary = self
                    .runtime
                    .block_on(cairn_remote::push(
                        store,
                        &self.remote,
                        std::slice::from_ref(key),
                        &NoProgress,
                    ))
                    .map_err(remote_err)?;
                tracing::info!(
                    "team cache: pushed {key} ({} objects, {} bytes)",
                    summary.objects_sent,
                    summary.bytes_sent
                );
            }
            Some(_) => {}
            None if pushed.is_some() => {
                let path = self.dir.join(format!("keys/{key}.key"));
                std::fs::remove_file(&path)
                    .map_err(|e| BackendError::Store(format!("{}: {e}", path.display())))?;
            }
            None => {}
        }
        Ok(())
    }

    /// The file at `path`, refreshed first if it is a key record.
    pub(crate) fn file(
        &self,
        store: &Store,
        gate: &Mutex<()>,
        fallback: Option<&Fallback>,
        path: &str,
    ) -> Result<Option<CacheFile>> {
        match parse_path(path) {
            None => Ok(None),
            Some(CachePath::Layout) => {
                if self.present(path)?.is_none() {
                    self.runtime
                        .block_on(self.remote.check_layout(true))
                        .map_err(remote_err)?;
                }
                self.present(path)
            }
            Some(CachePath::Record(key)) => {
                self.inflight
                    .run(key.as_str(), || self.refresh(store, gate, fallback, &key))?;
                self.present(path)
            }
            Some(CachePath::Object) => self.present(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_layout_paths_are_served() {
        let h = "ab".repeat(32);
        assert_eq!(parse_path("cairn-remote.json"), Some(CachePath::Layout));
        assert!(matches!(
            parse_path("keys/app/v1.key"),
            Some(CachePath::Record(_))
        ));
        assert_eq!(
            parse_path(&format!("packs/ab/{h}.pack")),
            Some(CachePath::Object)
        );
        assert_eq!(
            parse_path(&format!("blobs/ab/{h}.zst")),
            Some(CachePath::Object)
        );
        for bad in [
            "keys/../x.key".to_string(),
            "keys/_cairn-serve/pin/a/b.key".to_string(),
            format!("packs/cd/{h}.pack"),
            format!("packs/ab/{h}.zst"),
            format!("blobs/ab/../{h}.zst"),
            "/etc/passwd".to_string(),
            "".to_string(),
        ] {
            assert!(parse_path(&bad).is_none(), "{bad}");
        }
    }
}

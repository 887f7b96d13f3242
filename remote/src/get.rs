//! Resolving a key with remotes to fall back on: the local store first, else a pull from the
//! first remote that has the key, then the key resolved again under a read session. Shared by
//! `cairn get` and anything else that serves keys (a server answering from a cache).

use std::path::Path;

use cairn_store::{Key, MaterializeOptions, MaterializeStats, Progress, ReadSession, Root, Store};

use crate::config::TrustPolicy;
use crate::connection::Remote;
use crate::error::{RemoteError, Result};
use crate::pull::{PullSummary, pull};

/// A remote to fall back on, opened, with the trust policy its records must meet.
pub struct Fallback {
    /// The remote.
    pub remote: Remote,
    /// What its records must carry.
    pub trust: TrustPolicy,
}

/// The remotes to try on a local miss, in order. They are opened only on a miss (so a local
/// hit never reads the configuration); each entry is a remote's name and the remote, or why
/// it could not be opened.
pub type OpenRemotes<'a> = Box<dyn FnOnce() -> Result<Vec<(String, Result<Fallback>)>> + Send + 'a>;

/// A key or id resolved under a read session (nothing it names can be collected while the
/// session lives).
pub struct Resolved {
    /// The session it was resolved in.
    pub session: ReadSession,
    /// What it names.
    pub root: Root,
    /// The remote it was pulled from and what the pull did, if it was not in the store.
    pub pulled: Option<(String, PullSummary)>,
}

/// Resolves `spec` (a key, or a `blake3:` id) in `store`; on a local miss of a key, pulls it
/// from the first of `remotes` that has it (a remote without the key is skipped; one that fails
/// ends the search with its error, unless `soft`, when it is logged and skipped), then resolves
/// it again. A record the index holds but cannot read is an error, never a miss.
pub async fn resolve_or_pull(
    store: &Store,
    spec: &str,
    remotes: OpenRemotes<'_>,
    soft: bool,
    progress: &dyn Progress,
) -> Result<Resolved> {
    let local = resolve(store, spec).await?;
    let key = match local {
        Ok((session, root)) => {
            return Ok(Resolved {
                session,
                root,
                pulled: None,
            });
        }
        Err(key) => key,
    };
    let mut tried = Vec::new();
    for (name, opened) in remotes()? {
        tried.push(name.clone());
        let attempt = match opened {
            Ok(f) => {
                pull(
                    store,
                    &f.remote,
                    std::slice::from_ref(&key),
                    &f.trust,
                    progress,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match attempt {
            Ok(summary) => {
                let (session, root) = resolve(store, spec).await?.map_err(|_| {
                    RemoteError::Local(cairn_store::Error::UnknownKey(key.to_string()))
                })?;
                return Ok(Resolved {
                    session,
                    root,
                    pulled: Some((name, summary)),
                });
            }
            Err(RemoteError::NoSuchKey { .. }) => tracing::info!("{key}: not on remote {name}"),
            Err(e) if soft => tracing::warn!("remote {name} failed, trying the next: {e}"),
            Err(e) => return Err(e),
        }
    }
    Err(RemoteError::NotFound {
        key: key.to_string(),
        tried,
    })
}

/// Restores `spec` into `dest` as `cairn get` does: resolved locally, or pulled first (see
/// [`resolve_or_pull`]), then materialized under the same read session, as `opts` say. A
/// non-empty `dest` without `opts.force` is refused before anything is downloaded.
pub async fn get(
    store: &Store,
    spec: &str,
    dest: &Path,
    opts: &MaterializeOptions,
    remotes: OpenRemotes<'_>,
    soft: bool,
    progress: &(dyn Progress + Sync),
) -> Result<(Resolved, MaterializeStats)> {
    // The common case (a tree root into a folder) is checked before any download; a file root
    // is checked when it is written.
    if !opts.force && dest.is_dir() {
        cairn_store::check_dest_dir(dest, opts.force)?;
    }
    let resolved = resolve_or_pull(store, spec, remotes, soft, progress).await?;
    let stats = tokio::task::block_in_place(|| {
        resolved
            .session
            .materialize_with(&resolved.root, dest, opts, progress)
    })?;
    Ok((resolved, stats))
}

/// Resolves `spec` under a new read session (on the blocking pool). `Ok(Err(key))` is a local
/// miss of a key, which a remote may fill; every other failure is an error.
async fn resolve(
    store: &Store,
    spec: &str,
) -> Result<std::result::Result<(ReadSession, Root), Key>> {
    let (store, spec) = (store.clone(), spec.to_string());
    tokio::task::spawn_blocking(move || {
        let session = store.read()?;
        match session.resolve(&spec) {
            Ok(root) => Ok(Ok((session, root))),
            Err(cairn_store::Error::UnknownKey(_)) => {
                Ok(Err(Key::new(&spec).map_err(cairn_store::Error::from)?))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await
    .expect("resolve task panicked")
}

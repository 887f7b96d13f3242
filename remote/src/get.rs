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
    /// The key restored (the one asked for, or the fallback that was found); `None` for an id.
    pub key: Option<Key>,
    /// What it names.
    pub root: Root,
    /// The remote it was pulled from and what the pull did, if it was not in the store.
    pub pulled: Option<(String, PullSummary)>,
}

/// Resolves `spec` (a key, or a `blake3:` id) in `store`; on a local miss of a key, pulls it
/// from the first of `remotes` that has it (a remote without the key is skipped; one that fails
/// ends the search with its error, unless `soft`, when it is logged and skipped), then resolves
/// it again. A record the index holds but cannot read is an error, never a miss.
///
/// If no remote has the key either, each of `fallback` (key prefixes, in order) is tried: the
/// newest local key (by creation) starting with it, else the newest such key on each remote
/// (listing only `keys/<prefix>` there, newest by the object store's time), as `actions/cache`
/// restore keys do. [`Resolved::key`] says which key was restored.
pub async fn resolve_or_pull(
    store: &Store,
    spec: &str,
    remotes: OpenRemotes<'_>,
    soft: bool,
    fallback: &[String],
    progress: &dyn Progress,
) -> Result<Resolved> {
    let key = match resolve(store, spec).await? {
        Ok((session, root)) => {
            return Ok(Resolved {
                key: Key::new(spec).ok(),
                session,
                root,
                pulled: None,
            });
        }
        Err(key) => key,
    };
    let mut tried = Vec::new();
    let mut usable = Vec::new();
    for (name, opened) in remotes()? {
        tried.push(name.clone());
        match opened {
            Ok(f) => usable.push((name, f)),
            Err(e) if soft => tracing::warn!("remote {name} failed, trying the next: {e}"),
            Err(e) => return Err(e),
        }
        let Some((name, f)) = usable.last() else {
            continue;
        };
        if let Some(r) = pull_one(store, &key, name, f, soft, progress).await? {
            return Ok(r);
        }
    }
    for prefix in fallback {
        if let Some(k) = newest_local(store, prefix).await?
            && let Ok((session, root)) = resolve(store, k.as_str()).await?
        {
            tracing::info!("{key}: restoring {k}, the newest local key under {prefix:?}");
            return Ok(Resolved {
                session,
                key: Some(k),
                root,
                pulled: None,
            });
        }
        for (name, f) in &usable {
            let newest = match newest_remote(&f.remote, prefix).await {
                Ok(n) => n,
                Err(e) if soft => {
                    tracing::warn!("remote {name} failed, trying the next: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(k) = newest else { continue };
            if let Some(r) = pull_one(store, &k, name, f, soft, progress).await? {
                tracing::info!("{key}: restored {k} from {name}, the newest under {prefix:?}");
                return Ok(r);
            }
        }
    }
    Err(RemoteError::NotFound {
        key: key.to_string(),
        tried,
    })
}

/// Pulls `key` from remote `name` and resolves it; `None` if the remote lacks it (or failed,
/// when `soft`).
async fn pull_one(
    store: &Store,
    key: &Key,
    name: &str,
    f: &Fallback,
    soft: bool,
    progress: &dyn Progress,
) -> Result<Option<Resolved>> {
    match pull(
        store,
        &f.remote,
        std::slice::from_ref(key),
        &f.trust,
        progress,
    )
    .await
    {
        Ok(summary) => {
            let (session, root) = resolve(store, key.as_str())
                .await?
                .map_err(|_| RemoteError::Local(cairn_store::Error::UnknownKey(key.to_string())))?;
            Ok(Some(Resolved {
                session,
                key: Some(key.clone()),
                root,
                pulled: Some((name.to_string(), summary)),
            }))
        }
        Err(RemoteError::NoSuchKey { .. }) => {
            tracing::info!("{key}: not on remote {name}");
            Ok(None)
        }
        Err(e) if soft => {
            tracing::warn!("remote {name} failed, trying the next: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The newest local key (by creation, then name) starting with `prefix`.
async fn newest_local(store: &Store, prefix: &str) -> Result<Option<Key>> {
    let (s, p) = (store.clone(), prefix.to_string());
    let recs = tokio::task::spawn_blocking(move || s.keys(&p))
        .await
        .expect("keys task panicked")?;
    Ok(recs
        .into_iter()
        .max_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)))
        .map(|r| r.key))
}

/// The newest key on `remote` starting with `prefix`, by its record's time on the remote.
pub async fn newest_remote(remote: &Remote, prefix: &str) -> Result<Option<Key>> {
    let listed = remote.list(&format!("keys/{prefix}")).await?;
    Ok(listed
        .iter()
        .filter_map(|m| {
            let rel = remote.relative(&m.location);
            let name = rel.strip_prefix("keys/")?.strip_suffix(".key")?;
            Some((m.last_modified, Key::new(name).ok()?))
        })
        .max()
        .map(|(_, k)| k))
}

/// Restores `spec` into `dest` as `cairn get` does: resolved locally, or pulled first (see
/// [`resolve_or_pull`]), then materialized under the same read session, as `opts` say. A
/// non-empty `dest` without `opts.force` is refused before anything is downloaded.
#[allow(clippy::too_many_arguments)]
pub async fn get(
    store: &Store,
    spec: &str,
    dest: &Path,
    opts: &MaterializeOptions,
    remotes: OpenRemotes<'_>,
    soft: bool,
    fallback: &[String],
    progress: &(dyn Progress + Sync),
) -> Result<(Resolved, MaterializeStats)> {
    // The common case (a tree root into a folder) is checked before any download; a file root
    // is checked when it is written.
    if !opts.force && dest.is_dir() {
        cairn_store::check_dest_dir(dest, opts.force)?;
    }
    let resolved = resolve_or_pull(store, spec, remotes, soft, fallback, progress).await?;
    let stats = tokio::task::block_in_place(|| {
        let stats = resolved
            .session
            .materialize_with(&resolved.root, dest, opts, progress)?;
        if let Some(k) = &resolved.key
            && let Err(e) = resolved.session.used(k)
        {
            tracing::warn!("{k}: its use was not recorded: {e}");
        }
        Ok::<_, cairn_store::Error>(stats)
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

//! [`StoreBackend`]: the [`Backend`] over a local cairn store.
//!
//! - A repository's content is what its image keys' layout trees hold (`repo:tag`,
//!   `repo@digest`, see [`crate::names`]) plus its pins: blobs pushed to it that no image
//!   references yet, each bound to a key `_cairn-serve/pin/<repo>/<digest>` whose root is the
//!   blob. A pin keeps the blob through `gc` (which keeps whatever a key reaches) and is
//!   removed once older than the grace period ([`Backend::expire_pins`]); by then the image
//!   that needs the blob has bound it, or it was abandoned.
//! - Each blob's sha256 is recorded as an alias of its blob (the store's `aliases`), in the
//!   transaction that records the blob.
//! - Every store call that opens the index runs under one in-process gate: the index is opened
//!   per transaction with an exclusive lock, and a second open from this process would only
//!   spin in the store's retry loop.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_oci::{Alg, OciDigest};
use cairn_store::blobs::{Encoding, SMALL_BLOB_MAX};
use cairn_store::{
    Id, Import, ImportSession, Key, KeyRecord, ReadSession, Root, StagedBlob, Store,
};
use sha2::Digest as _;

use super::layout::{self, Layout};
use super::team::TeamCache;
use super::{
    Backend, BackendError, BlobInfo, CacheFile, CompletedUpload, ManifestHit, PutManifest, Result,
};
use crate::manifest::{Descriptor, MAX_MANIFEST_BYTES, Manifest};
use crate::names::{self, Reference, Repo};

/// Label on keys bound by a manifest push (`cairn.oci.source`'s value).
pub const SOURCE_REGISTRY: &str = "registry";
/// Label marking a pin key.
pub const LABEL_PIN: &str = "cairn.serve.pin";
/// Layout trees kept parsed in memory (they are content-addressed, so never stale).
const LAYOUT_CACHE_ENTRIES: usize = 4096;
/// Bytes of verified manifests kept in memory.
const DOCUMENT_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// How long a key lookup (a record, or the keys of a repository) is reused: every read of the
/// index rewrites its header (the file's mtime moves on reads too), so freshness cannot be
/// told from the file; a short time bound keeps manifest GETs off the index under load. The
/// server's own writes clear the cache at once; other processes' binds and removals are seen
/// within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Key lookups kept at most (the cache is cleared when full).
const KEY_CACHE_ENTRIES: usize = 4096;
/// How deep an index may nest indexes before a push is refused (real images use one level).
const MAX_INDEX_DEPTH: usize = 8;
/// Magic numbers of gzip and zstd streams: a pushed blob starting with one is stored as it is
/// (renamed into place, never recompressed); others are stored as the store stores any file.
const COMPRESSED_MAGICS: [&[u8]; 2] = [&[0x1f, 0x8b], &[0x28, 0xb5, 0x2f, 0xfd]];

/// Settings of a [`StoreBackend`].
#[derive(Clone, Debug, Default)]
pub struct StoreBackendOptions {
    /// A configured remote to fall back to on a local miss: (name, config, signature policy).
    pub fallback: Option<(
        String,
        cairn_remote::RemoteConfig,
        cairn_remote::TrustPolicy,
    )>,
    /// Transfer settings for remotes.
    pub transfer: cairn_remote::TransferOptions,
}

/// A bounded map that forgets everything when full (simple, and its hit rate is all that
/// suffers from an occasional reset).
struct Bounded<V> {
    map: HashMap<Id, V>,
    weight: usize,
    max: usize,
}

impl<V: Clone> Bounded<V> {
    fn new(max: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            weight: 0,
            max,
        }
    }

    fn get(&self, id: &Id) -> Option<V> {
        self.map.get(id).cloned()
    }

    fn insert(&mut self, id: Id, v: V, weight: usize) {
        if self.weight + weight > self.max {
            self.map.clear();
            self.weight = 0;
        }
        self.weight += weight;
        self.map.insert(id, v);
    }
}

/// A blob file's (device, inode, length, mtime s/ns, ctime s/ns): any change to the file moves
/// its ctime, so a file with the stamp it had when it was checked whole still holds what was
/// checked.
type FileStamp = (u64, u64, u64, i64, i64, i64, i64);
/// Blob files remembered as checked whole.
const VERIFIED_ENTRIES: usize = 65536;

/// Recent key lookups: by key, its record; by prefix, the records under it.
#[derive(Default)]
struct KeyCache {
    records: HashMap<String, (std::time::Instant, Option<KeyRecord>)>,
    prefixes: HashMap<String, (std::time::Instant, Arc<Vec<KeyRecord>>)>,
}

/// The backend over a local store.
pub struct StoreBackend {
    keys: Mutex<KeyCache>,
    verified: Mutex<Bounded<FileStamp>>,
    store: Store,
    gate: Mutex<()>,
    layouts: Mutex<Bounded<Arc<Layout>>>,
    documents: Mutex<Bounded<Bytes>>,
    team: TeamCache,
    fallback: Option<super::team::Fallback>,
    uploads: PathBuf,
}

/// Everything a repository holds, read once for a push.
#[derive(Default)]
struct RepoView {
    blobs: HashMap<OciDigest, (u64, Id)>,
    layouts: Vec<(Reference, Arc<Layout>)>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sha256(bytes: &[u8]) -> OciDigest {
    OciDigest::from_parts(Alg::Sha256, &hex::encode(sha2::Sha256::digest(bytes)))
        .expect("hex of a sha256")
}

impl StoreBackend {
    /// A backend over `store`; `runtime` runs remote transfers.
    pub fn new(
        store: Store,
        opts: StoreBackendOptions,
        runtime: tokio::runtime::Handle,
    ) -> Result<StoreBackend> {
        let serve_dir = store.dir().join("serve");
        let uploads = serve_dir.join("uploads");
        std::fs::create_dir_all(&uploads)
            .map_err(|e| BackendError::Store(format!("{}: {e}", uploads.display())))?;
        let team = TeamCache::new(&serve_dir, &opts.transfer, runtime.clone())?;
        let fallback = match opts.fallback {
            Some((name, cfg, trust)) => Some(super::team::Fallback::new(
                &name,
                &cfg,
                &opts.transfer,
                trust,
                runtime,
            )?),
            None => None,
        };
        Ok(StoreBackend {
            store,
            gate: Mutex::new(()),
            layouts: Mutex::new(Bounded::new(LAYOUT_CACHE_ENTRIES)),
            verified: Mutex::new(Bounded::new(VERIFIED_ENTRIES)),
            keys: Mutex::new(KeyCache::default()),
            documents: Mutex::new(Bounded::new(DOCUMENT_CACHE_BYTES)),
            team,
            fallback,
            uploads,
        })
    }

    /// The identity and times of blob `id`'s own file, if it has one (not a packed blob).
    fn stamp(&self, id: &Id) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let (path, _) = self.store.read().ok()?.blob_file(id).ok()?;
        let m = std::fs::metadata(path).ok()?;
        Some((
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ))
    }

    /// Runs `f` (which opens the index) alone among this process's index users.
    fn indexed<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        let _g = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        f(&self.store)
    }

    /// An import session: the gc lock, held from before a repository is read until what a push
    /// binds is committed.
    fn session(&self) -> Result<ImportSession> {
        Ok(self.store.import()?)
    }

    /// Runs `f` in a read session (the gc lock, shared) alone among this process's index users.
    fn reading<T>(&self, f: impl FnOnce(&ReadSession) -> Result<T>) -> Result<T> {
        let session = self.store.read()?;
        let _g = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        f(&session)
    }

    /// The record of `key`, if bound.
    fn record(&self, key: &Key) -> Result<Option<KeyRecord>> {
        if let Some((at, r)) = self
            .keys
            .lock()
            .expect("key cache")
            .records
            .get(key.as_str())
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(r.clone());
        }
        let at = std::time::Instant::now();
        let r = match self.indexed(|s| s.record(key)) {
            Ok(r) => Some(r),
            Err(cairn_store::Error::UnknownKey(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut c = self.keys.lock().expect("key cache");
        if c.records.len() >= KEY_CACHE_ENTRIES {
            c.records.clear();
        }
        c.records.insert(key.to_string(), (at, r.clone()));
        Ok(r)
    }

    /// The records of every key starting with `prefix` (cached for [`KEY_CACHE_TTL`]).
    fn keys_under(&self, prefix: &str) -> Result<Arc<Vec<KeyRecord>>> {
        if let Some((at, r)) = self.keys.lock().expect("key cache").prefixes.get(prefix)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(r.clone());
        }
        let at = std::time::Instant::now();
        let r = Arc::new(self.indexed(|s| s.keys(prefix))?);
        let mut c = self.keys.lock().expect("key cache");
        if c.prefixes.len() >= KEY_CACHE_ENTRIES {
            c.prefixes.clear();
        }
        c.prefixes.insert(prefix.to_string(), (at, r.clone()));
        Ok(r)
    }

    /// Forgets every cached key lookup: after this server bound or removed a key.
    fn keys_changed(&self) {
        *self.keys.lock().expect("key cache") = KeyCache::default();
    }

    /// The parsed layout tree `root` (cached), or `None` if it is not a layout.
    fn layout(&self, root: &Root) -> Result<Option<Arc<Layout>>> {
        let id = root.id();
        if let Some(l) = self.layouts.lock().expect("cache lock").get(&id) {
            return Ok(Some(l));
        }
        let Some(l) = self.reading(|s| layout::read(s, root))? else {
            return Ok(None);
        };
        let l = Arc::new(l);
        self.layouts
            .lock()
            .expect("cache lock")
            .insert(id, l.clone(), 1);
        Ok(Some(l))
    }

    /// A small document's bytes (a manifest), verified against its blob id and `digest`.
    fn document(&self, id: &Id, size: u64, digest: &OciDigest) -> Result<Bytes> {
        if let Some(b) = self.documents.lock().expect("cache lock").get(id) {
            return Ok(b);
        }
        let bytes = self.reading(|s| layout::read_blob(s, id, size, MAX_MANIFEST_BYTES))?;
        if digest.alg == Alg::Sha256 && sha256(&bytes) != *digest {
            return Err(BackendError::Corrupt(format!(
                "blob {id} is recorded as {digest} but hashes to {}",
                sha256(&bytes)
            )));
        }
        let bytes = Bytes::from(bytes);
        self.documents
            .lock()
            .expect("cache lock")
            .insert(*id, bytes.clone(), bytes.len());
        Ok(bytes)
    }

    /// The image keys of `repo` and their layouts.
    fn images(&self, repo: &Repo) -> Result<Vec<(Reference, Arc<Layout>)>> {
        let records = self.keys_under(repo.as_str())?;
        let mut out = Vec::new();
        for rec in records.iter() {
            let Some((r, reference)) = names::parse_image_key(rec.key.as_str()) else {
                continue;
            };
            if r != *repo {
                continue;
            }
            if let Some(l) = self.layout(&rec.root)? {
                out.push((reference, l));
            }
        }
        Ok(out)
    }

    /// The pinned blob `digest` of `repo`: (size, id).
    fn pinned(&self, repo: &Repo, digest: &OciDigest) -> Result<Option<(u64, Id)>> {
        Ok(self
            .record(&names::pin_key(repo, digest))?
            .and_then(|r| match r.root {
                Root::File { id, .. } => Some((r.size, id)),
                Root::Tree { .. } => None,
            }))
    }

    /// Blob `digest` of `repo`: pinned, or in one of its images.
    fn find(&self, repo: &Repo, digest: &OciDigest) -> Result<Option<(u64, Id)>> {
        if let Some(hit) = self.pinned(repo, digest)? {
            return Ok(Some(hit));
        }
        Ok(self
            .images(repo)?
            .iter()
            .find_map(|(_, l)| l.blobs.get(digest).copied()))
    }

    /// Everything `repo` holds, for checking a manifest push.
    fn view(&self, repo: &Repo) -> Result<RepoView> {
        let mut view = RepoView {
            layouts: self.images(repo)?,
            ..RepoView::default()
        };
        for (_, l) in &view.layouts {
            view.blobs
                .extend(l.blobs.iter().map(|(d, v)| (d.clone(), *v)));
        }
        let prefix = format!("{}{repo}/", names::PIN_PREFIX);
        for rec in self.keys_under(&prefix)?.iter() {
            if let (Some((r, d)), Root::File { id, .. }) =
                (names::parse_pin_key(rec.key.as_str()), rec.root)
                && r == *repo
            {
                view.blobs.insert(d, (rec.size, id));
            }
        }
        Ok(view)
    }

    /// Picks the manifest a tag key's layout serves: its only `index.json` entry, or the one
    /// entry named by the tag (`org.opencontainers.image.ref.name` = `tag` or `repo:tag`).
    fn tagged_entry<'a>(layout: &'a Layout, repo: &Repo, tag: &str) -> Option<&'a Descriptor> {
        if layout.entries.len() == 1 {
            return layout.entries.first();
        }
        let full = format!("{repo}:{tag}");
        let mut named = layout.entries.iter().filter(|d| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(cairn_oci::REF_NAME))
                .is_some_and(|n| *n == tag || *n == full || n.ends_with(&format!(":{tag}")))
        });
        match (named.next(), named.next()) {
            (Some(d), None) => Some(d),
            _ => None,
        }
    }

    fn hit(&self, digest: OciDigest, size: u64, id: Id, declared: &str) -> Result<ManifestHit> {
        let bytes = self.document(&id, size, &digest)?;
        // The document's own mediaType is what it is served as; the descriptor's type (or,
        // for a document without one, the shape of its fields) otherwise.
        let declared = (!declared.is_empty()).then_some(declared);
        let media_type = Manifest::parse(&bytes, declared)
            .map(|m| m.media_type)
            .map_err(|e| BackendError::ManifestUnknown(format!("{digest} ({e})")))?;
        Ok(ManifestHit {
            digest,
            media_type,
            bytes,
        })
    }

    /// A miss by tag or digest: with a fallback remote, pull the image key once and retry.
    fn pull_missing(&self, key: &Key) -> Result<bool> {
        let pulled = match &self.fallback {
            Some(f) => f.pull(&self.store, key)?,
            None => false,
        };
        if pulled {
            self.keys_changed();
        }
        Ok(pulled)
    }

    fn manifest_local(&self, repo: &Repo, reference: &Reference) -> Result<Option<ManifestHit>> {
        let Some(key) = names::image_key(repo, reference) else {
            return Ok(None);
        };
        if let Some(rec) = self.record(&key)?
            && let Some(l) = self.layout(&rec.root)?
        {
            let entry = match reference {
                Reference::Tag(t) => Self::tagged_entry(&l, repo, t),
                Reference::Digest(d) => {
                    let want = d.to_string();
                    l.entries.iter().find(|e| e.digest == want)
                }
            };
            if let Some(e) = entry
                && let Ok(d) = OciDigest::parse(&e.digest)
                && let Some((size, id)) = l.blobs.get(&d).copied()
            {
                return self.hit(d, size, id, &e.media_type).map(Some);
            }
            if let Reference::Tag(t) = reference {
                tracing::warn!(
                    "key {key}: its layout has {} index entries and none is named {t:?}",
                    l.entries.len()
                );
                return Ok(None);
            }
        }
        let Reference::Digest(d) = reference else {
            return Ok(None);
        };
        match self.find(repo, d)? {
            Some((size, id)) => self.hit(d.clone(), size, id, "").map(Some),
            None => Ok(None),
        }
    }

    /// Adds to `out` everything manifest `desc` reaches in `view`, the manifest included.
    fn closure(
        &self,
        view: &RepoView,
        desc: &Descriptor,
        depth: usize,
        out: &mut BTreeMap<OciDigest, (u64, Id)>,
    ) -> Result<()> {
        let d = OciDigest::parse(&desc.digest).map_err(BackendError::ManifestInvalid)?;
        let Some((size, id)) = view.blobs.get(&d).copied() else {
            return Err(BackendError::ManifestBlobUnknown(desc.digest.clone()));
        };
        if size != desc.size {
            return Err(BackendError::ManifestInvalid(format!(
                "descriptor of {} says {} bytes; the repository's blob is {size}",
                desc.digest, desc.size
            )));
        }
        if out.insert(d.clone(), (size, id)).is_some() {
            return Ok(());
        }
        let is_manifest = crate::manifest::MANIFEST_TYPES.contains(&desc.media_type.as_str());
        if !is_manifest {
            return Ok(());
        }
        if depth > MAX_INDEX_DEPTH {
            return Err(BackendError::ManifestInvalid(format!(
                "indexes nested more than {MAX_INDEX_DEPTH} deep at {}",
                desc.digest
            )));
        }
        let bytes = self.document(&id, size, &d)?;
        let m = Manifest::parse(&bytes, Some(&desc.media_type))
            .map_err(|e| BackendError::ManifestInvalid(format!("{}: {e}", desc.digest)))?;
        for c in m.blobs.iter().chain(&m.children) {
            self.closure(view, c, depth + 1, out)?;
        }
        Ok(())
    }

    fn pin_record(&self, repo: &Repo, digest: &OciDigest, id: Id, size: u64) -> KeyRecord {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_PIN.to_string(), "1".to_string());
        KeyRecord {
            key: names::pin_key(repo, digest),
            root: Root::File {
                id,
                executable: false,
            },
            created: now(),
            size,
            files: 1,
            labels,
            attachments: BTreeMap::new(),
            signatures: Vec::new(),
        }
    }

    /// Binds a pin of `digest` (blob `id`, already in the store or in `blobs`) in `repo`.
    fn bind_pin(
        &self,
        repo: &Repo,
        digest: &OciDigest,
        id: Id,
        size: u64,
        blobs: Vec<StagedBlob>,
        session: &ImportSession,
    ) -> Result<()> {
        let rec = self.pin_record(repo, digest, id, size);
        let mut import = Import {
            blobs,
            bind: Some(rec),
            ..Import::default()
        };
        import.alias(digest.to_string(), id);
        let r = self.indexed(|_| session.commit(import));
        self.keys_changed();
        r?;
        Ok(())
    }

    /// Stages small content (a manifest, `index.json`) as a blob, returning it and its id.
    fn stage_small(
        &self,
        session: &ImportSession,
        bytes: &[u8],
        origin: &str,
    ) -> Result<StagedBlob> {
        Ok(session.stage_stream(bytes, bytes.len() as u64, None, origin)?)
    }
}

impl Backend for StoreBackend {
    fn manifest(&self, repo: &Repo, reference: &Reference) -> Result<ManifestHit> {
        if let Some(hit) = self.manifest_local(repo, reference)? {
            return Ok(hit);
        }
        if let Some(key) = names::image_key(repo, reference)
            && self.pull_missing(&key)?
            && let Some(hit) = self.manifest_local(repo, reference)?
        {
            return Ok(hit);
        }
        Err(BackendError::ManifestUnknown(format!("{repo}:{reference}")))
    }

    fn blob(&self, repo: &Repo, digest: &OciDigest) -> Result<BlobInfo> {
        match self.find(repo, digest)? {
            Some((size, id)) => Ok(BlobInfo {
                digest: digest.clone(),
                size,
                id,
            }),
            None => Err(BackendError::BlobUnknown(digest.to_string())),
        }
    }

    fn open_blob(&self, blob: &BlobInfo) -> Result<(Box<dyn Read + Send>, bool)> {
        let verified = match (
            self.stamp(&blob.id),
            self.verified.lock().expect("cache").get(&blob.id),
        ) {
            (Some(now), Some(then)) => now == then,
            _ => false,
        };
        let r = self.reading(|s| Ok(s.open_blob(&blob.id, Some(blob.size), None)?))?;
        Ok((Box::new(r), verified))
    }

    fn verify_blob(&self, blob: &BlobInfo) -> Result<()> {
        let before = self.stamp(&blob.id);
        let mut r = self.reading(|s| Ok(s.open_blob(&blob.id, Some(blob.size), None)?))?;
        std::io::copy(&mut r, &mut std::io::sink())
            .map_err(|e| BackendError::Corrupt(format!("blob {}: {e}", blob.id)))?;
        if let Some(stamp) = before
            && self.stamp(&blob.id) == Some(stamp)
        {
            self.verified
                .lock()
                .expect("cache")
                .insert(blob.id, stamp, 1);
        }
        Ok(())
    }

    fn tags(&self, repo: &Repo) -> Result<Option<Vec<String>>> {
        let images = self.images(repo)?;
        if images.is_empty() {
            return Ok(None);
        }
        let mut tags: Vec<String> = images
            .into_iter()
            .filter_map(|(r, _)| match r {
                Reference::Tag(t) => Some(t),
                Reference::Digest(_) => None,
            })
            .collect();
        tags.sort();
        Ok(Some(tags))
    }

    fn repositories(&self) -> Result<Vec<String>> {
        let mut repos: Vec<String> = self
            .indexed(|s| s.keys(""))?
            .iter()
            .filter_map(|r| names::parse_image_key(r.key.as_str()))
            .map(|(r, _)| r.as_str().to_string())
            .collect();
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    fn referrers(&self, repo: &Repo, digest: &OciDigest) -> Result<Vec<Descriptor>> {
        let want = digest.to_string();
        let mut out: BTreeMap<String, Descriptor> = BTreeMap::new();
        for (_, l) in self.images(repo)? {
            for e in &l.entries {
                let Ok(d) = OciDigest::parse(&e.digest) else {
                    continue;
                };
                let Some((size, id)) = l.blobs.get(&d).copied() else {
                    continue;
                };
                if out.contains_key(&e.digest) || size as usize > MAX_MANIFEST_BYTES {
                    continue;
                }
                let bytes = self.document(&id, size, &d)?;
                let Ok(m) = Manifest::parse(&bytes, Some(&e.media_type)) else {
                    continue;
                };
                if m.subject.as_ref().is_some_and(|s| s.digest == want) {
                    out.insert(
                        e.digest.clone(),
                        Descriptor {
                            media_type: m.media_type,
                            digest: e.digest.clone(),
                            size,
                            artifact_type: m.artifact_type,
                            annotations: m.annotations,
                        },
                    );
                }
            }
        }
        Ok(out.into_values().collect())
    }

    fn commit_upload(&self, repo: &Repo, upload: CompletedUpload) -> Result<()> {
        let id = Id(upload.blake3);
        let session = self.session()?;
        let present = self
            .indexed(|_| session.reader().has_blobs(&[id]))?
            .contains(&id);
        let mut blobs = Vec::new();
        if !present {
            let compressed = COMPRESSED_MAGICS.iter().any(|m| upload.head.starts_with(m));
            if upload.size > SMALL_BLOB_MAX && compressed {
                // Already compressed: adopt the upload file as the raw blob (one rename).
                blobs.push(session.stage_file(id, upload.size, Encoding::Raw, upload.file)?);
            } else {
                let origin = upload.digest.to_string();
                let f = std::fs::File::open(&upload.file)
                    .map_err(|e| BackendError::Store(format!("{}: {e}", upload.file.display())))?;
                let staged = session
                    .stage_stream(f, upload.size, Some((id, upload.size)), &origin)
                    .map_err(|e| {
                        BackendError::Corrupt(format!(
                            "upload of {origin} changed on disk before it was stored: {e}"
                        ))
                    })?;
                blobs.push(staged);
            }
        }
        self.bind_pin(repo, &upload.digest, id, upload.size, blobs, &session)?;
        // The content was hashed as it arrived and the store wrote exactly it: its file counts
        // as checked whole.
        if let Some(stamp) = self.stamp(&id) {
            self.verified.lock().expect("cache").insert(id, stamp, 1);
        }
        Ok(())
    }

    fn mount(&self, repo: &Repo, from: &Repo, digest: &OciDigest) -> Result<bool> {
        let session = self.session()?;
        self.keys_changed();
        let Some((size, id)) = self.find(from, digest)? else {
            return Ok(false);
        };
        self.bind_pin(repo, digest, id, size, Vec::new(), &session)?;
        Ok(true)
    }

    fn put_manifest(
        &self,
        repo: &Repo,
        reference: &Reference,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<PutManifest> {
        let m = Manifest::parse(bytes, content_type)
            .map_err(|e| BackendError::ManifestInvalid(e.to_string()))?;
        let digest = sha256(bytes);
        if let Reference::Digest(d) = reference
            && *d != digest
        {
            return Err(BackendError::DigestMismatch(format!(
                "manifest pushed as {d} hashes to {digest}"
            )));
        }
        let key = names::image_key(repo, reference)
            .ok_or_else(|| BackendError::NameInvalid(format!("{repo}:{reference}")))?;
        // The gc lock from before the repository is read until the key is bound: nothing the
        // manifest reaches can be collected in between.
        let session = self.session()?;
        // Checked against the index as it is now, not against lookups cached for reads.
        self.keys_changed();
        let view = self.view(repo)?;
        let mut closure = BTreeMap::new();
        for c in m.blobs.iter().chain(&m.children) {
            self.closure(&view, c, 1, &mut closure)?;
        }
        // The subject need not exist (referrers may be pushed first); when it does, the layout
        // holds it, so the stored image walks completely.
        if let Some(s) = &m.subject {
            let mut with_subject = closure.clone();
            if self.closure(&view, s, 1, &mut with_subject).is_ok() {
                closure = with_subject;
            }
        }
        let staged_manifest = self.stage_small(&session, bytes, &digest.to_string())?;
        let manifest_id = staged_manifest.id();
        closure.insert(digest.clone(), (bytes.len() as u64, manifest_id));
        let desc = Descriptor {
            media_type: m.media_type.clone(),
            digest: digest.to_string(),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: None,
        };
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        let index = layout::index_json(&desc, tag);
        let index_blob = self.stage_small(&session, &index, "index.json")?;
        let oci_layout = self.stage_small(&session, layout::OCI_LAYOUT, "oci-layout")?;
        let new = layout::build(
            &closure,
            (index.len() as u64, index_blob.id()),
            (layout::OCI_LAYOUT.len() as u64, oci_layout.id()),
        );
        let mut labels = BTreeMap::new();
        labels.insert(cairn_oci::LABEL_OCI.to_string(), "1".to_string());
        labels.insert(
            cairn_oci::LABEL_SOURCE.to_string(),
            SOURCE_REGISTRY.to_string(),
        );
        let rec = KeyRecord {
            key: key.clone(),
            root: Root::Tree { id: new.root },
            created: now(),
            size: new.size,
            files: new.files,
            labels,
            attachments: BTreeMap::new(),
            signatures: Vec::new(),
        };
        let mut import = Import {
            blobs: vec![staged_manifest, index_blob, oci_layout],
            trees: new.trees,
            bind: Some(rec),
            ..Import::default()
        };
        import.alias(digest.to_string(), manifest_id);
        let bound = self.indexed(|_| session.commit(import));
        self.keys_changed();
        match bound {
            Ok(_) => {}
            Err(cairn_store::Error::UnknownObject(id)) => {
                return Err(BackendError::ManifestBlobUnknown(format!(
                    "blob {id} (collected while the manifest was checked)"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!("bound {key} to manifest {digest} ({} blobs)", closure.len());
        Ok(PutManifest {
            digest,
            subject: m.subject.map(|s| s.digest),
            key: key.to_string(),
        })
    }

    fn delete_manifest(&self, repo: &Repo, reference: &Reference) -> Result<Vec<String>> {
        let mut doomed = Vec::new();
        match reference {
            Reference::Tag(_) => {
                if let Some(k) = names::image_key(repo, reference) {
                    doomed.push(k);
                }
            }
            Reference::Digest(d) => {
                let want = d.to_string();
                for rec in self.indexed(|s| s.keys(repo.as_str()))? {
                    let Some((r, _)) = names::parse_image_key(rec.key.as_str()) else {
                        continue;
                    };
                    if r != *repo {
                        continue;
                    }
                    if let Some(l) = self.layout(&rec.root)?
                        && l.entries.len() == 1
                        && l.entries[0].digest == want
                    {
                        doomed.push(rec.key.clone());
                    }
                }
            }
        }
        let mut removed = Vec::new();
        for k in doomed {
            let r = self.indexed(|s| s.remove_key(&k));
            self.keys_changed();
            match r {
                Ok(_) => removed.push(k.to_string()),
                Err(cairn_store::Error::UnknownKey(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    fn expire_pins(&self, grace: Duration) -> Result<usize> {
        let cutoff = now().saturating_sub(grace.as_secs());
        let old: Vec<Key> = self
            .indexed(|s| s.keys(names::PIN_PREFIX))?
            .into_iter()
            .filter(|r| r.created < cutoff || grace.is_zero())
            .map(|r| r.key)
            .collect();
        let mut n = 0;
        for k in old {
            let r = self.indexed(|s| s.remove_key(&k));
            self.keys_changed();
            match r {
                Ok(_) => n += 1,
                Err(cairn_store::Error::UnknownKey(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(n)
    }

    fn uploads_dir(&self) -> PathBuf {
        self.uploads.clone()
    }

    fn cache_file(&self, path: &str) -> Result<Option<CacheFile>> {
        self.team
            .file(&self.store, &self.gate, self.fallback.as_ref(), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_names_the_only_entry_or_the_one_named() {
        let d = |n: char, name: Option<&str>| Descriptor {
            media_type: cairn_oci::media::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", n.to_string().repeat(64)),
            size: 1,
            artifact_type: None,
            annotations: name.map(|n| {
                [(cairn_oci::REF_NAME.to_string(), n.to_string())]
                    .into_iter()
                    .collect()
            }),
        };
        let repo = Repo::parse("app").unwrap();
        let one = Layout {
            entries: vec![d('a', None)],
            ..Layout::default()
        };
        assert!(StoreBackend::tagged_entry(&one, &repo, "x").is_some());
        let two = Layout {
            entries: vec![d('a', Some("1")), d('b', Some("app:2"))],
            ..Layout::default()
        };
        assert_eq!(
            StoreBackend::tagged_entry(&two, &repo, "2").unwrap().digest,
            d('b', None).digest
        );
        assert!(StoreBackend::tagged_entry(&two, &repo, "3").is_none());
    }
}

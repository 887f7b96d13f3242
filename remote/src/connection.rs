//! [`Remote`]: an object store opened from a URL, with the remote layout's paths and counted
//! requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cairn_store::{Id, Key};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ClientOptions, GetResult, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use serde::Serialize;

use crate::config::RemoteConfig;
use crate::error::{RemoteError, Result};

/// Name of the file that marks a remote's layout version.
pub const LAYOUT_FILE: &str = "cairn-remote.json";
/// Extra sends of a request whose response was lost or cut (see [`Remote::put`],
/// [`Remote::get_opt`]); every request cairn makes is idempotent.
pub const PUT_RESENDS: usize = 3;
/// Objects per page of a listing (what S3, GCS and Azure return at most per LIST request).
pub const LIST_PAGE: u64 = 1000;
/// The layout version this code writes and reads.
pub const LAYOUT_VERSION: u32 = 1;

/// Network behaviour of a remote.
#[derive(Clone, Debug)]
pub struct TransferOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of a failed request (transient errors: 5xx, resets, timeouts).
    pub retries: usize,
    /// Time limit for one request, including reading its body.
    pub request_timeout: Duration,
    /// Time limit for establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            concurrency: 8,
            retries: 5,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Requests made, for summaries and benchmarks. Retries inside object_store count once.
#[derive(Debug, Default)]
pub struct Counters {
    /// GET requests (whole objects and ranges).
    pub gets: AtomicU64,
    /// PUT requests (whole objects, and each part of a multipart upload).
    pub puts: AtomicU64,
    /// HEAD requests.
    pub heads: AtomicU64,
    /// LIST requests (pages of a listing).
    pub lists: AtomicU64,
    /// DELETE requests.
    pub deletes: AtomicU64,
    /// Bytes uploaded.
    pub bytes_up: AtomicU64,
    /// Bytes downloaded.
    pub bytes_down: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RequestCounts {
    /// GET requests.
    pub gets: u64,
    /// PUT requests.
    pub puts: u64,
    /// HEAD requests.
    pub heads: u64,
    /// LIST requests (pages).
    pub lists: u64,
    /// DELETE requests.
    pub deletes: u64,
    /// Bytes uploaded.
    pub bytes_up: u64,
    /// Bytes downloaded.
    pub bytes_down: u64,
}

/// Where a cloud's credentials were looked for, when the last place is its instance metadata
/// service: a request that fails because that lookup failed is reported as "no credentials",
/// naming these places, rather than as the metadata request that failed.
#[derive(Clone, Debug)]
pub(crate) struct CredentialSearch {
    /// The places, in order, for the message.
    pub(crate) looked: &'static str,
    /// The metadata endpoint, as it appears in the failed request's error.
    pub(crate) endpoint: String,
}

/// An opened remote.
#[derive(Clone, Debug)]
pub struct Remote {
    name: String,
    url: String,
    credentials: Option<CredentialSearch>,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    read_only: bool,
    write_only: bool,
    counters: Arc<Counters>,
    opts: TransferOptions,
    /// The folder of a `file://` remote: conditional updates there are made under a `flock`
    /// of [`FILE_LOCK`] in it (the local filesystem has no compare-and-swap of its own).
    local_dir: Option<std::path::PathBuf>,
}

/// The lock file of a `file://` remote, in its folder (no object of the layout is named so).
pub const FILE_LOCK: &str = ".cairn-lock";

/// How a conditional put ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conditional {
    /// Written; the new object's ETag, if the store gave one.
    Written(Option<String>),
    /// Not written: the object exists (create) or changed since it was read (update).
    Conflict,
}

/// What the three cloud builders share (object_store gives them no common trait): one place
/// sets up any of them from the environment, the URL, cairn's retry and timeout settings and the
/// remote's options.
trait CloudBuilder: Sized {
    /// The builder's configuration keys.
    type Key: std::str::FromStr<Err = object_store::Error>;
    fn from_env() -> Self;
    fn with_url(self, url: String) -> Self;
    fn with_retry(self, retry: RetryConfig) -> Self;
    fn with_config(self, key: Self::Key, value: String) -> Self;
    /// The builder's key for a client setting.
    fn client(key: ClientConfigKey) -> Self::Key;
}

macro_rules! cloud_builder {
    ($builder:ty, $key:ty) => {
        impl CloudBuilder for $builder {
            type Key = $key;
            fn from_env() -> Self {
                <$builder>::from_env()
            }
            fn with_url(self, url: String) -> Self {
                <$builder>::with_url(self, url)
            }
            fn with_retry(self, retry: RetryConfig) -> Self {
                <$builder>::with_retry(self, retry)
            }
            fn with_config(self, key: $key, value: String) -> Self {
                <$builder>::with_config(self, key, value)
            }
            fn client(key: ClientConfigKey) -> $key {
                <$key>::Client(key)
            }
        }
    };
}
cloud_builder!(AmazonS3Builder, AmazonS3ConfigKey);
cloud_builder!(GoogleCloudStorageBuilder, GoogleConfigKey);
cloud_builder!(MicrosoftAzureBuilder, AzureConfigKey);

/// A cloud builder from the environment (credentials, endpoints, proxies), the remote's URL,
/// `retry`, the request and connect timeouts of `opts`, then the remote's options (which win).
/// The timeouts go in as config keys: `with_client_options` would replace the client settings
/// `from_env` read, such as `AWS_ALLOW_HTTP` or `AWS_PROXY_URL`.
fn cloud<B: CloudBuilder>(
    cfg: &RemoteConfig,
    retry: &RetryConfig,
    opts: &TransferOptions,
) -> std::result::Result<B, String> {
    let mut b = B::from_env()
        .with_url(cfg.url.clone())
        .with_retry(retry.clone());
    for (k, v) in [
        (ClientConfigKey::Timeout, opts.request_timeout),
        (ClientConfigKey::ConnectTimeout, opts.connect_timeout),
    ] {
        b = b.with_config(B::client(k), format!("{}ms", v.as_millis()));
    }
    for (k, v) in &cfg.options {
        let key = k
            .to_ascii_lowercase()
            .parse()
            .map_err(|e| format!("option {k}: {e}"))?;
        b = b.with_config(key, v.clone());
    }
    Ok(b)
}

impl Remote {
    /// Opens the remote `name` configured as `cfg`. Credentials come from each cloud's
    /// environment (object_store's `from_env` builders); `cfg.options` override them.
    pub fn open(name: &str, cfg: &RemoteConfig, opts: &TransferOptions) -> Result<Remote> {
        let bad = |reason: String| RemoteError::Url {
            url: cfg.url.clone(),
            reason,
        };
        let url = url::Url::parse(&cfg.url).map_err(|e| bad(e.to_string()))?;
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: opts.retries,
            retry_timeout: Duration::from_secs(120),
        };
        let mut client = ClientOptions::new()
            .with_timeout(opts.request_timeout)
            .with_connect_timeout(opts.connect_timeout);
        if url.scheme() == "http" {
            client = client.with_allow_http(true);
        }
        let mut read_only = cfg.read_only;
        let mut credentials = None;
        let mut local_dir = None;
        let path_of = |u: &url::Url| -> Result<Path> {
            Path::parse(u.path().trim_matches('/')).map_err(|e| bad(e.to_string()))
        };
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match url.scheme() {
            "s3" | "s3a" => {
                // Remote gc needs If-None-Match / If-Match puts; asked for explicitly (the
                // remote's options may still turn them off, for stores without them).
                let mut with_conditional = cfg.clone();
                with_conditional
                    .options
                    .entry("aws_conditional_put".into())
                    .or_insert_with(|| "etag".into());
                let b = cloud::<AmazonS3Builder>(&with_conditional, &retry, opts).map_err(bad)?;
                let b = crate::credentials::aws_profile(b).map_err(bad)?;
                credentials = crate::credentials::aws_search(&b);
                (
                    Arc::new(b.build().map_err(|e| bad(e.to_string()))?),
                    path_of(&url)?,
                )
            }
            "gs" => {
                let b = cloud::<GoogleCloudStorageBuilder>(cfg, &retry, opts).map_err(bad)?;
                credentials = crate::credentials::gcp_search(&b);
                (
                    Arc::new(b.build().map_err(|e| bad(e.to_string()))?),
                    path_of(&url)?,
                )
            }
            "az" | "azure" | "abfs" | "abfss" | "adl" => {
                let b = cloud::<MicrosoftAzureBuilder>(cfg, &retry, opts).map_err(bad)?;
                credentials = crate::credentials::azure_search(&b);
                (
                    Arc::new(b.build().map_err(|e| bad(e.to_string()))?),
                    path_of(&url)?,
                )
            }
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| bad("not a local path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| bad(e.to_string()))?;
                local_dir = Some(dir);
                (Arc::new(fs), Path::default())
            }
            "http" | "https" => {
                read_only = true;
                let origin = &url[..url::Position::BeforePath];
                let b = HttpBuilder::new()
                    .with_url(origin)
                    .with_retry(retry)
                    .with_client_options(client);
                (
                    Arc::new(b.build().map_err(|e| bad(e.to_string()))?),
                    path_of(&url)?,
                )
            }
            other => return Err(bad(format!("unsupported scheme {other:?}"))),
        };
        Ok(Remote {
            name: name.to_string(),
            url: cfg.url.clone(),
            credentials,
            store,
            prefix,
            read_only,
            write_only: cfg.write_only,
            counters: Arc::new(Counters::default()),
            opts: opts.clone(),
            local_dir,
        })
    }

    /// The name it was opened under (the URL for unnamed remotes).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
    /// True if cairn must not write to it.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    /// True if cairn must not read from it.
    pub fn write_only(&self) -> bool {
        self.write_only
    }
    /// Transfer settings.
    pub fn options(&self) -> &TransferOptions {
        &self.opts
    }
    /// Requests made so far.
    pub fn counts(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            gets: c.gets.load(Ordering::Relaxed),
            puts: c.puts.load(Ordering::Relaxed),
            heads: c.heads.load(Ordering::Relaxed),
            lists: c.lists.load(Ordering::Relaxed),
            deletes: c.deletes.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
        }
    }

    fn child(&self, rel: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The remote's path of `rel` (relative to its root).
    pub fn path(&self, rel: &str) -> Path {
        self.child(rel)
    }

    /// `rel` relative to the remote's root, for a path under it.
    pub fn relative<'p>(&self, path: &'p Path) -> &'p str {
        let full = path.as_ref();
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            full
        } else {
            full.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    /// Every object whose path (relative to the remote's root) starts with `rel`: the folder
    /// holding `rel`'s last segment is listed, recursively, and filtered. Counts one LIST
    /// request per page of [`LIST_PAGE`] objects.
    pub async fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>> {
        use futures::TryStreamExt;
        let dir = match rel.rfind('/') {
            Some(i) => &rel[..i],
            None => "",
        };
        let base = if dir.is_empty() {
            self.prefix.clone()
        } else {
            self.child(dir)
        };
        let listing: Vec<ObjectMeta> = self
            .store
            .list(if base.as_ref().is_empty() {
                None
            } else {
                Some(&base)
            })
            .try_collect()
            .await
            .map_err(self.request_err(&base))?;
        let pages = listing.len() as u64 / LIST_PAGE + 1;
        self.counters.lists.fetch_add(pages, Ordering::Relaxed);
        Ok(listing
            .into_iter()
            .filter(|m| self.relative(&m.location).starts_with(rel))
            .collect())
    }

    /// DELETE; a missing object is no error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        if self.read_only {
            return Err(RemoteError::ReadOnly(self.url.clone()));
        }
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.request_err(path)(e)),
        }
    }

    /// `keys/<key>.key`
    pub fn key_path(&self, key: &Key) -> Path {
        self.child(&format!("keys/{key}.key"))
    }
    /// `usage/<key>.used`: the key's last use on this remote (its time on the object store).
    pub fn usage_path(&self, key: &Key) -> Path {
        self.child(&format!("usage/{key}.used"))
    }
    /// `packs/<xx>/<hex>.pack`
    pub fn pack_path(&self, pack: &Id) -> Path {
        let h = pack.to_hex();
        self.child(&format!("packs/{}/{h}.pack", &h[..2]))
    }
    /// `packs/<xx>/<hex>.idx`
    pub fn index_path(&self, pack: &Id) -> Path {
        let h = pack.to_hex();
        self.child(&format!("packs/{}/{h}.idx", &h[..2]))
    }
    /// `blobs/<xx>/<hex>.zst`: a large blob stored on its own.
    pub fn blob_path(&self, blob: &Id) -> Path {
        let h = blob.to_hex();
        self.child(&format!("blobs/{}/{h}.zst", &h[..2]))
    }
    fn layout_path(&self) -> Path {
        self.child(LAYOUT_FILE)
    }

    pub(crate) fn request_err(
        &self,
        path: &Path,
    ) -> impl FnOnce(object_store::Error) -> RemoteError + '_ {
        let path = path.to_string();
        move |source| {
            if let Some(c) = &self.credentials
                && crate::credentials::is_metadata_failure(&source, &c.endpoint)
            {
                return RemoteError::NoCredentials {
                    remote: self.url.clone(),
                    looked: c.looked,
                    detail: source.to_string(),
                };
            }
            RemoteError::Request {
                remote: self.url.clone(),
                path,
                source,
            }
        }
    }

    pub(crate) fn corrupt(
        &self,
        what: impl Into<String>,
        reason: impl Into<String>,
    ) -> RemoteError {
        RemoteError::Corrupt {
            remote: self.url.clone(),
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// GET a whole object; `None` if it does not exist. A response cut short (which
    /// object_store reports as a generic error, for example a reset while it reads a 404's
    /// body) is asked for again, up to [`PUT_RESENDS`] times.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>> {
        Ok(self.get_tagged(path).await?.map(|(b, _)| b))
    }

    /// [`Remote::get_opt`], with the object's ETag (for a later conditional update).
    pub async fn get_tagged(&self, path: &Path) -> Result<Option<(Bytes, Option<String>)>> {
        let mut attempt = 0;
        loop {
            self.counters.gets.fetch_add(1, Ordering::Relaxed);
            let r = match self.store.get(path).await {
                Ok(r) => {
                    let tag = r.meta.e_tag.clone();
                    r.bytes().await.map(|b| (b, tag))
                }
                Err(e) => Err(e),
            };
            match r {
                Ok((b, tag)) => {
                    self.counters
                        .bytes_down
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    return Ok(Some((b, tag)));
                }
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(object_store::Error::Generic { .. })
                    if attempt < PUT_RESENDS.min(self.opts.retries) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err(e) => return Err(self.request_err(path)(e)),
            }
        }
    }

    /// GET a whole object that must exist.
    pub async fn get(&self, path: &Path) -> Result<Bytes> {
        match self.get_opt(path).await? {
            Some(b) => Ok(b),
            None => Err(RemoteError::Request {
                remote: self.url.clone(),
                path: path.to_string(),
                source: object_store::Error::NotFound {
                    path: path.to_string(),
                    source: "missing on the remote".into(),
                },
            }),
        }
    }

    /// GET a streaming body.
    pub async fn get_stream(&self, path: &Path) -> Result<GetResult> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.store.get(path).await.map_err(self.request_err(path))
    }

    pub(crate) fn add_bytes_down(&self, n: u64) {
        self.counters.bytes_down.fetch_add(n, Ordering::Relaxed);
    }

    /// GET a byte range.
    pub async fn get_range(&self, path: &Path, range: std::ops::Range<u64>) -> Result<Bytes> {
        self.counters.gets.fetch_add(1, Ordering::Relaxed);
        let want = range.end - range.start;
        let b = self
            .store
            .get_range(path, range)
            .await
            .map_err(self.request_err(path))?;
        self.counters
            .bytes_down
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        if b.len() as u64 != want {
            return Err(self.corrupt(
                path.to_string(),
                format!("range of {want} bytes returned {}", b.len()),
            ));
        }
        Ok(b)
    }

    /// HEAD; `None` if it does not exist. Cut responses are asked for again, as in
    /// [`Remote::get_opt`].
    pub async fn head(&self, path: &Path) -> Result<Option<ObjectMeta>> {
        let mut attempt = 0;
        loop {
            self.counters.heads.fetch_add(1, Ordering::Relaxed);
            match self.store.head(path).await {
                Ok(m) => return Ok(Some(m)),
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(object_store::Error::Generic { .. })
                    if attempt < PUT_RESENDS.min(self.opts.retries) =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err(e) => return Err(self.request_err(path)(e)),
            }
        }
    }

    /// PUT a whole object (atomic: readers see all of it or none of it). Every PUT cairn makes
    /// is idempotent (content-addressed packs, whole key records), so besides object_store's own
    /// retries of 5xx and timeouts, a request whose response was lost (a reset after the server
    /// stored the object, which object_store reports as a generic error and does not retry) is
    /// sent again, up to [`PUT_RESENDS`] times.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        if self.read_only {
            return Err(RemoteError::ReadOnly(self.url.clone()));
        }
        let mut attempt = 0;
        loop {
            match self.send_put(path, bytes.clone(), PutMode::Overwrite).await {
                Ok(_) => return Ok(()),
                Err(object_store::Error::Generic { .. })
                    if attempt < PUT_RESENDS.min(self.opts.retries) =>
                {
                    attempt += 1;
                    tracing::debug!(
                        "{path}: resending PUT after a lost response (attempt {attempt})"
                    );
                    tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
                }
                Err(e) => return Err(self.request_err(path)(e)),
            }
        }
    }

    /// PUT that succeeds only if the object does not exist (`etag` `None`) or still has ETag
    /// `etag`. A store without conditional puts is [`RemoteError::NoConditionalPuts`]; on a
    /// `file://` remote an update runs under a `flock` of [`FILE_LOCK`].
    pub async fn put_if(
        &self,
        path: &Path,
        bytes: Bytes,
        etag: Option<&str>,
    ) -> Result<Conditional> {
        if self.read_only {
            return Err(RemoteError::ReadOnly(self.url.clone()));
        }
        if let Some(dir) = &self.local_dir {
            let lock = dir.join(FILE_LOCK);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock)
                .map_err(|e| RemoteError::from(cairn_store::Error::io(&lock)(e)))?;
            let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                .await
                .expect("lock task panicked")
                .map_err(|e| RemoteError::from(cairn_store::Error::io(&lock)(e)))?;
            let current = self.head(path).await?;
            let out = match (etag, current) {
                (None, Some(_)) => Ok(Conditional::Conflict),
                (Some(want), Some(m)) if m.e_tag.as_deref() != Some(want) => {
                    Ok(Conditional::Conflict)
                }
                (Some(_), None) => Ok(Conditional::Conflict),
                _ => {
                    self.put(path, bytes).await?;
                    Ok(Conditional::Written(
                        self.head(path).await?.and_then(|m| m.e_tag),
                    ))
                }
            };
            drop(file);
            return out;
        }
        let mode = match etag {
            None => PutMode::Create,
            Some(e) => PutMode::Update(object_store::UpdateVersion {
                e_tag: Some(e.to_string()),
                version: None,
            }),
        };
        let update = etag.is_some();
        match self.send_put(path, bytes, mode).await {
            Ok(r) => Ok(Conditional::Written(r.e_tag)),
            // An update of an object deleted since it was read (S3 answers 404 to If-Match).
            Err(object_store::Error::NotFound { .. }) if update => Ok(Conditional::Conflict),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(Conditional::Conflict),
            Err(object_store::Error::NotImplemented { .. }) => {
                Err(RemoteError::NoConditionalPuts(self.url.clone()))
            }
            Err(e) => Err(self.request_err(path)(e)),
        }
    }

    /// One PUT request in `mode`, counted.
    async fn send_put(
        &self,
        path: &Path,
        bytes: Bytes,
        mode: PutMode,
    ) -> object_store::Result<object_store::PutResult> {
        self.counters.puts.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_up
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        self.store
            .put_opts(path, PutPayload::from_bytes(bytes), opts)
            .await
    }

    /// A writer that uploads in parts once the data outgrows one request.
    pub(crate) fn writer(&self, path: &Path) -> Result<object_store::buffered::BufWriter> {
        if self.read_only {
            return Err(RemoteError::ReadOnly(self.url.clone()));
        }
        Ok(object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            path.clone(),
            crate::pack::MULTIPART_PART,
        )
        .with_max_concurrency(self.opts.concurrency.clamp(1, 8)))
    }

    /// Counts an upload made through [`Remote::writer`] (which object_store performs).
    pub(crate) fn count_upload(&self, requests: u64, bytes: u64) {
        self.counters.puts.fetch_add(requests, Ordering::Relaxed);
        self.counters.bytes_up.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Checks the layout marker; with `create`, writes it on a new remote.
    pub async fn check_layout(&self, create: bool) -> Result<bool> {
        let path = self.layout_path();
        match self.get_opt(&path).await? {
            Some(b) => {
                let v: serde_json::Value = serde_json::from_slice(&b)
                    .map_err(|e| self.corrupt(path.to_string(), e.to_string()))?;
                match v.get("layout").and_then(|l| l.as_u64()) {
                    Some(n) if n == u64::from(LAYOUT_VERSION) => Ok(true),
                    _ => Err(RemoteError::Layout {
                        remote: self.url.clone(),
                        found: v.to_string(),
                    }),
                }
            }
            None if create => {
                let body = serde_json::to_vec(&serde_json::json!({"layout": LAYOUT_VERSION}))
                    .expect("json");
                self.put(&path, body.into()).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

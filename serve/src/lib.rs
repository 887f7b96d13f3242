//! # cairn-serve
//!
//! `cairn serve`: a cairn store as an OCI registry (the Distribution API's pull, push and
//! discovery parts) for docker, podman, containerd and skopeo, and as a team cache that other
//! cairns use as an `http://` remote. Images pushed are ordinary image keys (`repo:tag`), so
//! `cairn oci extract`, `oci export`, `push`/`pull` and `gc` work on them.
//!
//! The store is reached only through [`backend`]; the HTTP layer ([`http`]) knows nothing of
//! blobs, trees or the index. Mapping of names: [`names`]; access: [`auth`]; formats and
//! documented limits: `docs/cli.md`, "cairn serve".

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod config;
pub mod error;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod server;
pub mod uploads;

use std::sync::Arc;

pub use backend::{Backend, StoreBackend, StoreBackendOptions};
pub use config::{Limits, ServeConfig};
pub use server::ServeError;

/// Builds the application state for `backend` under `cfg`.
pub fn app(cfg: &ServeConfig, backend: Arc<dyn Backend>) -> Result<Arc<http::App>, ServeError> {
    let auth = match &cfg.tokens {
        Some(p) => auth::Auth::load(p).map_err(ServeError::Config)?,
        None => auth::Auth::open(),
    };
    let uploads = uploads::Uploads::new(
        &backend.uploads_dir(),
        cfg.limits.max_uploads,
        cfg.limits.max_upload_bytes,
    )
    .map_err(|e| ServeError::Io {
        what: backend.uploads_dir().display().to_string(),
        source: e,
    })?;
    Ok(Arc::new(http::App {
        backend,
        uploads,
        auth,
        metrics: metrics::Metrics::default(),
        read_only: cfg.read_only,
        limits: cfg.limits.clone(),
    }))
}

/// Runs the server over `store` until SIGTERM or SIGINT, on a runtime of its own. `ready` gets
/// the bound address.
pub fn run(
    cfg: ServeConfig,
    store: cairn_store::Store,
    opts: StoreBackendOptions,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    cfg.check().map_err(ServeError::Config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking threads read blobs and the index; bounded so a flood of requests queues
        // instead of spawning without limit.
        .max_blocking_threads(64)
        .build()
        .map_err(|e| ServeError::Io {
            what: "starting the runtime".into(),
            source: e,
        })?;
    let backend = StoreBackend::new(store, opts, rt.handle().clone())
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let app = app(&cfg, Arc::new(backend))?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
        };
        server::serve(&cfg, app, shutdown, ready).await
    })
}

//! The listener: TCP (and TLS with rustls), HTTP/1.1 connections with a head size limit and a
//! head read timeout, a cap on open connections, the sweeper of idle uploads and old pins, and
//! a graceful shutdown that lets answers in flight finish.

use std::future::Future;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::config::{HEADER_TIMEOUT, MAX_HEADER_BYTES, SHUTDOWN_GRACE, ServeConfig};
use crate::http::App;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting was refused.
    #[error("{0}")]
    Config(String),
    /// A file or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// A rustls acceptor for the PEM certificate chain and private key files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    let bad = |p: &Path, e: String| ServeError::Config(format!("{}: {e}", p.display()));
    let certs = CertificateDer::pem_reader_iter(BufReader::new(
        std::fs::File::open(cert).map_err(io(cert.display().to_string()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| bad(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(cert, e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves `app` on `cfg.listen` until `shutdown` resolves, then drains. `ready` is called with
/// the bound address (port 0 picks a free one).
pub async fn serve(
    cfg: &ServeConfig,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServeError> {
    cfg.check().map_err(ServeError::Config)?;
    let tls = match &cfg.tls {
        Some((c, k)) => Some(tls_acceptor(c, k)?),
        None => None,
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(io(format!("listening on {}", cfg.listen)))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    ready(addr);
    let sweeper = tokio::spawn(sweep(app.clone()));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let svc = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(crate::http::handle(app, req).await) }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES.max(8192))
            .keep_alive(true);
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("connection from {peer}: {e}");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!("TLS handshake with {peer}: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake with {peer} timed out");
                                return;
                            }
                        };
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!("connection from {peer}: {e}");
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    sweeper.abort();
    tracing::info!("shutting down: waiting for requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still in flight after {} s; stopping", SHUTDOWN_GRACE.as_secs());
        }
    }
    Ok(())
}

/// Drops idle uploads and removes pins older than the grace period, periodically.
async fn sweep(app: Arc<App>) {
    let limits = &app.limits;
    let every = (limits.upload_expiry.min(limits.pin_grace) / 4)
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let dropped = app.uploads.expire(limits.upload_expiry);
        if dropped > 0 {
            tracing::info!("dropped {dropped} abandoned uploads");
        }
        let grace = limits.pin_grace;
        match app.blocking(move |b| b.expire_pins(grace)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} pins older than {} s", grace.as_secs()),
            Err(e) => tracing::warn!("removing old pins: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

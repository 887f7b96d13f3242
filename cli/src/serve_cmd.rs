//! `cairn serve`: arguments and the hand-off to `cairn-serve` (see docs/cli.md, "cairn serve").

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_remote::{Config, TransferOptions};
use cairn_serve::config as defaults;
use cairn_store::Store;
use clap::Args;

use crate::args::Global;

/// Options of `cairn serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (a non-loopback address needs --tokens or --read-only)
    #[arg(long, value_name = "ADDR", default_value = defaults::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Refuse every push and delete
    #[arg(long)]
    pub read_only: bool,
    /// On a local miss, pull the key from this configured remote (once per key)
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// PEM certificate chain for HTTPS
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Tokens file: secret tokens and their scopes (format in docs/cli.md)
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Upload sessions open at once
    #[arg(long, value_name = "N", default_value_t = defaults::DEFAULT_MAX_UPLOADS)]
    pub max_uploads: usize,
    /// Largest blob one upload may hold, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = defaults::DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_size: u64,
    /// Seconds an upload may stay idle before it is dropped
    #[arg(long, value_name = "SECS", default_value_t = defaults::DEFAULT_UPLOAD_EXPIRY.as_secs())]
    pub upload_expiry: u64,
    /// Seconds a pushed blob no image references yet is kept from gc
    #[arg(long, value_name = "SECS", default_value_t = defaults::DEFAULT_PIN_GRACE.as_secs())]
    pub gc_grace: u64,
    /// Seconds a request body or a response may stall before it is cut off
    #[arg(long, value_name = "SECS", default_value_t = defaults::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(args: ServeArgs, g: &Global, store: Store, config_path: &Path) -> Result<()> {
    let transfer = TransferOptions {
        concurrency: g.concurrency as usize,
        retries: g.retries,
        ..TransferOptions::default()
    };
    let fallback = match &args.remote {
        Some(name) => {
            let config = Config::load(config_path)?;
            let (name, cfg) = config.resolve(name)?;
            let trust = config.trust_for(&name, config_path)?;
            Some((name, cfg, trust))
        }
        None => None,
    };
    let cfg = cairn_serve::ServeConfig {
        listen: args.listen,
        read_only: args.read_only,
        tls: args.tls_cert.zip(args.tls_key),
        tokens: args.tokens,
        limits: cairn_serve::Limits {
            body_idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            max_upload_bytes: args.max_upload_size,
            max_uploads: args.max_uploads.max(1),
            upload_expiry: Duration::from_secs(args.upload_expiry),
            pin_grace: Duration::from_secs(args.gc_grace),
            ..cairn_serve::Limits::default()
        },
    };
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let opts = cairn_serve::StoreBackendOptions {
        fallback,
        transfer,
        pin_grace: Some(Duration::from_secs(args.gc_grace)),
    };
    cairn_serve::run(cfg, store, opts, |addr| {
        // The one line on stdout: scripts (and tests) read the address from it.
        println!("listening on {scheme}://{addr}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        tracing::info!("serving the store as a registry on {scheme}://{addr}");
    })
    .context("cairn serve")
}

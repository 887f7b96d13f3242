//! Server settings and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Largest request head (request line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Time a client has to send a complete request head (a slowloris client is cut off then).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a request body may stall (no byte) before the request fails, and a response
/// may stall (client not reading) before it is aborted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default size cap of one blob upload: 32 GiB, the default `--max-layer-size` of extract.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 32 << 30;
/// Default cap on upload sessions open at once.
pub const DEFAULT_MAX_UPLOADS: usize = 512;
/// Default time an upload session may stay idle before it is dropped.
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(3600);
/// Default gc grace period of a pushed blob that no image references yet.
pub const DEFAULT_PIN_GRACE: Duration = Duration::from_secs(3600);
/// Default cap on connections open at once (further clients wait to be accepted).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Size and time limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub body_idle_timeout: Duration,
    /// See [`DEFAULT_MAX_UPLOAD_BYTES`].
    pub max_upload_bytes: u64,
    /// See [`DEFAULT_MAX_UPLOADS`].
    pub max_uploads: usize,
    /// See [`DEFAULT_UPLOAD_EXPIRY`].
    pub upload_expiry: Duration,
    /// See [`DEFAULT_PIN_GRACE`].
    pub pin_grace: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_uploads: DEFAULT_MAX_UPLOADS,
            upload_expiry: DEFAULT_UPLOAD_EXPIRY,
            pin_grace: DEFAULT_PIN_GRACE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Everything `cairn serve` is told.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Refuse all writes.
    pub read_only: bool,
    /// PEM certificate chain and private key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The tokens file.
    pub tokens: Option<PathBuf>,
    /// Limits.
    pub limits: Limits,
}

impl ServeConfig {
    /// Refuses a setup that would let anyone on the network write: a non-loopback address
    /// needs `--read-only` or a tokens file.
    pub fn check(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && !self.read_only && self.tokens.is_none() {
            return Err(format!(
                "refusing to listen on {} without --tokens or --read-only: anyone who can reach it could push",
                self.listen
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_tokens_or_read_only() {
        let mut c = ServeConfig {
            listen: "0.0.0.0:5000".parse().unwrap(),
            read_only: false,
            tls: None,
            tokens: None,
            limits: Limits::default(),
        };
        assert!(c.check().is_err());
        c.read_only = true;
        assert!(c.check().is_ok());
        c.read_only = false;
        c.tokens = Some("t.toml".into());
        assert!(c.check().is_ok());
        c.tokens = None;
        c.listen = "[::1]:5000".parse().unwrap();
        assert!(c.check().is_ok());
    }
}

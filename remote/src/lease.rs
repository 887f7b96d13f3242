//! The remote gc lease (`gc/lease`): one gc per remote at a time, and the object store's clock.
//!
//! A gc takes the lease with a create-only put, and keeps it by rewriting it with a conditional
//! update at least every [`LEASE_REFRESH`]; a lease not rewritten for [`LEASE_STALE`] (by the
//! object store's own timestamps) belonged to a gc that died, and the next gc takes it over with
//! a conditional update (so two gcs cannot both take over). Every age a gc compares with its
//! grace period is measured on the object store's clock, read from the lease's own
//! `Last-Modified`; a local clock more than [`MAX_SKEW`] away from it makes gc refuse to run.
//! A lease held by a gc of this same machine whose process is gone (killed) is taken over at
//! once (the lease names its host and pid), as restic does with its stale locks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::connection::{Conditional, Remote};
use crate::error::{RemoteError, Result};

/// A lease not refreshed for this long is stale, and another gc may take it over.
pub const LEASE_STALE: Duration = Duration::from_secs(600);
/// A gc refreshes its lease at least this often.
pub const LEASE_REFRESH: Duration = Duration::from_secs(120);
/// The largest difference between the local and the object store's clocks gc accepts.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
/// Path of the lease, relative to the remote's root.
pub const LEASE: &str = "gc/lease";
/// Path of the clock probe (written to read the store's time when the lease is held by
/// someone else).
const CLOCK_PROBE: &str = "gc/clock";

/// The object store's clock: its time (epoch seconds) at a local instant.
#[derive(Clone, Copy, Debug)]
pub struct StoreClock {
    at: Instant,
    store_secs: i64,
}

impl StoreClock {
    /// The object store's time now (epoch seconds).
    pub fn now(&self) -> i64 {
        self.store_secs + self.at.elapsed().as_secs() as i64
    }
}

/// A held lease.
pub struct Lease {
    remote: Remote,
    etag: Option<String>,
    body: Bytes,
    exclusive: bool,
    refreshed: Instant,
    /// The object store's clock.
    pub clock: StoreClock,
}

/// This machine's name, as the lease records it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn wall() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Reads back the time on the object store of `rel`, written just after local time `before`;
/// checks the local clock against it. Returns the clock and the object's ETag.
async fn probe(remote: &Remote, rel: &str, before: i64) -> Result<(StoreClock, Option<String>)> {
    let path = remote.path(rel);
    let at = Instant::now();
    let meta = remote.head(&path).await?.ok_or_else(|| {
        remote.corrupt(
            rel.to_string(),
            "gone right after it was written".to_string(),
        )
    })?;
    let after = wall();
    let store = meta.last_modified.timestamp();
    // The store's stamp lies between the write and the read back; allow a second of rounding.
    let skew = if store < before - 1 {
        before - store
    } else if store > after + 1 {
        store - after
    } else {
        0
    };
    if skew > MAX_SKEW.as_secs() as i64 {
        return Err(RemoteError::ClockSkew {
            remote: remote.url().to_string(),
            skew,
            max: MAX_SKEW.as_secs() as i64,
        });
    }
    Ok((
        StoreClock {
            at,
            store_secs: store,
        },
        meta.e_tag,
    ))
}

impl Lease {
    /// Takes the lease of `remote`, or fails with [`RemoteError::GcBusy`]. With `exclusive`
    /// (the caller promises no other writer), puts are plain overwrites.
    pub async fn take(remote: &Remote, exclusive: bool) -> Result<Lease> {
        let host = hostname();
        let owner = format!("pid {} on {host}", std::process::id());
        let body = Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "owner": owner,
                "host": host,
                "pid": std::process::id(),
                "started": wall(),
            }))
            .expect("json"),
        );
        let path = remote.path(LEASE);
        let mut before = wall();
        let written = if exclusive {
            remote.put(&path, body.clone()).await?;
            true
        } else {
            matches!(
                remote.put_if(&path, body.clone(), None).await?,
                Conditional::Written(_)
            )
        };
        if !written {
            // Someone holds it: stale, or busy?
            let probe_start = wall();
            remote.put(&remote.path(CLOCK_PROBE), Bytes::new()).await?;
            let (clock, _) = probe(remote, CLOCK_PROBE, probe_start).await?;
            let held = remote.head(&path).await?;
            let taken = match held {
                Some(m) => {
                    let age = clock.now() - m.last_modified.timestamp();
                    let held_by: serde_json::Value = remote
                        .get_opt(&path)
                        .await?
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    // A gc of this machine whose process is gone (killed) held it: no need to
                    // wait for it to go stale.
                    let dead_here = held_by["host"].as_str() == Some(host.as_str())
                        && held_by["pid"].as_u64().is_some_and(|pid| {
                            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                        });
                    if age < LEASE_STALE.as_secs() as i64 && !dead_here {
                        return Err(RemoteError::GcBusy {
                            remote: remote.url().to_string(),
                            owner: held_by["owner"].as_str().unwrap_or("unknown").to_string(),
                            age,
                        });
                    }
                    tracing::warn!(
                        "{}: taking over the gc lease of {} (refreshed {age} s ago{})",
                        remote.url(),
                        held_by["owner"].as_str().unwrap_or("unknown"),
                        if dead_here {
                            ", its process is gone"
                        } else {
                            ""
                        }
                    );
                    before = wall();
                    remote
                        .put_if(&path, body.clone(), Some(m.e_tag.as_deref().unwrap_or("")))
                        .await?
                }
                // Released meanwhile.
                None => {
                    before = wall();
                    remote.put_if(&path, body.clone(), None).await?
                }
            };
            if taken == Conditional::Conflict {
                return Err(RemoteError::GcBusy {
                    remote: remote.url().to_string(),
                    owner: "another gc, just now".into(),
                    age: 0,
                });
            }
        }
        let (clock, etag) = match probe(remote, LEASE, before).await {
            Ok(p) => p,
            Err(e) => {
                let _ = remote.delete(&path).await;
                return Err(e);
            }
        };
        Ok(Lease {
            remote: remote.clone(),
            etag,
            body,
            exclusive,
            refreshed: Instant::now(),
            clock,
        })
    }

    /// Rewrites the lease if it was last written more than [`LEASE_REFRESH`] ago; fails with
    /// [`RemoteError::LeaseLost`] if another gc took it over.
    pub async fn refresh_if_due(&mut self) -> Result<()> {
        if self.refreshed.elapsed() < LEASE_REFRESH {
            return Ok(());
        }
        self.refresh().await
    }

    /// Rewrites the lease now.
    pub async fn refresh(&mut self) -> Result<()> {
        let path = self.remote.path(LEASE);
        if self.exclusive {
            self.remote.put(&path, self.body.clone()).await?;
        } else {
            match self
                .remote
                .put_if(
                    &path,
                    self.body.clone(),
                    Some(self.etag.as_deref().unwrap_or("")),
                )
                .await?
            {
                Conditional::Written(e) => self.etag = e,
                Conditional::Conflict => {
                    return Err(RemoteError::LeaseLost(self.remote.url().to_string()));
                }
            }
        }
        if self.etag.is_none() {
            self.etag = self.remote.head(&path).await?.and_then(|m| m.e_tag);
        }
        self.refreshed = Instant::now();
        Ok(())
    }

    /// Gives the lease back.
    pub async fn release(self) -> Result<()> {
        self.remote.delete(&self.remote.path(LEASE)).await
    }
}

//! The gc lock (writers and readers share it, `gc` takes it alone) and the wait-with-backoff
//! loop every wait for another process uses.
//!
//! Two lock files make a turnstile so that a waiting `gc` is not starved by a stream of
//! overlapping writers: everyone passes through `locks/turnstile` (writers briefly, shared;
//! `gc` exclusively, and it keeps it), then holds `locks/gc` shared (writers) or exclusive
//! (`gc`). Locks are `flock`s, so a process killed with SIGKILL releases them at once.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::Error;

/// Longest pause between two attempts to take a lock.
const MAX_BACKOFF: Duration = Duration::from_millis(25);

/// A held gc lock; released on drop. Held by sessions (see `session`), never handed out.
#[derive(Debug)]
pub(crate) struct GcLock {
    _main: File,
    _turnstile: Option<File>,
}

/// Whether the holder may run alongside others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockMode {
    /// Any number of writers and readers.
    Shared,
    /// `gc`: nobody else.
    Exclusive,
}

fn open_lock_file(path: &Path) -> Result<File, Error> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(Error::io(parent))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(path))
}

/// Calls `attempt` until it returns true or `timeout` passes, backing off between tries (0.5 ms
/// doubling to 25 ms); after a second it logs that it is waiting for `what` (at `path`), and at
/// the timeout it fails with [`Error::LockTimeout`]. Every wait for another process (the gc
/// lock, the index, a remote's ledger) goes through it.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    path: &Path,
    mut attempt: impl FnMut() -> Result<bool, Error>,
) -> Result<(), Error> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(500);
    let mut announced = false;
    loop {
        if attempt()? {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::LockTimeout {
                what: what.to_string(),
                path: path.to_path_buf(),
                waited,
            });
        }
        if !announced && waited > Duration::from_secs(1) {
            tracing::info!("waiting for {what} of {}", path.display());
            announced = true;
        }
        std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

fn take(file: &File, mode: LockMode, timeout: Duration, path: &Path) -> Result<(), Error> {
    wait_until(timeout, "the gc lock", path, || {
        let r = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match r {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(Error::io(path)(e)),
        }
    })
}

impl GcLock {
    /// Takes the gc lock of the store whose lock folder is `dir`.
    pub(crate) fn acquire(dir: &Path, mode: LockMode, timeout: Duration) -> Result<GcLock, Error> {
        let turnstile_path = dir.join("turnstile");
        let main_path = dir.join("gc");
        let turnstile = open_lock_file(&turnstile_path)?;
        take(&turnstile, mode, timeout, &turnstile_path)?;
        let main = open_lock_file(&main_path)?;
        take(&main, mode, timeout, &main_path)?;
        Ok(GcLock {
            _main: main,
            // A writer lets others (and a waiting gc) through as soon as it holds the main lock.
            _turnstile: (mode == LockMode::Exclusive).then_some(turnstile),
        })
    }
}

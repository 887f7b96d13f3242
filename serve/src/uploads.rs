//! Blob upload sessions: each is a file in `STORE/serve/uploads/` (outside `tmp/`, which `gc`
//! empties) plus the sha256 and BLAKE3 states of what it holds so far, so the digest is checked
//! and the store id known the moment the last byte arrives, without reading the file again.
//!
//! Sessions live in memory: a server restart forgets them (clients see `BLOB_UPLOAD_UNKNOWN`
//! and start over; the files are deleted at startup). A session idle longer than the expiry is
//! dropped with its file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_oci::{Alg, OciDigest};
use sha2::Digest as _;

use crate::backend::CompletedUpload;
use crate::names::Repo;

/// Bytes of an upload's start kept to tell compressed layers from others.
const HEAD_BYTES: usize = 8;

/// The hashing state and file of one upload.
pub struct Session {
    /// The repository it was started in.
    pub repo: Repo,
    /// Its file.
    path: tempfile::TempPath,
    /// Bytes received so far.
    pub size: u64,
    /// The hashes so far (boxed: a BLAKE3 state is 2 KiB).
    hashes: Box<Hashes>,
    /// When a request last touched it.
    pub touched: Instant,
}

struct Hashes {
    sha256: sha2::Sha256,
    blake3: blake3::Hasher,
    head: Vec<u8>,
}

/// Appends to a session's file on a blocking thread, hashing as it writes.
pub struct Appender {
    file: std::io::BufWriter<std::fs::File>,
    session: Session,
}

impl Appender {
    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)?;
        let h = &mut self.session.hashes;
        h.sha256.update(data);
        if data.len() >= 128 * 1024 {
            h.blake3.update_rayon(data);
        } else {
            h.blake3.update(data);
        }
        if h.head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - h.head.len()).min(data.len());
            h.head.extend_from_slice(&data[..take]);
        }
        self.session.size += data.len() as u64;
        Ok(())
    }

    /// Flushes the file and hands the session back.
    pub fn finish(mut self) -> Result<Session, (Session, std::io::Error)> {
        self.session.touched = Instant::now();
        match self.file.flush() {
            Ok(()) => Ok(self.session),
            Err(e) => Err((self.session, e)),
        }
    }

    /// Gives the session back after a failed write (its state is that of the bytes hashed, but
    /// the file may hold a partial write: the caller drops it).
    pub fn abandon(self) -> Session {
        self.session
    }

    /// Bytes received so far, this request's included.
    pub fn size(&self) -> u64 {
        self.session.size
    }
}

impl Session {
    /// Opens the file for appending (on a blocking thread); on failure the session comes back.
    pub fn appender(self) -> Result<Appender, (Session, std::io::Error)> {
        match std::fs::OpenOptions::new().append(true).open(&self.path) {
            Ok(file) => Ok(Appender {
                file: std::io::BufWriter::with_capacity(1 << 20, file),
                session: self,
            }),
            Err(e) => Err((self, e)),
        }
    }

    /// The sha256 of everything received.
    pub fn digest(&self) -> OciDigest {
        OciDigest::from_parts(
            Alg::Sha256,
            &hex::encode(self.hashes.sha256.clone().finalize()),
        )
        .expect("hex of a sha256")
    }

    /// The completed upload, once its digest has been checked.
    pub fn complete(self) -> CompletedUpload {
        CompletedUpload {
            digest: self.digest(),
            blake3: *self.hashes.blake3.finalize().as_bytes(),
            size: self.size,
            head: self.hashes.head,
            file: self.path,
        }
    }
}

/// A session slot: the session while idle, `None` while a request has it out.
type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// Why a session could not be started.
#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    /// The concurrent-upload cap is reached.
    TooMany,
    /// The file could not be created.
    Io(String),
}

/// All upload sessions.
pub struct Uploads {
    dir: PathBuf,
    sessions: Mutex<HashMap<String, Slot>>,
    /// Most sessions open at once.
    pub max_sessions: usize,
    /// Most bytes one upload may hold.
    pub max_size: u64,
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source");
    hex::encode(b)
}

impl Uploads {
    /// Sessions in `dir`, which is emptied of a previous run's files.
    pub fn new(dir: &Path, max_sessions: usize, max_size: u64) -> std::io::Result<Uploads> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(Uploads {
            dir: dir.to_path_buf(),
            sessions: Mutex::new(HashMap::new()),
            max_sessions,
            max_size,
        })
    }

    /// Starts a session in `repo`; returns its id.
    pub fn start(&self, repo: &Repo) -> Result<String, StartError> {
        let mut map = self.sessions.lock().expect("sessions");
        if map.len() >= self.max_sessions {
            return Err(StartError::TooMany);
        }
        let id = new_id();
        let path = self.dir.join(&id);
        let file = std::fs::File::create_new(&path)
            .map_err(|e| StartError::Io(format!("{}: {e}", path.display())))?;
        drop(file);
        let path = tempfile::TempPath::try_from_path(&path)
            .map_err(|e| StartError::Io(format!("{}: {e}", path.display())))?;
        let session = Session {
            repo: repo.clone(),
            path,
            size: 0,
            hashes: Box::new(Hashes {
                sha256: sha2::Sha256::new(),
                blake3: blake3::Hasher::new(),
                head: Vec::new(),
            }),
            touched: Instant::now(),
        };
        map.insert(id.clone(), Arc::new(tokio::sync::Mutex::new(Some(session))));
        Ok(id)
    }

    /// The slot of session `id`, if it exists.
    pub fn get(&self, id: &str) -> Option<Slot> {
        self.sessions.lock().expect("sessions").get(id).cloned()
    }

    /// Forgets session `id` (its file goes with the session value).
    pub fn remove(&self, id: &str) {
        self.sessions.lock().expect("sessions").remove(id);
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.sessions.lock().expect("sessions").len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops sessions idle for longer than `idle` (a session a request holds is never idle).
    pub fn expire(&self, idle: Duration) -> usize {
        let mut map = self.sessions.lock().expect("sessions");
        let before = map.len();
        map.retain(|_, slot| match slot.try_lock() {
            Ok(guard) => guard.as_ref().is_none_or(|s| s.touched.elapsed() < idle),
            Err(_) => true, // in use
        });
        before - map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_hash_what_they_receive_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stale"), b"x").unwrap();
        let up = Uploads::new(dir.path(), 2, 100).unwrap();
        assert!(!dir.path().join("stale").exists());
        let repo = Repo::parse("a").unwrap();
        let id = up.start(&repo).unwrap();
        up.start(&repo).unwrap();
        assert_eq!(up.start(&repo), Err(StartError::TooMany));
        let slot = up.get(&id).unwrap();
        let session = slot.try_lock().unwrap().take().unwrap();
        let mut a = session.appender().map_err(|e| e.1).unwrap();
        a.write(b"hel").unwrap();
        a.write(b"lo").unwrap();
        let session = a.finish().map_err(|e| e.1).unwrap();
        assert_eq!(session.size, 5);
        let done = session.complete();
        assert_eq!(
            done.digest.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(done.blake3, *blake3::hash(b"hello").as_bytes());
        assert_eq!(std::fs::read(&done.file).unwrap(), b"hello");
        up.remove(&id);
        assert_eq!(up.len(), 1);
        assert_eq!(up.expire(Duration::ZERO), 1);
        assert!(up.is_empty());
    }
}

//! Progress reporting hooks, so a front end can draw bars without the library knowing how.

/// Receives progress from long operations. Every method has a do-nothing default.
pub trait Progress: Sync {
    /// A phase begins with `total` units of work (files or bytes, as the phase says).
    fn start(&self, _phase: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

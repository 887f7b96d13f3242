//! Helpers shared by the end-to-end tests, by concern; everything is re-exported here, so tests
//! import from `crate::common`.

mod archive;
mod env;
mod format;
mod oci;
pub mod remote;
mod trees;

pub use archive::*;
pub use env::*;
pub use format::*;
pub use oci::*;
pub use trees::*;

//! # cairn-oci
//!
//! OCI images in a cairn store. An image is stored as an ordinary cairn tree that is exactly an
//! OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`), so every image blob is a
//! cairn blob, deduplicated with everything else, and `cairn get` restores the layout. Import
//! checks every blob against its OCI digest and every descriptor's size while it streams in, and
//! walks everything `index.json` reaches; export writes the layout back byte for byte.
//!
//! Sources: an OCI layout folder, an OCI archive (that layout as a plain, gzip or zstd tar, as
//! `docker buildx build --output type=oci` writes), a `docker save` archive (its layers may be
//! links to other members, as skopeo and Docker write repeated layers), or a skopeo `dir:`
//! layout, the last two converted to a layout (mapping in `docs/format.md`). Exports: the
//! layout, an OCI archive, or one image as a `docker save` archive (`docker_export`).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod digest;
mod dirlayout;
mod docker;
mod docker_export;
mod error;
mod export;
mod extract;
mod image;
mod import;
mod inspect;
mod layer;
mod merge;
mod pick;
mod platform;
mod source;
mod walk;

pub use digest::{Alg, OciDigest};
pub use docker_export::{DockerExport, export_docker_archive, valid_tag};
pub use error::{OciError, Result};
pub use export::{check_layout, export_archive, export_layout};
pub use extract::{
    DEFAULT_MAX_LAYER_BYTES, ExtractOptions, Extracted, ListEntry, Source, extract, list,
};
pub use import::{Imported, SourceKind, import};
pub use inspect::{Inspection, Node, inspect};
pub use platform::Platform;
pub use walk::Role;

/// Label set on every key bound by an OCI import.
pub const LABEL_OCI: &str = "cairn.oci";
/// Label naming the kind of source an image was imported from.
pub const LABEL_SOURCE: &str = "cairn.oci.source";
/// The annotation naming an image in an index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Largest JSON document (index, manifest, config) cairn parses: 4 MiB, as containerd allows.
pub const MAX_JSON: usize = 4 * 1024 * 1024;
/// Most bytes of JSON documents an import keeps in memory in all (each source file that may be
/// a document of at most [`MAX_JSON`] is kept while the source streams, since `index.json` may
/// come last in an archive): 256 MiB, far above any real image, so memory stays bounded.
pub const MAX_JSON_TOTAL: usize = 256 * 1024 * 1024;

/// Media types cairn parses while walking an image.
pub mod media {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI artifact manifest (withdrawn from the spec in 1.1, still found in the wild).
    pub const OCI_ARTIFACT: &str = "application/vnd.oci.artifact.manifest.v1+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker schema 1 manifests, which cairn refuses.
    pub const DOCKER_SCHEMA1: [&str; 2] = [
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ];
}

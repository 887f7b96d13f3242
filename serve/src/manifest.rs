//! Manifests as the registry sees them: their media type, the descriptors they reference, and
//! the fields the referrers API reports. Parsing is lenient about unknown fields (the stored
//! bytes are served exactly as pushed) and strict about what the server relies on.

use std::collections::BTreeMap;

use cairn_oci::{OciDigest, media};
use serde::{Deserialize, Serialize};

/// Largest manifest accepted on push and parsed on pull: 4 MiB, distribution's and
/// containerd's limit, and what `cairn oci` walks (`cairn_oci::MAX_JSON`).
pub const MAX_MANIFEST_BYTES: usize = cairn_oci::MAX_JSON;

/// Media types the registry serves as manifests.
pub const MANIFEST_TYPES: [&str; 5] = [
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_LIST,
    media::OCI_ARTIFACT,
];

/// A descriptor, with the fields the server uses (others are ignored on read).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Artifact type, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The fields of any manifest kind (image manifest, index, artifact manifest).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    blobs: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What a manifest is to the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest (OCI or Docker schema 2): config and layers.
    Image,
    /// An index or manifest list: child manifests.
    Index,
    /// An OCI artifact manifest: blobs.
    Artifact,
}

/// A parsed manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The media type it is served with.
    pub media_type: String,
    /// What it is.
    pub kind: Kind,
    /// Blobs it references (config and layers, or an artifact's blobs).
    pub blobs: Vec<Descriptor>,
    /// Child manifests (an index's entries).
    pub children: Vec<Descriptor>,
    /// The manifest it refers to, if any.
    pub subject: Option<Descriptor>,
    /// `artifactType`, or else the config's media type (the referrers API's rule).
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// A media type the registry does not store.
    #[error("unsupported manifest media type {0:?}")]
    Unsupported(String),
}

impl Manifest {
    /// Parses `bytes`; `content_type` is the type a client declared on push (the document's own
    /// `mediaType` wins when both are present, and they must agree).
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, ManifestError> {
        let raw: Raw = serde_json::from_slice(bytes)
            .map_err(|e| ManifestError::Invalid(format!("not a JSON manifest: {e}")))?;
        let declared = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| MANIFEST_TYPES.contains(c));
        let media_type = match (&raw.media_type, declared) {
            (Some(m), Some(d)) if m != d => {
                return Err(ManifestError::Invalid(format!(
                    "mediaType {m} but Content-Type {d}"
                )));
            }
            (Some(m), _) => m.clone(),
            (None, Some(d)) => d.to_string(),
            // The OCI image spec makes `mediaType` optional: tell a manifest from an index by
            // its fields, as distribution does.
            (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_string(),
            (None, None) if raw.config.is_some() => media::OCI_MANIFEST.to_string(),
            (None, None) => {
                return Err(ManifestError::Invalid(
                    "no mediaType, and neither config nor manifests".into(),
                ));
            }
        };
        let kind = match media_type.as_str() {
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => Kind::Image,
            media::OCI_INDEX | media::DOCKER_LIST => Kind::Index,
            media::OCI_ARTIFACT => Kind::Artifact,
            other => return Err(ManifestError::Unsupported(other.to_string())),
        };
        if kind != Kind::Artifact && raw.schema_version != Some(2) {
            return Err(ManifestError::Invalid(format!(
                "schemaVersion {:?} (want 2)",
                raw.schema_version
            )));
        }
        let (blobs, children) = match kind {
            Kind::Image => {
                let config = raw.config.clone().ok_or_else(|| {
                    ManifestError::Invalid("image manifest without config".into())
                })?;
                let mut b = vec![config];
                b.extend(raw.layers.clone().unwrap_or_default());
                (b, Vec::new())
            }
            Kind::Index => (
                Vec::new(),
                raw.manifests
                    .clone()
                    .ok_or_else(|| ManifestError::Invalid("index without manifests".into()))?,
            ),
            Kind::Artifact => (raw.blobs.clone().unwrap_or_default(), Vec::new()),
        };
        for d in blobs.iter().chain(&children).chain(&raw.subject) {
            OciDigest::parse(&d.digest).map_err(ManifestError::Invalid)?;
        }
        let artifact_type = raw.artifact_type.clone().or_else(|| {
            (kind == Kind::Image)
                .then(|| raw.config.as_ref().map(|c| c.media_type.clone()))
                .flatten()
        });
        Ok(Manifest {
            media_type,
            kind,
            blobs,
            children,
            subject: raw.subject,
            artifact_type,
            annotations: raw.annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: char) -> String {
        format!("sha256:{}", n.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_references_config_and_layers() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"x","digest":"{}","size":3}}],"subject":{{"mediaType":"{}","digest":"{}","size":4}}}}"#,
            media::OCI_MANIFEST,
            d('a'),
            d('b'),
            media::OCI_MANIFEST,
            d('c')
        );
        let p = Manifest::parse(m.as_bytes(), None).unwrap();
        assert_eq!(p.kind, Kind::Image);
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.subject.unwrap().digest, d('c'));
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn media_type_comes_from_the_document_or_the_header() {
        let idx = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            Manifest::parse(idx.as_bytes(), None).unwrap().media_type,
            media::OCI_INDEX
        );
        assert_eq!(
            Manifest::parse(idx.as_bytes(), Some(media::DOCKER_LIST))
                .unwrap()
                .media_type,
            media::DOCKER_LIST
        );
        let typed = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media::OCI_INDEX
        );
        assert!(Manifest::parse(typed.as_bytes(), Some(media::DOCKER_LIST)).is_err());
        assert!(Manifest::parse(b"[1]", None).is_err());
        assert!(
            Manifest::parse(
                br#"{"schemaVersion":1,"config":{"digest":"sha256:00","size":1}}"#,
                None
            )
            .is_err()
        );
        let bad_digest = r#"{"schemaVersion":2,"config":{"digest":"md5:00","size":1}}"#;
        assert!(Manifest::parse(bad_digest.as_bytes(), None).is_err());
    }
}

//! Platforms (`os/architecture[/variant]`) and picking an image manifest for one.

use std::fmt;

use oci_spec::image::{Descriptor, ImageManifest};
use serde::Deserialize;

use crate::digest::OciDigest;
use crate::error::{OciError, Result};
use crate::image::StoredImage;
use crate::media;
use crate::walk::{Blobs, Role};

/// An `os/architecture[/variant]` triple, as in an index's `platform` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU architecture in Go's names, e.g. `amd64`, `arm64`.
    pub arch: String,
    /// CPU variant, e.g. `v7` for `arm`, `v8` for `arm64`.
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch` or `os/arch/variant`.
    pub fn parse(s: &str) -> std::result::Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "invalid platform {s:?}: expected os/arch or os/arch/variant"
            ));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            arch: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// The platform this program runs on, in OCI's (Go's) names.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant: None,
        }
    }

    /// Whether an image for `have` runs on `self`: same os and architecture, and the same
    /// variant when `self` names one (`arm64` without a variant is `arm64/v8`).
    pub fn accepts(&self, have: &Platform) -> bool {
        if self.os != have.os || self.arch != have.arch {
            return false;
        }
        let norm = |p: &Platform| match (p.arch.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(_) => norm(self) == norm(have),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The parts of an image config that name its platform.
#[derive(Deserialize)]
struct ConfigPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

/// The parts of an image config that list its layers' uncompressed digests.
#[derive(Deserialize)]
struct ConfigRootfs {
    rootfs: Option<Rootfs>,
}

#[derive(Deserialize)]
struct Rootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One layer of a chosen image.
#[derive(Clone, Debug)]
pub(crate) struct LayerRef {
    /// Its OCI digest.
    pub digest: OciDigest,
    /// Its media type.
    pub media_type: String,
    /// The sha256 digest of its uncompressed tar stream, as the config's `rootfs.diff_ids`
    /// gives it (checked when the layer is decomposed).
    pub diff_id: OciDigest,
}

/// The image manifest chosen for a platform.
#[derive(Clone, Debug)]
pub(crate) struct Chosen {
    /// The manifest's digest.
    pub manifest: OciDigest,
    /// Its config's digest.
    pub config: OciDigest,
    /// Its platform.
    pub platform: Platform,
    /// Its layers, lowest first.
    pub layers: Vec<LayerRef>,
}

/// Config media types of runnable images (anything else is an artifact, never extracted).
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    media::DOCKER_CONFIG,
];

/// Picks the image manifest for `want` among every image manifest the index reaches (nested
/// indexes included). Attestation and other artifact manifests are never chosen. Several
/// matches: the first in index order. None: an error listing the platforms the image has.
pub(crate) fn choose(image: &StoredImage, want: &Platform) -> Result<Chosen> {
    let (_, visits) = image.walk()?;
    let src = image.src();
    let mut seen = Vec::new();
    for v in visits
        .iter()
        .filter(|v| v.expanded && v.role == Role::Manifest)
    {
        let mt = v.desc.media_type().to_string();
        if mt != media::OCI_MANIFEST && mt != media::DOCKER_MANIFEST {
            continue;
        }
        let raw = v.desc.digest().to_string();
        let digest = OciDigest::parse(&raw).map_err(|reason| OciError::Blob {
            src: src.clone(),
            digest: raw.clone(),
            reason,
        })?;
        let bytes = image.json(&digest)?.ok_or_else(|| OciError::Blob {
            src: src.clone(),
            digest: raw.clone(),
            reason: "image manifest is missing or too large".into(),
        })?;
        let m: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| OciError::Blob {
            src: src.clone(),
            digest: raw.clone(),
            reason: format!("invalid image manifest: {e}"),
        })?;
        if !IMAGE_CONFIGS.contains(&m.config().media_type().to_string().as_str()) {
            continue;
        }
        let platform = match descriptor_platform(&v.desc) {
            Some(p) => p,
            None => config_platform(image, m.config())?,
        };
        if want.accepts(&platform) {
            let diff_ids = config_diff_ids(image, m.config(), m.layers().len())?;
            let layers = m
                .layers()
                .iter()
                .zip(diff_ids)
                .map(|(l, diff_id)| {
                    let raw = l.digest().to_string();
                    Ok(LayerRef {
                        digest: OciDigest::parse(&raw).map_err(|reason| OciError::Blob {
                            src: src.clone(),
                            digest: raw.clone(),
                            reason,
                        })?,
                        media_type: l.media_type().to_string(),
                        diff_id,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let raw_config = m.config().digest().to_string();
            let config = OciDigest::parse(&raw_config).map_err(|reason| OciError::Blob {
                src: src.clone(),
                digest: raw_config.clone(),
                reason,
            })?;
            return Ok(Chosen {
                manifest: digest,
                config,
                platform,
                layers,
            });
        }
        seen.push(platform.to_string());
    }
    seen.sort();
    seen.dedup();
    Err(OciError::Image {
        src,
        reason: if seen.is_empty() {
            "holds no runnable image manifest".into()
        } else {
            format!(
                "has no image for platform {want}; it has: {} (pick one with --platform)",
                seen.join(", ")
            )
        },
    })
}

fn descriptor_platform(d: &Descriptor) -> Option<Platform> {
    d.platform().as_ref().map(|p| Platform {
        os: p.os().to_string(),
        arch: p.architecture().to_string(),
        variant: p.variant().clone(),
    })
}

/// The config's `rootfs.diff_ids`, which must be one sha256 digest per layer of the manifest.
fn config_diff_ids(
    image: &StoredImage,
    config: &Descriptor,
    layers: usize,
) -> Result<Vec<OciDigest>> {
    let raw = config.digest().to_string();
    let err = |reason: String| OciError::Blob {
        src: image.src(),
        digest: raw.clone(),
        reason,
    };
    let digest = OciDigest::parse(&raw).map_err(&err)?;
    let bytes = image
        .json(&digest)?
        .ok_or_else(|| err("image config is missing or too large".into()))?;
    let c: ConfigRootfs =
        serde_json::from_slice(&bytes).map_err(|e| err(format!("invalid image config: {e}")))?;
    let ids = c.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if ids.len() != layers {
        return Err(err(format!(
            "image config lists {} rootfs.diff_ids for the manifest's {layers} layers",
            ids.len()
        )));
    }
    ids.iter()
        .map(|d| match OciDigest::parse(d) {
            Ok(d) if d.alg == crate::Alg::Sha256 => Ok(d),
            Ok(_) => Err(err(format!("diff_id {d:?} is not a sha256 digest"))),
            Err(r) => Err(err(format!("invalid diff_id: {r}"))),
        })
        .collect()
}

fn config_platform(image: &StoredImage, config: &Descriptor) -> Result<Platform> {
    let raw = config.digest().to_string();
    let err = |reason: String| OciError::Blob {
        src: image.src(),
        digest: raw.clone(),
        reason,
    };
    let digest = OciDigest::parse(&raw).map_err(&err)?;
    let bytes = image
        .json(&digest)?
        .ok_or_else(|| err("image config is missing or too large".into()))?;
    let c: ConfigPlatform =
        serde_json::from_slice(&bytes).map_err(|e| err(format!("invalid image config: {e}")))?;
    match (c.os, c.architecture) {
        (Some(os), Some(arch)) => Ok(Platform {
            os,
            arch,
            variant: c.variant,
        }),
        _ => Err(err("image config names no os and architecture".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.accepts(&Platform::parse("linux/arm64/v8").unwrap()));
        assert!(Platform::parse("linux/arm64/v8").unwrap().accepts(&p));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(!v7.accepts(&Platform::parse("linux/arm/v6").unwrap()));
        assert!(Platform::parse("linux/arm").unwrap().accepts(&v7));
        assert!(!p.accepts(&Platform::parse("linux/amd64").unwrap()));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert_eq!(v7.to_string(), "linux/arm/v7");
    }
}

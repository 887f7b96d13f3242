//! The user's remotes, kept in a TOML file (`$XDG_CONFIG_HOME/cairn/config.toml` by default).
//!
//! ```toml
//! default-remote = "origin"
//!
//! [remotes.origin]
//! url = "s3://bucket/cache"
//! read-only = false
//! options = { aws_endpoint = "http://127.0.0.1:9000", aws_allow_http = "true" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{RemoteError, Result};

/// One configured remote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RemoteConfig {
    /// `s3://…`, `gs://…`, `az://…`, `file:///…` or `http(s)://…`.
    pub url: String,
    /// Never push to it.
    #[serde(default)]
    pub read_only: bool,
    /// Never pull from it (a cache that is only filled, e.g. from CI).
    #[serde(default)]
    pub write_only: bool,
    /// Options passed to object_store's builder (`aws_endpoint`, `google_service_account`, …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Overrides the global `require-signatures` for pulls from this remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_signatures: Option<bool>,
    /// Public keys (`NAME:BASE64`) trusted for this remote, besides the global ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
    /// Retention rules `cairn remote gc` applies to this remote (instead of the global ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<cairn_store::policy::Rule>,
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Remotes tried, in order, by `get` and used by `push` when none is named.
    #[serde(default)]
    pub default_remote: Option<String>,
    /// Secret key file used by `put` and `sign` when `--sign` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    /// Public keys (`NAME:BASE64`, Nix's format) whose signatures a pull accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
    /// Refuse to pull a record without a valid signature by a trusted key.
    #[serde(default)]
    pub require_signatures: bool,
    /// How `get` and `oci extract` make regular files when `--link` is not given: `auto`,
    /// `reflink`, `hardlink` or `copy` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<cairn_store::LinkMode>,
    /// Named remotes.
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteConfig>,
    /// Cap on the local store's stored bytes: least recently used keys are evicted after a
    /// write that exceeds it, down to 90 % of it; above 105 % `put` skips caching.
    #[serde(
        default,
        deserialize_with = "cairn_store::policy::de_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_size: Option<u64>,
    /// Free space to keep on the local store's filesystem, evicting keys to get it.
    #[serde(
        default,
        deserialize_with = "cairn_store::policy::de_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_free: Option<u64>,
    /// Retention rules for `cairn gc --policy` (and for remotes without rules of their own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<cairn_store::policy::Rule>,
}

/// What a pull demands of a record's signatures.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    /// Refuse records without a valid signature by one of `trusted`.
    pub required: bool,
    /// The trusted public keys.
    pub trusted: Vec<cairn_store::PublicKey>,
}

impl Config {
    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(config_err(path, e.to_string())),
        };
        toml::from_str(&text).map_err(|e| config_err(path, e.to_string().replace('\n', " ")))
    }

    /// Writes the configuration atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| config_err(path, e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| config_err(path, e.to_string()))?;
        let tmp = dir.join(format!(".config.toml.{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(|e| config_err(path, e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| config_err(path, e.to_string()))
    }

    /// The trust policy for pulls from the remote `name` (an unnamed URL gets the global one).
    pub fn trust_for(&self, name: &str, path: &Path) -> Result<TrustPolicy> {
        let remote = self.remotes.get(name);
        let lines = self
            .trusted_keys
            .iter()
            .chain(remote.into_iter().flat_map(|r| r.trusted_keys.iter()));
        let trusted = lines
            .map(|l| cairn_store::PublicKey::parse(l).map_err(|e| config_err(path, e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        Ok(TrustPolicy {
            required: remote
                .and_then(|r| r.require_signatures)
                .unwrap_or(self.require_signatures),
            trusted,
        })
    }

    /// The retention rules for remote `name`: its own, else the global ones.
    pub fn retention_for(&self, name: &str) -> &[cairn_store::policy::Rule] {
        match self.remotes.get(name) {
            Some(r) if !r.retention.is_empty() => &r.retention,
            _ => &self.retention,
        }
    }

    /// The remote called `name_or_url`, or an unnamed one if it is a URL.
    pub fn resolve(&self, name_or_url: &str) -> Result<(String, RemoteConfig)> {
        if let Some(r) = self.remotes.get(name_or_url) {
            return Ok((name_or_url.to_string(), r.clone()));
        }
        if name_or_url.contains("://") {
            return Ok((
                name_or_url.to_string(),
                RemoteConfig {
                    url: name_or_url.to_string(),
                    ..RemoteConfig::default()
                },
            ));
        }
        Err(RemoteError::Url {
            url: name_or_url.to_string(),
            reason:
                "no remote of that name is configured (see `cairn remote ls`), and it is not a URL"
                    .into(),
        })
    }
}

fn config_err(path: &Path, reason: String) -> RemoteError {
    RemoteError::Config {
        path: path.display().to_string(),
        reason,
    }
}

/// The configuration file: `explicit`, else `$CAIRN_CONFIG` (handled by the caller's argument
/// parser), else `$XDG_CONFIG_HOME/cairn/config.toml`, else `~/.config/cairn/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("cairn").join("config.toml"));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| {
        PathBuf::from(h)
            .join(".config")
            .join("cairn")
            .join("config.toml")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_resolves() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c/config.toml");
        let mut c = Config::load(&p).unwrap();
        assert!(c.remotes.is_empty());
        c.remotes.insert(
            "origin".into(),
            RemoteConfig {
                url: "s3://b/p".into(),
                read_only: true,
                options: [("aws_endpoint".to_string(), "http://x".to_string())].into(),
                ..Default::default()
            },
        );
        c.default_remote = Some("origin".into());
        c.save(&p).unwrap();
        let back = Config::load(&p).unwrap();
        assert_eq!(back, c);
        assert!(back.resolve("origin").unwrap().1.read_only);
        assert_eq!(back.resolve("file:///x").unwrap().1.url, "file:///x");
        assert!(back.resolve("nope").is_err());
        std::fs::write(&p, "remotes = 3").unwrap();
        assert!(Config::load(&p).is_err());
    }
}

//! Key files for `cairn key` and signing: NAME.secret (mode 0600) and NAME.pub, one line each.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cairn_store::{PublicKey, SecretKey};

/// Writes a new key pair into `dir`; returns the public key line. Never overwrites a key.
pub fn generate(name: &str, dir: &Path) -> Result<String> {
    let sk = SecretKey::generate(name).with_context(|| format!("key name {name:?}"))?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let secret = dir.join(format!("{name}.secret"));
    let public = dir.join(format!("{name}.pub"));
    if secret.exists() || public.exists() {
        bail!("{}: a key named {name} already exists", dir.display());
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .with_context(|| secret.display().to_string())?;
    writeln!(f, "{}", sk.to_line()).with_context(|| secret.display().to_string())?;
    f.sync_all().with_context(|| secret.display().to_string())?;
    let line = sk.public().to_line();
    std::fs::write(&public, format!("{line}\n")).with_context(|| public.display().to_string())?;
    tracing::info!("wrote {} and {}", secret.display(), public.display());
    Ok(line)
}

/// Reads a secret key file.
pub fn load_secret(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    SecretKey::parse(&text).with_context(|| path.display().to_string())
}

/// The public key line of a secret or public key file.
pub fn public_line(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    if let Ok(sk) = SecretKey::parse(&text) {
        return Ok(sk.public().to_line());
    }
    Ok(PublicKey::parse(&text)
        .with_context(|| format!("{}: neither a secret nor a public key", path.display()))?
        .to_line())
}

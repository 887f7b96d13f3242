//! Where a cloud remote's credentials come from, and a clear error when there are none.
//!
//! object_store's builders read credentials from the environment and the remote's options, and
//! when they find none they fall back to the machine's instance metadata service. Off a cloud
//! VM that last request fails, and the error names it (`Error performing PUT
//! http://169.254.169.254/latest/api/token`), not the missing credentials. So each remote notes
//! whether its credentials will come from that last resort, and a request that fails on it is
//! reported as "no credentials found", with every place cairn looked.
//!
//! cairn also reads the AWS shared credentials file (`~/.aws/credentials`, or
//! `$AWS_SHARED_CREDENTIALS_FILE`; profile `$AWS_PROFILE`, else `default`), which object_store
//! does not, when neither the environment nor the remote's options give an access key.

use std::path::PathBuf;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

use crate::connection::CredentialSearch;

/// The metadata endpoint object_store uses on AWS and Azure unless told otherwise.
const DEFAULT_METADATA_IP: &str = "169.254.169.254";
/// GCP's metadata host name (its IP is [`DEFAULT_METADATA_IP`]).
const GCP_METADATA_HOST: &str = "metadata.google.internal";

/// The AWS shared credentials file: `$AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
fn aws_credentials_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".aws").join("credentials"))
}

/// The keys of `profile` in an AWS credentials file (INI: `[profile]` sections of `key = value`
/// lines, `#` and `;` comments).
fn ini_section(text: &str, profile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == profile;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// Fills in an access key from the AWS shared credentials file when the builder has none (from
/// the environment or the remote's options). A profile named by `$AWS_PROFILE` that the file
/// lacks is an error; a missing file is not.
pub(crate) fn aws_profile(b: AmazonS3Builder) -> Result<AmazonS3Builder, String> {
    if b.get_config_value(&AmazonS3ConfigKey::AccessKeyId)
        .is_some()
    {
        return Ok(b);
    }
    let Some(path) = aws_credentials_file() else {
        return Ok(b);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(b),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let named = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let profile = named.clone().unwrap_or_else(|| "default".into());
    let keys = ini_section(&text, &profile);
    let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => {
            let mut b = b
                .with_config(AmazonS3ConfigKey::AccessKeyId, id)
                .with_config(AmazonS3ConfigKey::SecretAccessKey, secret);
            if let Some(token) = get("aws_session_token") {
                b = b.with_config(AmazonS3ConfigKey::Token, token);
            }
            Ok(b)
        }
        _ if named.is_some() => Err(format!(
            "AWS_PROFILE={profile}: {} has no such profile with aws_access_key_id and \
             aws_secret_access_key",
            path.display()
        )),
        _ => Ok(b),
    }
}

/// What an S3 remote looked through, if its credentials will come from instance metadata.
pub(crate) fn aws_search(b: &AmazonS3Builder) -> Option<CredentialSearch> {
    let set = |k: AmazonS3ConfigKey| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let other_source = set(AmazonS3ConfigKey::AccessKeyId)
        || b.get_config_value(&AmazonS3ConfigKey::SkipSignature)
            .is_some_and(|v| v == "true")
        || set(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
        || set(AmazonS3ConfigKey::ContainerCredentialsFullUri)
        || std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_some();
    (!other_source).then(|| CredentialSearch {
        looked: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the remote's options, the shared \
                 credentials file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile \
                 AWS_PROFILE or default), web identity and container credentials, then the \
                 instance metadata service",
        endpoint: b
            .get_config_value(&AmazonS3ConfigKey::MetadataEndpoint)
            .unwrap_or_else(|| DEFAULT_METADATA_IP.to_string()),
    })
}

/// What a GCS remote looked through, if its credentials will come from the metadata server.
pub(crate) fn gcp_search(b: &GoogleCloudStorageBuilder) -> Option<CredentialSearch> {
    let set = |k: GoogleConfigKey| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let adc = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".config/gcloud/application_default_credentials.json"))
        .is_some_and(|p| p.exists());
    let other_source = set(GoogleConfigKey::ServiceAccount)
        || set(GoogleConfigKey::ServiceAccountKey)
        || set(GoogleConfigKey::ApplicationCredentials)
        || set(GoogleConfigKey::BearerToken)
        || b.get_config_value(&GoogleConfigKey::SkipSignature)
            .is_some_and(|v| v == "true")
        || adc;
    (!other_source).then(|| CredentialSearch {
        looked: "GOOGLE_SERVICE_ACCOUNT(_KEY), GOOGLE_APPLICATION_CREDENTIALS, the remote's \
                 options, ~/.config/gcloud/application_default_credentials.json, then the \
                 metadata server",
        endpoint: GCP_METADATA_HOST.to_string(),
    })
}

/// What an Azure remote looked through, if its credentials will come from managed identity.
pub(crate) fn azure_search(b: &MicrosoftAzureBuilder) -> Option<CredentialSearch> {
    let set = |k: AzureConfigKey| b.get_config_value(&k).is_some_and(|v| !v.is_empty());
    let other_source = set(AzureConfigKey::AccessKey)
        || set(AzureConfigKey::SasKey)
        || set(AzureConfigKey::Token)
        || set(AzureConfigKey::ClientSecret)
        || set(AzureConfigKey::FederatedTokenFile)
        || b.get_config_value(&AzureConfigKey::UseAzureCli)
            .is_some_and(|v| v == "true")
        || b.get_config_value(&AzureConfigKey::SkipSignature)
            .is_some_and(|v| v == "true")
        || b.get_config_value(&AzureConfigKey::UseEmulator)
            .is_some_and(|v| v == "true");
    (!other_source).then(|| CredentialSearch {
        looked: "AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY, AZURE_STORAGE_TOKEN, a client \
                 secret or federated token, the remote's options, then managed identity (the \
                 instance metadata service)",
        endpoint: b
            .get_config_value(&AzureConfigKey::MsiEndpoint)
            .unwrap_or_else(|| DEFAULT_METADATA_IP.to_string()),
    })
}

/// Whether `e` is the failure of a credentials request to the metadata service at `endpoint`
/// (object_store reports it as a generic error whose chain names the endpoint).
pub(crate) fn is_metadata_failure(e: &object_store::Error, endpoint: &str) -> bool {
    if !matches!(e, object_store::Error::Generic { .. }) {
        return false;
    }
    let mut text = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        text.push_str(&c.to_string());
        cur = c.source();
    }
    let host = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    text.contains(host) || (host == DEFAULT_METADATA_IP && text.contains(GCP_METADATA_HOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_profile_section() {
        let text = "[default]\naws_access_key_id = A\n# comment\naws_secret_access_key=B\n\n\
                    [ci]\nAWS_ACCESS_KEY_ID = C\naws_secret_access_key = D\naws_session_token = E\n";
        assert_eq!(
            ini_section(text, "default"),
            [
                ("aws_access_key_id".to_string(), "A".to_string()),
                ("aws_secret_access_key".to_string(), "B".to_string())
            ]
        );
        assert_eq!(ini_section(text, "ci").len(), 3);
        assert!(ini_section(text, "none").is_empty());
    }
}

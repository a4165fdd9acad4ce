//! Opening an object store from a storage URL and options.

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::RetryConfig;

use super::ObjectBackend;
use crate::error::{Error, Result};

/// Retries of failed store requests within a bounded time, so a client waiting on a store that
/// hangs gets a 503 in well under a minute instead of after object_store's default of three
/// minutes. The backoff doubles from 100 ms, so ten retries ride out a store restart of several
/// seconds (the S3 outage test restarts one within a second) before the 20 s bound ends them.
/// Each attempt is further bounded by the `timeout` storage option (30 s by default).
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 10,
        retry_timeout: std::time::Duration::from_secs(20),
        ..Default::default()
    }
}

/// Splits `scheme://authority/path` into its parts.
fn split_url(url: &str) -> Result<(&str, &str, &str)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::Unsupported(format!("storage URL without a scheme: {url}")))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((scheme, authority, path.trim_matches('/')))
}

/// Opens a store with `$builder` from the environment and `$url`, then `$options`, each key
/// parsed as a `$key` (lower-cased).
macro_rules! open_store {
    ($builder:ty, $key:ty, $base:expr, $options:expr, $bad:expr, $kind:literal) => {{
        let mut b = <$builder>::from_env()
            .with_url($base)
            .with_retry(retry_config());
        for (k, v) in $options {
            let key: $key = k.as_ref().to_ascii_lowercase().parse().map_err($bad)?;
            b = b.with_config(key, v);
        }
        Self::new(Arc::new(b.build().map_err($bad)?), $kind)
    }};
}

impl ObjectBackend {
    /// Opens the store a URL names: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` or `memory://`. Credentials and settings come from the usual
    /// environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), then from `options`, whose keys
    /// are `object_store` configuration keys with or without the provider prefix, for example
    /// `endpoint`, `region`, `access_key_id`, `secret_access_key`, `allow_http`,
    /// `virtual_hosted_style_request` (S3), `service_account` (GCS), `account_name`,
    /// `access_key` (Azure).
    pub fn from_url<K, V>(url: &str, options: impl IntoIterator<Item = (K, V)>) -> Result<Self>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let (scheme, authority, prefix) = split_url(url)?;
        let base = format!("{scheme}://{authority}");
        let bad = |e: object_store::Error| Error::backend(format!("object storage {url}"), e);
        let backend = match scheme {
            "s3" | "s3a" => {
                open_store!(AmazonS3Builder, AmazonS3ConfigKey, base, options, bad, "s3")
            }
            "gs" => open_store!(
                GoogleCloudStorageBuilder,
                GoogleConfigKey,
                base,
                options,
                bad,
                "gcs"
            ),
            "az" | "azure" | "abfs" | "abfss" => {
                open_store!(
                    MicrosoftAzureBuilder,
                    AzureConfigKey,
                    base,
                    options,
                    bad,
                    "azure"
                )
            }
            "memory" => Self::memory(),
            other => {
                return Err(Error::Unsupported(format!(
                    "storage URL scheme {other}:// (use s3, gs, az or memory)"
                )))
            }
        };
        Ok(backend.with_prefix(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::object::MIN_PART;

    #[test]
    fn url_parts() {
        assert_eq!(split_url("s3://b/p/q/").unwrap(), ("s3", "b", "p/q"));
        assert_eq!(split_url("memory://").unwrap(), ("memory", "", ""));
        assert!(split_url("bucket").is_err());
        assert!(matches!(
            ObjectBackend::from_url("ftp://x", Vec::<(String, String)>::new()),
            Err(Error::Unsupported(_))
        ));
        let b = ObjectBackend::from_url("memory:///a/b/", Vec::<(String, String)>::new()).unwrap();
        assert_eq!(b.prefix(), "a/b/");
        assert_eq!(b.kind(), "memory");
        assert_eq!(b.min_chunk(), MIN_PART as u64);
    }
}

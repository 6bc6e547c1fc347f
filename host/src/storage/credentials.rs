//! Credentials for an S3-compatible endpoint, under the names Sedna's Secrets use.

use std::fmt;

use super::StorageError;

pub const ACCESS_KEY_ID: &str = "ACCESS_KEY_ID";
pub const SECRET_ACCESS_KEY: &str = "SECRET_ACCESS_KEY";
pub const S3_ENDPOINT_URL: &str = "S3_ENDPOINT_URL";
/// `"0"` or `"false"`: an endpoint given without a scheme is plain http.
pub const S3_USE_HTTPS: &str = "S3_USE_HTTPS";
/// Optional; most S3-compatible servers take any region.
pub const S3_REGION: &str = "S3_REGION";

/// An endpoint and the keys for it. The secret never appears in `Debug`, errors, status
/// or metrics: only `origin` (where the keys came from) does.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    secret_access_key: String,
    /// `None`: AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    pub region: String,
    /// Where they came from, for errors: "the environment" or "Secret minio-credentials".
    pub origin: String,
}

impl Credentials {
    /// Reads Sedna's names through `get` (the environment, a Secret's data); `None` when
    /// neither key is set (anonymous access), an error naming `origin` when only one is.
    pub fn from_vars(
        get: impl Fn(&str) -> Option<String>,
        origin: &str,
    ) -> Result<Option<Credentials>, StorageError> {
        let value = |name: &str| {
            get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let endpoint = value(S3_ENDPOINT_URL).map(|endpoint| {
            if endpoint.contains("://") {
                return endpoint;
            }
            let https = !matches!(
                value(S3_USE_HTTPS).as_deref(),
                Some("0" | "false" | "False" | "FALSE")
            );
            format!("{}://{endpoint}", if https { "https" } else { "http" })
        });
        let region = value(S3_REGION).unwrap_or_else(|| "us-east-1".into());
        match (value(ACCESS_KEY_ID), value(SECRET_ACCESS_KEY)) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some(Credentials {
                access_key_id,
                secret_access_key,
                endpoint,
                region,
                origin: origin.to_string(),
            })),
            (None, None) => Ok(endpoint.map(|endpoint| Credentials {
                access_key_id: String::new(),
                secret_access_key: String::new(),
                endpoint: Some(endpoint),
                region,
                origin: origin.to_string(),
            })),
            (Some(_), None) | (None, Some(_)) => Err(StorageError::Credentials(format!(
                "{origin} sets only one of {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY}: set both"
            ))),
        }
    }

    /// Sedna's names from this process's environment.
    pub fn from_env() -> Result<Option<Credentials>, StorageError> {
        Self::from_vars(|name| std::env::var(name).ok(), "the environment")
    }

    pub(super) fn secret(&self) -> &str {
        &self.secret_access_key
    }

    pub fn anonymous(&self) -> bool {
        self.access_key_id.is_empty()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("origin", &self.origin)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn sedna_names_read_and_the_secret_never_prints() {
        let c = Credentials::from_vars(
            vars(&[
                (ACCESS_KEY_ID, "minio"),
                (SECRET_ACCESS_KEY, "s3cr3t-value"),
                (S3_ENDPOINT_URL, "127.0.0.1:9000"),
                (S3_USE_HTTPS, "0"),
            ]),
            "Secret mysecret",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.region, "us-east-1");
        assert!(!format!("{c:?}").contains("s3cr3t"), "{c:?}");
        let https = Credentials::from_vars(
            vars(&[
                (ACCESS_KEY_ID, "a"),
                (SECRET_ACCESS_KEY, "b"),
                (S3_ENDPOINT_URL, "play.min.io"),
            ]),
            "env",
        )
        .unwrap()
        .unwrap();
        assert_eq!(https.endpoint.as_deref(), Some("https://play.min.io"));
    }

    #[test]
    fn half_a_key_pair_is_an_error_naming_where_it_came_from() {
        let error = Credentials::from_vars(vars(&[(ACCESS_KEY_ID, "a")]), "Secret s3")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("Secret s3") && error.contains(SECRET_ACCESS_KEY),
            "{error}"
        );
        assert!(Credentials::from_vars(vars(&[]), "env").unwrap().is_none());
    }
}

//! Where an object is: a local path, `s3://bucket/key` or an `http(s)://` URL.

use std::fmt;
use std::path::{Path, PathBuf};

use super::StorageError;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    Local(PathBuf),
    /// An object on the S3-compatible endpoint the credentials name.
    S3 {
        bucket: String,
        key: String,
    },
    /// Read only. The URL carries no credentials (they are refused when parsed).
    Http(url::Url),
}

impl Location {
    /// Reads a resource's `url` (or a path): `s3://bucket/key`, `http(s)://...`, else a
    /// local path.
    pub fn parse(text: &str) -> Result<Location, StorageError> {
        let invalid = |why: &str| StorageError::Invalid {
            location: text.to_string(),
            message: why.to_string(),
        };
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("no bucket: write s3://BUCKET/KEY"));
            }
            let key = key.trim_start_matches('/');
            if key.split('/').any(|part| part == "..") {
                return Err(invalid("`..` in a key: write the key in full"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            let url = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid(
                    "credentials in an http(s) URL are not accepted: serve the file without them or put it in s3:// with a credentials Secret",
                ));
            }
            return Ok(Location::Http(url));
        }
        if let Some(scheme) = text.split_once("://").map(|(s, _)| s)
            && !scheme.contains('/')
            && scheme != "file"
        {
            return Err(invalid(&format!(
                "the scheme `{scheme}` is not supported: give a local path, s3://BUCKET/KEY or http(s)://"
            )));
        }
        Ok(Location::Local(PathBuf::from(
            text.strip_prefix("file://").unwrap_or(text),
        )))
    }

    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }

    pub fn local(&self) -> Option<&Path> {
        match self {
            Location::Local(path) => Some(path),
            _ => None,
        }
    }

    /// A path relative to this object's folder (an index's image paths), in the same
    /// bucket or server.
    pub fn join(&self, relative: &str) -> Result<Location, StorageError> {
        match self {
            Location::Local(path) => Ok(Location::Local(
                path.parent().unwrap_or(Path::new(".")).join(relative),
            )),
            Location::S3 { bucket, key } => {
                let folder = key.rsplit_once('/').map_or("", |(folder, _)| folder);
                let mut parts: Vec<&str> = folder.split('/').filter(|p| !p.is_empty()).collect();
                for part in relative.split('/') {
                    match part {
                        "" | "." => {}
                        ".." => {
                            if parts.pop().is_none() {
                                return Err(StorageError::Invalid {
                                    location: self.to_string(),
                                    message: format!("`{relative}` leaves the bucket"),
                                });
                            }
                        }
                        part => parts.push(part),
                    }
                }
                Ok(Location::S3 {
                    bucket: bucket.clone(),
                    key: parts.join("/"),
                })
            }
            Location::Http(url) => {
                url.join(relative)
                    .map(Location::Http)
                    .map_err(|e| StorageError::Invalid {
                        location: self.to_string(),
                        message: format!("`{relative}`: {e}"),
                    })
            }
        }
    }

    /// Where a copy of this object goes under a mirror directory: `s3/<bucket>/<key>`,
    /// `http/<host[:port]>/<path>` or `https/...` ([`Location::mirrored`] reads it
    /// back). `None` for a local path, or a URL with no host.
    pub fn mirror_path(&self) -> Option<PathBuf> {
        match self {
            Location::Local(_) => None,
            Location::S3 { bucket, key } => Some(Path::new("s3").join(bucket).join(key)),
            Location::Http(url) => {
                let host = match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str()?),
                    None => url.host_str()?.to_string(),
                };
                Some(
                    Path::new(url.scheme())
                        .join(host)
                        .join(url.path().trim_start_matches('/')),
                )
            }
        }
    }

    /// The object a path under a mirror directory is a copy of.
    pub fn mirrored(relative: &Path) -> Option<Location> {
        let text = relative.to_str()?;
        let (scheme, rest) = text.split_once('/')?;
        match scheme {
            "s3" | "http" | "https" => Location::parse(&format!("{scheme}://{rest}")).ok(),
            _ => None,
        }
    }

    /// This location as a folder (`s3://b/prefix` -> `s3://b/prefix/`), so that
    /// [`join`](Self::join) puts names under it.
    pub fn as_folder(&self) -> Location {
        match self {
            Location::S3 { key, .. } if !key.is_empty() && !key.ends_with('/') => {
                self.with_suffix("/")
            }
            Location::Http(url) if !url.path().ends_with('/') => self.with_suffix("/"),
            _ => self.clone(),
        }
    }

    /// The object beside this one with `suffix` added to its name (a model's manifest).
    pub fn with_suffix(&self, suffix: &str) -> Location {
        match self {
            Location::Local(path) => {
                let mut name = path.as_os_str().to_owned();
                name.push(suffix);
                Location::Local(name.into())
            }
            Location::S3 { bucket, key } => Location::S3 {
                bucket: bucket.clone(),
                key: format!("{key}{suffix}"),
            },
            Location::Http(url) => {
                let mut url = url.clone();
                url.set_path(&format!("{}{suffix}", url.path()));
                Location::Http(url)
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Location::Http(url) => write!(f, "{url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_parse() {
        assert_eq!(
            Location::parse("s3://models/helmet/base.onnx").unwrap(),
            Location::S3 {
                bucket: "models".into(),
                key: "helmet/base.onnx".into()
            }
        );
        assert_eq!(
            Location::parse("/data/index.txt").unwrap(),
            Location::Local("/data/index.txt".into())
        );
        assert_eq!(
            Location::parse("file:///data/a.txt").unwrap(),
            Location::Local("/data/a.txt".into())
        );
        assert!(
            Location::parse("https://example.org/m.onnx")
                .unwrap()
                .is_remote()
        );
        for (bad, why) in [
            ("s3:///key", "no bucket"),
            ("ftp://host/file", "`ftp` is not supported"),
            (
                "https://user:pw@host/m.onnx",
                "credentials in an http(s) URL",
            ),
            ("s3://b/../other", "`..`"),
        ] {
            let error = Location::parse(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
    }

    #[test]
    fn a_mirrored_copy_names_its_object() {
        for url in [
            "s3://data/set/images/a.jpg",
            "https://host/d/a.jpg",
            "http://h:8080/a.jpg",
        ] {
            let location = Location::parse(url).unwrap();
            let path = location.mirror_path().unwrap();
            assert_eq!(
                Location::mirrored(&path),
                Some(location),
                "{}",
                path.display()
            );
        }
        assert_eq!(Location::parse("/a/b.jpg").unwrap().mirror_path(), None);
        assert_eq!(Location::mirrored(Path::new("other/x.jpg")), None);
    }

    #[test]
    fn image_paths_resolve_beside_the_index_in_the_same_bucket() {
        let index = Location::parse("s3://data/helmet/train/index.txt").unwrap();
        assert_eq!(
            index.join("images/a.jpg").unwrap().to_string(),
            "s3://data/helmet/train/images/a.jpg"
        );
        assert_eq!(
            index.join("../shared/b.jpg").unwrap().to_string(),
            "s3://data/helmet/shared/b.jpg"
        );
        let error = index.join("../../../x.jpg").unwrap_err().to_string();
        assert!(error.contains("leaves the bucket"), "{error}");
        let web = Location::parse("https://host/d/index.txt").unwrap();
        assert_eq!(
            web.join("i/a.jpg").unwrap().to_string(),
            "https://host/d/i/a.jpg"
        );
        assert_eq!(
            index.with_suffix(".manifest.json").to_string(),
            "s3://data/helmet/train/index.txt.manifest.json"
        );
    }
}

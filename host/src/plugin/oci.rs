//! Plugins in OCI registries, as the CNCF's WebAssembly OCI artifact convention lays them
//! out: a manifest whose config (`application/vnd.wasm.config.v0+json`) says what the
//! component is and whose one layer (`application/wasm`) is the component. Pushed and
//! pulled over the distribution API; every blob is checked against its digest. A push
//! with a key signs the layer's digest (ed25519, in the manifest's annotations); a host
//! that trusts keys (`<data directory>/trusted-keys/*.pub`) pulls only what one of them
//! signed.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{HeaderMap, Method, StatusCode};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files::write_atomically;
use crate::net::{Http, Response, Trust};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.wasm.config.v0+json";
const LAYER: &str = "application/wasm";
/// The manifest annotations a signed push writes.
const SIGNATURE: &str = "dev.sedna.plugin.signature.ed25519";
const SIGNER: &str = "dev.sedna.plugin.key.ed25519";
/// The largest manifest read (they are a few hundred bytes).
const MAX_MANIFEST: usize = 64 << 10;
/// The largest blob pulled: a component (the API takes at most 64 MiB).
const MAX_BLOB: u64 = 256 << 20;

/// `oci://registry[:port]/repository[:tag][@sha256:digest]`. A registry on this machine
/// (`localhost`, a loopback address) is spoken to in plain HTTP, any other in HTTPS.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    /// `http://registry[:port]`, or https.
    base: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`: the manifest's digest.
    pub digest: Option<String>,
}

impl Reference {
    pub fn is_oci(text: &str) -> bool {
        text.starts_with("oci://")
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let wrong = |why: &str| {
            anyhow!(
                "{text:?} is not an OCI reference: {why}; write oci://registry[:port]/repository[:tag][@sha256:digest]"
            )
        };
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| wrong("no oci://"))?;
        let (registry, path) = rest.split_once('/').ok_or_else(|| wrong("no repository"))?;
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| wrong("the digest is not sha256:<64 hex digits>"))?;
                (path, Some(format!("sha256:{}", hex.to_ascii_lowercase())))
            }
            None => (path, None),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag.to_string())),
            _ => (path, None),
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if !repository.split('/').all(component_ok) {
            return Err(wrong(
                "a repository is lowercase letters, digits, `.`, `_` and `-`, in parts split by `/`",
            ));
        }
        if tag.as_deref().is_some_and(|t| {
            t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }) {
            return Err(wrong("a tag is letters, digits, `.`, `_` and `-`"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(wrong("name a tag (`:1.0`) or a digest (`@sha256:...`)"));
        }
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        let local = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let scheme = if local { "http" } else { "https" };
        Ok(Reference {
            base: format!("{scheme}://{registry}"),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The reference with `digest` in place of a tag: what names exactly this content.
    pub fn pinned(&self, digest: &str) -> String {
        let registry = self.base.split_once("://").map_or("", |(_, r)| r);
        format!("oci://{registry}/{}@{digest}", self.repository)
    }

    fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        let text = format!("{}/v2/{}/{path}", self.base, self.repository);
        url::Url::parse(&text).with_context(|| format!("{text}: not a URL"))
    }

    /// What the manifest is fetched by: its digest, else its tag.
    fn manifest_name(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let registry = self.base.split_once("://").map_or("", |(_, r)| r);
        write!(f, "oci://{registry}/{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest: digest(bytes),
            size: bytes.len() as u64,
        }
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What a signature signs: the component's digest, so that the same component signed
/// once verifies under any tag.
fn signed_message(layer_digest: &str) -> Vec<u8> {
    format!("sedna-plugin:{layer_digest}").into_bytes()
}

/// A key that signs pushes: a PKCS#8 ed25519 key, hex-encoded, in a file of its own.
pub struct SigningKey(Ed25519KeyPair);

/// A key whose signatures a host trusts: 32 bytes, hex-encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct PublicKey(Vec<u8>);

impl SigningKey {
    /// Makes a key pair: the private key in `file` (mode 0600), the public one in
    /// `file.pub`. Returns the public key's file.
    pub fn generate(file: &Path) -> anyhow::Result<PathBuf> {
        if file.exists() {
            bail!("{} exists: choose another file", file.display());
        }
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow!("cannot make an ed25519 key"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| anyhow!("cannot read the ed25519 key just made"))?;
        let public = public_file(file);
        write_atomically(
            file,
            format!("{}\n", hex::encode(pkcs8.as_ref())).as_bytes(),
        )?;
        write_atomically(
            &public,
            format!("{}\n", hex::encode(pair.public_key())).as_bytes(),
        )?;
        Ok(public)
    }

    pub fn read(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the signing key {}", file.display()))?;
        hex::decode(text.trim())
            .ok()
            .and_then(|der| Ed25519KeyPair::from_pkcs8(&der).ok())
            .map(SigningKey)
            .ok_or_else(|| {
                anyhow!(
                    "{} is not a signing key: make one with `sedna plugin keygen FILE`",
                    file.display()
                )
            })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.public_key().as_ref().to_vec())
    }
}

/// `file.pub`.
fn public_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

impl PublicKey {
    pub fn read(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the public key {}", file.display()))?;
        hex::decode(text.trim())
            .ok()
            .filter(|key| key.len() == 32)
            .map(PublicKey)
            .ok_or_else(|| {
                anyhow!(
                    "{} is not an ed25519 public key (64 hex digits, as `sedna plugin keygen` writes to FILE.pub)",
                    file.display()
                )
            })
    }

    fn hex(&self) -> String {
        hex::encode(&self.0)
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// How registries are trusted over HTTPS: the system's roots, or the CA certificates in
/// the file `SEDNA_REGISTRY_CA` names.
pub fn registry_trust() -> Trust {
    std::env::var_os("SEDNA_REGISTRY_CA").map_or(Trust::System, |ca| Trust::Ca(ca.into()))
}

/// The keys a host trusts: the `*.pub` files of `<home>/trusted-keys`. None: pulls need
/// no signature.
pub fn trusted_keys(home: &Path) -> anyhow::Result<Vec<PublicKey>> {
    let dir = home.join("trusted-keys");
    let entries = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        entries => entries.with_context(|| format!("cannot read {}", dir.display()))?,
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    files.sort();
    files.iter().map(|f| PublicKey::read(f)).collect()
}

/// What a push wrote: the manifest's digest and the reference pinned to it.
#[derive(Debug)]
pub struct Pushed {
    pub digest: String,
    pub pinned: String,
    pub signed: bool,
}

/// Pushes `wasm` (a component of `world`) to `reference`, signed with `key` if given.
pub fn push(
    http: &Http,
    reference: &Reference,
    wasm: &[u8],
    world: &str,
    key: Option<&SigningKey>,
) -> anyhow::Result<Pushed> {
    let layer = Descriptor::of(LAYER, wasm);
    let config = serde_json::to_vec(&serde_json::json!({
        "created": chrono::Utc::now().to_rfc3339(),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.digest],
        "component": { "target": world },
    }))?;
    let config_descriptor = Descriptor::of(CONFIG, &config);
    upload_blob(http, reference, &config_descriptor.digest, config.into())?;
    upload_blob(http, reference, &layer.digest, Bytes::copy_from_slice(wasm))?;
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        chrono::Utc::now().to_rfc3339(),
    );
    if let Some(key) = key {
        let signature = key.0.sign(&signed_message(&layer.digest));
        annotations.insert(SIGNATURE.into(), hex::encode(signature.as_ref()));
        annotations.insert(SIGNER.into(), key.public().hex());
    }
    let manifest = serde_json::to_vec(&Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST.into()),
        artifact_type: Some(CONFIG.into()),
        config: config_descriptor,
        layers: vec![layer],
        annotations,
    })?;
    let manifest_digest = digest(&manifest);
    let name = reference
        .tag
        .clone()
        .unwrap_or_else(|| manifest_digest.clone());
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(MANIFEST));
    let answer = http.send(
        Method::PUT,
        &reference.url(&format!("manifests/{name}"))?,
        headers,
        manifest.into(),
    );
    expect(reference, "store the manifest", answer, StatusCode::CREATED)?;
    Ok(Pushed {
        pinned: reference.pinned(&manifest_digest),
        digest: manifest_digest,
        signed: key.is_some(),
    })
}

/// Uploads a blob unless the registry has it (one `POST`, then a monolithic `PUT`).
fn upload_blob(
    http: &Http,
    reference: &Reference,
    digest: &str,
    bytes: Bytes,
) -> anyhow::Result<()> {
    let url = reference.url(&format!("blobs/{digest}"))?;
    let head = http.send(Method::HEAD, &url, HeaderMap::new(), Bytes::new());
    if head.as_ref().is_ok_and(|r| r.status == StatusCode::OK) {
        return Ok(());
    }
    let started = http.send(
        Method::POST,
        &reference.url("blobs/uploads/")?,
        HeaderMap::new(),
        Bytes::new(),
    );
    let started = expect(reference, "start an upload", started, StatusCode::ACCEPTED)?;
    let location = started
        .headers
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| anyhow!("{reference}: the registry started an upload without a Location"))?;
    let mut target = url
        .join(location)
        .with_context(|| format!("{reference}: the upload's Location {location:?} is not a URL"))?;
    target.query_pairs_mut().append_pair("digest", digest);
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let done = http.send(Method::PUT, &target, headers, bytes);
    expect(reference, "upload a blob", done, StatusCode::CREATED).map(drop)
}

/// The answer when it has `status`, else an error naming what failed and the registry's
/// words.
fn expect(
    reference: &Reference,
    what: &str,
    answer: anyhow::Result<Response>,
    status: StatusCode,
) -> anyhow::Result<Response> {
    let answer = answer.with_context(|| format!("{reference}: cannot reach the registry"))?;
    if answer.status == status {
        return Ok(answer);
    }
    let words = answer.text();
    let words = words.trim();
    let words = &words[..words.len().min(300)];
    let hint = match answer.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            ": the registry wants credentials, which sedna does not send yet; use a registry (or a repository) open to this machine"
        }
        StatusCode::NOT_FOUND => ": no such repository, tag or digest",
        _ => "",
    };
    bail!(
        "{reference}: the registry would not {what} ({}{hint}): {words}",
        answer.status
    )
}

/// A pulled component, checked: its bytes, the world its config names and the
/// manifest's digest.
#[derive(Debug)]
pub struct Pulled {
    pub wasm: Vec<u8>,
    pub world: Option<String>,
    pub digest: String,
}

/// Pulls `reference`: the manifest (checked against the reference's digest, when it
/// has one), its signature when `trusted` keys are given, and the component (checked
/// against the layer's digest and size).
pub fn pull(http: &Http, reference: &Reference, trusted: &[PublicKey]) -> anyhow::Result<Pulled> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST));
    let url = reference.url(&format!("manifests/{}", reference.manifest_name()))?;
    let answer = http.send_limited(Method::GET, &url, headers, Bytes::new(), MAX_MANIFEST);
    let answer = expect(reference, "give the manifest", answer, StatusCode::OK)?;
    let manifest_digest = digest(&answer.body);
    if let Some(wanted) = &reference.digest
        && *wanted != manifest_digest
    {
        bail!("{reference}: the registry's manifest has the digest {manifest_digest}: refused");
    }
    let manifest: Manifest = serde_json::from_slice(&answer.body)
        .with_context(|| format!("{reference}: the manifest is not an OCI image manifest"))?;
    let layers: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| l.media_type == LAYER)
        .collect();
    let [layer] = layers.as_slice() else {
        bail!(
            "{reference}: not a WebAssembly plugin: its manifest has {} `{LAYER}` layers, not one",
            layers.len()
        );
    };
    if !trusted.is_empty() {
        verify(reference, &manifest, &layer.digest, trusted)?;
    }
    let wasm = blob(http, reference, layer)?;
    let world = match manifest.config.media_type.as_str() {
        CONFIG => blob(http, reference, &manifest.config)
            .ok()
            .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
            .and_then(|c| c["component"]["target"].as_str().map(str::to_string)),
        _ => None,
    };
    Ok(Pulled {
        wasm,
        world,
        digest: manifest_digest,
    })
}

fn verify(
    reference: &Reference,
    manifest: &Manifest,
    layer_digest: &str,
    trusted: &[PublicKey],
) -> anyhow::Result<()> {
    let Some(signature) = manifest.annotations.get(SIGNATURE) else {
        bail!(
            "{reference}: unsigned, and this host trusts only signed plugins (keys in <data directory>/trusted-keys): push it with --sign-key"
        );
    };
    let signature = hex::decode(signature)
        .map_err(|_| anyhow!("{reference}: its signature is not hex: refused"))?;
    let message = signed_message(layer_digest);
    if trusted.iter().any(|key| key.verifies(&message, &signature)) {
        return Ok(());
    }
    bail!(
        "{reference}: signed by no key this host trusts (signer {}): refused",
        manifest
            .annotations
            .get(SIGNER)
            .map_or("unknown", String::as_str)
    )
}

/// A blob, checked against its descriptor's digest and size.
fn blob(http: &Http, reference: &Reference, descriptor: &Descriptor) -> anyhow::Result<Vec<u8>> {
    if descriptor.size > MAX_BLOB {
        bail!(
            "{reference}: the blob {} announces {} bytes, over the {MAX_BLOB} a plugin may be: refused",
            descriptor.digest,
            descriptor.size
        );
    }
    // Read no more than announced: a longer answer fails rather than fill memory.
    let limit = descriptor.size as usize;
    let get =
        |url: &url::Url| http.send_limited(Method::GET, url, HeaderMap::new(), Bytes::new(), limit);
    let url = reference.url(&format!("blobs/{}", descriptor.digest))?;
    let mut answer = get(&url)?;
    // A registry that keeps blobs elsewhere (object storage) redirects once.
    if answer.status.is_redirection()
        && let Some(location) = answer.headers.get(LOCATION).and_then(|l| l.to_str().ok())
    {
        let target = url.join(location)?;
        answer = get(&target)?;
    }
    let answer = expect(reference, "give a blob", Ok(answer), StatusCode::OK)?;
    let found = digest(&answer.body);
    if found != descriptor.digest || answer.body.len() as u64 != descriptor.size {
        bail!(
            "{reference}: the blob {} came back as {found} ({} bytes, {} announced): refused",
            descriptor.digest,
            answer.body.len(),
            descriptor.size
        );
    }
    Ok(answer.body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_bad_ones_say_the_form() {
        let r = Reference::parse("oci://127.0.0.1:5000/hems/mine:1.0").unwrap();
        assert_eq!(r.base, "http://127.0.0.1:5000");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("hems/mine", Some("1.0"))
        );
        let hex = "ab".repeat(32);
        let r = Reference::parse(&format!("oci://ghcr.io/org/hem@sha256:{hex}")).unwrap();
        assert_eq!(r.base, "https://ghcr.io");
        assert_eq!(r.digest.as_deref(), Some(format!("sha256:{hex}").as_str()));
        assert_eq!(r.to_string(), format!("oci://ghcr.io/org/hem@sha256:{hex}"));
        assert_eq!(
            Reference::parse("oci://localhost:5000/a:1")
                .unwrap()
                .pinned("sha256:00"),
            "oci://localhost:5000/a@sha256:00"
        );
        for bad in [
            "oci://registry",
            "oci://registry/Upper:1",
            "oci://registry/repo",
            "oci://registry/repo@sha256:short",
            "http://registry/repo:1",
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("oci://registry[:port]/repository"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn signatures_verify_with_the_signers_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let a_pub = SigningKey::generate(&a).unwrap();
        let b_pub = SigningKey::generate(&b).unwrap();
        assert!(SigningKey::generate(&a).is_err(), "never overwritten");
        let key = SigningKey::read(&a).unwrap();
        assert_eq!(key.public(), PublicKey::read(&a_pub).unwrap());
        let message = signed_message("sha256:00");
        let signature = key.0.sign(&message);
        assert!(key.public().verifies(&message, signature.as_ref()));
        let other = PublicKey::read(&b_pub).unwrap();
        assert!(!other.verifies(&message, signature.as_ref()));
        assert!(
            !key.public()
                .verifies(&signed_message("sha256:01"), signature.as_ref())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = PublicKey::read(&a).unwrap_err().to_string();
        assert!(err.contains("not an ed25519 public key"), "{err}");
        let err = SigningKey::read(&a_pub).err().unwrap().to_string();
        assert!(err.contains("sedna plugin keygen"), "{err}");
    }
}

//! Reading just enough of a pushed manifest to validate it and to index it: its media type, the
//! blobs and manifests it references, and its `subject`.
//!
//! The bytes are never re-serialised: the registry stores exactly what the client sent. Parsing is
//! lenient about fields it does not need (unknown fields are ignored) and strict about the ones it
//! does (a descriptor's digest must be valid, schemaVersion must be 2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::types::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Whether a manifest type is a list of manifests (index) or a single image/artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OCI image manifest or Docker schema 2 manifest.
    Image,
    /// OCI image index or Docker manifest list.
    Index,
}

/// The kind of a supported manifest media type, or `None` for anything else.
pub fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// A content descriptor, as far as the registry needs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    #[serde(default)]
    urls: Vec<String>,
    /// Never read: declared so that a descriptor whose `artifactType` is not a string is
    /// refused as invalid.
    #[allow(dead_code)]
    artifact_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<Map<String, Value>>,
}

/// One reference from a manifest to other content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// What is referenced.
    pub digest: Digest,
    /// True for index entries (they may be manifests or, for BuildKit caches, plain blobs).
    pub from_index: bool,
}

/// What the registry learned from a manifest.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The manifest's media type (from the body, or the request's Content-Type).
    pub media_type: String,
    /// Image or index.
    pub kind: Kind,
    /// Content that must exist in the repository.
    pub refs: Vec<Ref>,
    /// The `subject`, if any.
    pub subject: Option<Digest>,
    /// `artifactType`, falling back to the config media type for image manifests.
    pub artifact_type: Option<String>,
    /// The manifest's annotations.
    pub annotations: Option<Map<String, Value>>,
}

/// The descriptor of a referrer, as listed by the referrers API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referrer manifest.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its artifact type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

fn descriptor_digest(d: &RawDescriptor, what: &str) -> Result<Digest> {
    let raw = d
        .digest
        .as_deref()
        .ok_or_else(|| Error::ManifestInvalid(format!("{what} has no digest")))?;
    if d.media_type.as_deref().is_none_or(str::is_empty) {
        return Err(Error::ManifestInvalid(format!("{what} has no mediaType")));
    }
    match d.size {
        Some(s) if s >= 0 => {}
        _ => {
            return Err(Error::ManifestInvalid(format!(
                "{what} needs a non-negative size"
            )))
        }
    }
    raw.parse()
        .map_err(|e| Error::ManifestInvalid(format!("{what}: {e}")))
}

/// Strips parameters (`; charset=...`) and white space from a Content-Type value.
pub fn bare_media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// Parses and validates a manifest. `content_type` is the request's Content-Type, if any.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed> {
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| Error::ManifestInvalid(format!("not a JSON manifest: {e}")))?;
    let media_type = media_type_of(&raw, content_type)?;
    let kind = kind_of(&media_type).ok_or_else(|| {
        Error::ManifestInvalid(format!(
            "unsupported manifest media type {media_type}; accepted: {OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"
        ))
    })?;
    if raw.schema_version != Some(2) {
        return Err(Error::ManifestInvalid("schemaVersion must be 2".into()));
    }
    let mut artifact_type = raw.artifact_type.clone().filter(|a| !a.is_empty());
    let refs = match kind {
        Kind::Image => {
            let (refs, config_type) = image_refs(&raw)?;
            if artifact_type.is_none() {
                artifact_type = config_type;
            }
            refs
        }
        Kind::Index => index_refs(&raw)?,
    };
    let subject = match &raw.subject {
        Some(s) => Some(descriptor_digest(s, "subject")?),
        None => None,
    };
    Ok(Parsed {
        media_type,
        kind,
        refs,
        subject,
        artifact_type,
        annotations: raw.annotations,
    })
}

/// The manifest's media type: from the body, else from the request's Content-Type, else from
/// its shape; the two must agree when both are given.
fn media_type_of(raw: &RawManifest, content_type: Option<&str>) -> Result<String> {
    let ct = content_type.map(bare_media_type).filter(|c| !c.is_empty());
    Ok(match (&raw.media_type, ct) {
        (Some(m), Some(c)) if m != c => {
            return Err(Error::ManifestInvalid(format!(
                "Content-Type {c} does not match the manifest's mediaType {m}"
            )))
        }
        (Some(m), _) => m.clone(),
        (None, Some(c)) if kind_of(c).is_some() => c.to_owned(),
        // No usable type from either: infer from the shape, as the image spec allows.
        (None, _) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, _) if raw.config.is_some() => OCI_MANIFEST.to_owned(),
        (None, Some(c)) => c.to_owned(),
        (None, None) => {
            return Err(Error::ManifestInvalid(
                "no mediaType in the manifest and no Content-Type".into(),
            ))
        }
    })
}

/// An image manifest's references (config, then layers stored here), and its config's media
/// type.
fn image_refs(raw: &RawManifest) -> Result<(Vec<Ref>, Option<String>)> {
    let config = raw
        .config
        .as_ref()
        .ok_or_else(|| Error::ManifestInvalid("image manifest has no config".into()))?;
    let mut refs = vec![Ref {
        digest: descriptor_digest(config, "config")?,
        from_index: false,
    }];
    let layers = raw
        .layers
        .as_ref()
        .ok_or_else(|| Error::ManifestInvalid("image manifest has no layers".into()))?;
    for (i, l) in layers.iter().enumerate() {
        let digest = descriptor_digest(l, &format!("layers[{i}]"))?;
        // Foreign layers (with urls) live outside the registry.
        if l.urls.is_empty() {
            refs.push(Ref {
                digest,
                from_index: false,
            });
        }
    }
    Ok((refs, config.media_type.clone()))
}

/// An index's references: its manifests.
fn index_refs(raw: &RawManifest) -> Result<Vec<Ref>> {
    let manifests = raw
        .manifests
        .as_ref()
        .ok_or_else(|| Error::ManifestInvalid("index has no manifests".into()))?;
    manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(Ref {
                digest: descriptor_digest(m, &format!("manifests[{i}]"))?,
                from_index: true,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,{extra}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":2}},"layers":[]}}"#
        )
    }

    #[test]
    fn media_type_rules() {
        let with = image(&format!(r#""mediaType":"{OCI_MANIFEST}","#));
        assert_eq!(
            parse(with.as_bytes(), Some(OCI_MANIFEST))
                .unwrap()
                .media_type,
            OCI_MANIFEST
        );
        assert_eq!(
            parse(
                with.as_bytes(),
                Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8")
            )
            .unwrap()
            .media_type,
            OCI_MANIFEST
        );
        assert!(matches!(
            parse(with.as_bytes(), Some(OCI_INDEX)),
            Err(Error::ManifestInvalid(_))
        ));
        let without = image("");
        assert_eq!(
            parse(without.as_bytes(), Some(DOCKER_MANIFEST))
                .unwrap()
                .media_type,
            DOCKER_MANIFEST
        );
        assert_eq!(
            parse(without.as_bytes(), None).unwrap().media_type,
            OCI_MANIFEST
        );
        assert!(parse(b"{", None).is_err());
        assert!(parse(b"[]", None).is_err());
        let schema1 = r#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+json"}"#;
        assert!(parse(schema1.as_bytes(), None).is_err());
    }

    #[test]
    fn refs_subject_and_artifact_type() {
        let m = image(&format!(
            r#""subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":5}},"annotations":{{"a":"b"}},"#
        ));
        let p = parse(m.as_bytes(), None).unwrap();
        assert_eq!(p.refs.len(), 1);
        assert_eq!(p.subject.unwrap().to_string(), D);
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(p.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn bad_descriptors() {
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(parse(bad_digest.as_bytes(), None).is_err());
        let neg = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D}","size":-1}},"layers":[]}}"#
        );
        assert!(parse(neg.as_bytes(), None).is_err());
        let no_layers = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"{D}","size":1}}}}"#
        );
        assert!(parse(no_layers.as_bytes(), None).is_err());
    }
}

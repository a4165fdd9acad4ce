//! OCI content for the tests: media types, digests, descriptors, and manifest and index builders.

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256, Sha512};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The OCI empty descriptor media type (`{}`).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Digest of the two bytes `{}`, the content of the OCI empty descriptor.
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `sha512:<hex>` of `data`.
pub fn sha512_digest(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// A descriptor `{mediaType, digest (sha256), size}` of `data`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256_digest(data),
        "size": data.len(),
    })
}

/// The fields image manifests and image indexes share, and how they are written.
#[derive(Debug, Clone)]
struct Common {
    media_type: Option<String>,
    subject: Option<Value>,
    artifact_type: Option<String>,
    annotations: Map<String, Value>,
}

impl Common {
    fn new(media_type: &str) -> Self {
        Common {
            media_type: Some(media_type.to_owned()),
            subject: None,
            artifact_type: None,
            annotations: Map::new(),
        }
    }

    /// `schemaVersion`, `mediaType`, `artifactType`, then what `body` adds, `subject` and
    /// `annotations`.
    fn to_value(&self, body: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut m = Map::new();
        m.insert("schemaVersion".into(), json!(2));
        if let Some(mt) = &self.media_type {
            m.insert("mediaType".into(), json!(mt));
        }
        if let Some(at) = &self.artifact_type {
            m.insert("artifactType".into(), json!(at));
        }
        body(&mut m);
        if let Some(s) = &self.subject {
            m.insert("subject".into(), s.clone());
        }
        if !self.annotations.is_empty() {
            m.insert(
                "annotations".into(),
                Value::Object(self.annotations.clone()),
            );
        }
        Value::Object(m)
    }
}

/// The setters of the fields in [`Common`], for both builders.
macro_rules! common_setters {
    () => {
        /// Sets the `mediaType` field; `None` leaves it out.
        pub fn media_type(mut self, media_type: Option<&str>) -> Self {
            self.common.media_type = media_type.map(str::to_owned);
            self
        }

        pub fn subject(mut self, descriptor: Value) -> Self {
            self.common.subject = Some(descriptor);
            self
        }

        pub fn artifact_type(mut self, artifact_type: &str) -> Self {
            self.common.artifact_type = Some(artifact_type.to_owned());
            self
        }

        pub fn annotation(mut self, key: &str, value: &str) -> Self {
            self.common.annotations.insert(key.to_owned(), json!(value));
            self
        }
    };
}

/// Builds an image manifest (OCI by default) as compact JSON bytes.
#[derive(Debug, Clone)]
pub struct ManifestBuilder {
    common: Common,
    config: Value,
    layers: Vec<Value>,
}

impl ManifestBuilder {
    /// A manifest with this config descriptor and no layers.
    pub fn new(config: Value) -> Self {
        ManifestBuilder {
            common: Common::new(OCI_MANIFEST),
            config,
            layers: Vec::new(),
        }
    }

    /// An artifact manifest: the empty config descriptor and `artifactType`.
    pub fn artifact(artifact_type: &str) -> Self {
        Self::new(empty_descriptor()).artifact_type(artifact_type)
    }

    common_setters!();

    pub fn layer(mut self, descriptor: Value) -> Self {
        self.layers.push(descriptor);
        self
    }

    pub fn to_value(&self) -> Value {
        self.common.to_value(|m| {
            m.insert("config".into(), self.config.clone());
            m.insert("layers".into(), Value::Array(self.layers.clone()));
        })
    }

    pub fn build(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_value()).expect("serialise manifest")
    }
}

/// Builds an image index (OCI by default) as compact JSON bytes.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    common: Common,
    manifests: Vec<Value>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexBuilder {
    pub fn new() -> Self {
        IndexBuilder {
            common: Common::new(OCI_INDEX),
            manifests: Vec::new(),
        }
    }

    common_setters!();

    pub fn manifest(mut self, descriptor: Value) -> Self {
        self.manifests.push(descriptor);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let index = self.common.to_value(|m| {
            m.insert("manifests".into(), Value::Array(self.manifests.clone()));
        });
        serde_json::to_vec(&index).expect("serialise index")
    }
}

/// The OCI empty descriptor (`{}`, 2 bytes).
pub fn empty_descriptor() -> Value {
    json!({"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2})
}

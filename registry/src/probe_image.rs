//! The node readiness probe image, built in: `registry-node-setup/probe:1` is an image index
//! with one image per common Linux architecture, each a config and the same empty layer (an
//! empty tar archive). The registry answers `GET`/`HEAD` of it from memory — nothing is stored,
//! no event is sent, garbage collection never sees it — so a node's readiness probe can pull it
//! without pushing first: under access control a node has no identity to push with. Pulls of it
//! pass the access rules like any other repository, so a probe proves what a real pull would.

use std::sync::OnceLock;

use bytes::Bytes;
use storage::hash::digest_of;
use storage::{Algorithm, Digest, Reference};

/// The repository of the probe image.
pub const REPO: &str = "registry-node-setup/probe";
/// Its tag.
pub const TAG: &str = "1";

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// Architectures of the index (Go's names, as runtimes match them), with their variant.
const PLATFORMS: &[(&str, Option<&str>)] = &[
    ("amd64", None),
    ("arm64", None),
    ("arm", Some("v7")),
    ("ppc64le", None),
    ("s390x", None),
    ("riscv64", None),
    ("386", None),
];

/// One object of the probe image: its bytes, digest and media type.
#[derive(Debug)]
pub struct Object {
    /// `sha256:` of the bytes.
    pub digest: Digest,
    /// The media type it is served with (manifests) or described with (blobs).
    pub media_type: &'static str,
    /// The exact bytes.
    pub bytes: Bytes,
}

impl Object {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Object {
        Object {
            digest: digest_of(Algorithm::Sha256, &bytes),
            media_type,
            bytes: Bytes::from(bytes),
        }
    }

    fn descriptor(&self) -> String {
        format!(
            r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
            self.media_type,
            self.digest,
            self.bytes.len()
        )
    }
}

/// The whole probe image.
#[derive(Debug)]
pub struct ProbeImage {
    /// The index (what the tag names).
    pub index: Object,
    /// Per platform of [`PLATFORMS`], in order: (architecture, config, manifest).
    pub images: Vec<(&'static str, Object, Object)>,
    /// The empty layer every image shares.
    pub layer: Object,
}

/// The probe image (built once).
pub fn image() -> &'static ProbeImage {
    static IMAGE: OnceLock<ProbeImage> = OnceLock::new();
    IMAGE.get_or_init(build)
}

fn build() -> ProbeImage {
    let layer = Object::new(LAYER_TYPE, vec![0u8; 1024]); // two zero blocks: an empty tar
    let mut images = Vec::new();
    let mut children = Vec::new();
    for (arch, variant) in PLATFORMS {
        let config = Object::new(
            CONFIG_TYPE,
            format!(
                r#"{{"architecture":"{arch}",{}"os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
                variant.map(|v| format!(r#""variant":"{v}","#)).unwrap_or_default(),
                layer.digest
            )
            .into_bytes(),
        );
        let manifest = Object::new(
            MANIFEST_TYPE,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_TYPE}","config":{},"layers":[{}]}}"#,
                config.descriptor(),
                layer.descriptor()
            )
            .into_bytes(),
        );
        let platform = match variant {
            Some(v) => format!(r#"{{"architecture":"{arch}","os":"linux","variant":"{v}"}}"#),
            None => format!(r#"{{"architecture":"{arch}","os":"linux"}}"#),
        };
        let d = manifest.descriptor();
        children.push(format!(r#"{},"platform":{platform}}}"#, &d[..d.len() - 1]));
        images.push((*arch, config, manifest));
    }
    let index = Object::new(
        INDEX_TYPE,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{INDEX_TYPE}","manifests":[{}]}}"#,
            children.join(",")
        )
        .into_bytes(),
    );
    ProbeImage {
        index,
        images,
        layer,
    }
}

impl ProbeImage {
    /// The manifest `reference` names in the probe repository: the tag or the index's digest
    /// give the index, a child's digest that child.
    pub fn manifest(&self, reference: &Reference) -> Option<&Object> {
        match reference {
            Reference::Tag(t) => (t.as_str() == TAG).then_some(&self.index),
            Reference::Digest(d) if *d == self.index.digest => Some(&self.index),
            Reference::Digest(d) => self
                .images
                .iter()
                .map(|(_, _, m)| m)
                .find(|m| m.digest == *d),
        }
    }

    /// The blob `digest` names: the layer or a config.
    pub fn blob(&self, digest: &Digest) -> Option<&Object> {
        if *digest == self.layer.digest {
            return Some(&self.layer);
        }
        self.images
            .iter()
            .map(|(_, c, _)| c)
            .find(|c| c.digest == *digest)
    }

    /// (config, manifest) of the image for Go architecture `arch`, if the index has one.
    pub fn for_arch(&self, arch: &str) -> Option<(&Object, &Object)> {
        self.images
            .iter()
            .find(|(a, _, _)| *a == arch)
            .map(|(_, c, m)| (c, m))
    }
}

/// This machine's architecture by Go's name (what image platforms use).
pub fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "x86" => "386",
        a => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_in_the_index_is_served() {
        let img = image();
        let index: serde_json::Value = serde_json::from_slice(&img.index.bytes).unwrap();
        let children = index["manifests"].as_array().unwrap();
        assert_eq!(children.len(), PLATFORMS.len());
        for child in children {
            let m = img
                .manifest(&child["digest"].as_str().unwrap().parse().unwrap())
                .unwrap();
            assert_eq!(child["size"], m.bytes.len());
            let man: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
            let config: Digest = man["config"]["digest"].as_str().unwrap().parse().unwrap();
            let c = img.blob(&config).unwrap();
            let cfg: serde_json::Value = serde_json::from_slice(&c.bytes).unwrap();
            assert_eq!(cfg["architecture"], child["platform"]["architecture"]);
            assert_eq!(cfg["rootfs"]["diff_ids"][0], img.layer.digest.to_string());
            let layer: Digest = man["layers"][0]["digest"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(img.blob(&layer).unwrap().bytes.len(), 1024);
        }
        assert!(img.manifest(&TAG.parse().unwrap()).is_some());
        assert!(img.manifest(&"2".parse().unwrap()).is_none());
        assert!(img.for_arch(goarch()).is_some());
    }
}

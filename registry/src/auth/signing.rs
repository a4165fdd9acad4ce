//! The key that signs and verifies registry tokens: from `token_key_file`, or kept in storage
//! at `auth/token-key` (generated once) so every replica on the same storage shares it.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use storage::Store;

/// Where the token-signing key comes from.
#[derive(Debug)]
enum KeySource {
    File,
    Storage(Arc<Store>),
}

const STORED_KEY: &str = "auth/token-key";

/// The token-signing key, when it was last (re-)read, and where it comes from.
#[derive(Debug)]
pub(super) struct SigningKey {
    key: RwLock<(ring::hmac::Key, Instant)>,
    source: KeySource,
}

fn key_from_bytes(b: &[u8]) -> anyhow::Result<ring::hmac::Key> {
    let b = b.trim_ascii();
    if b.len() < 32 {
        anyhow::bail!("the token signing key must be at least 32 bytes");
    }
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b))
}

/// Reads the shared key from storage, creating it when absent. Two replicas starting at once
/// may both write; both then re-read, and a replica whose token fails to verify re-reads the key
/// (at most every 10 s), so they converge on the last one written.
async fn stored_key(reg: &Store) -> anyhow::Result<ring::hmac::Key> {
    let backend = reg.backend();
    match backend.get_bytes(STORED_KEY).await {
        Ok(b) => return key_from_bytes(&b),
        Err(storage::Error::NotFound(_)) => {}
        Err(e) => return Err(anyhow::anyhow!("reading {STORED_KEY} from storage: {e}")),
    }
    let mut raw = [0u8; 48];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| anyhow::anyhow!("no randomness for the token signing key"))?;
    let text = base64::engine::general_purpose::STANDARD.encode(raw);
    backend
        .put(STORED_KEY, Bytes::from(text))
        .await
        .map_err(|e| anyhow::anyhow!("storing {STORED_KEY}: {e}"))?;
    tracing::info!(
        key = STORED_KEY,
        "generated the token signing key in storage"
    );
    let b = backend
        .get_bytes(STORED_KEY)
        .await
        .map_err(|e| anyhow::anyhow!("reading {STORED_KEY} from storage: {e}"))?;
    key_from_bytes(&b)
}

impl SigningKey {
    /// Reads `file` when given, else the key kept in `registry` (creating it when absent).
    pub(super) async fn load(
        file: Option<&Path>,
        registry: &Arc<Store>,
    ) -> anyhow::Result<SigningKey> {
        let (key, source) = match file {
            Some(p) => {
                let b = std::fs::read(p)
                    .map_err(|e| anyhow::anyhow!("reading token_key_file {}: {e}", p.display()))?;
                (key_from_bytes(&b)?, KeySource::File)
            }
            None => (
                stored_key(registry).await?,
                KeySource::Storage(registry.clone()),
            ),
        };
        Ok(SigningKey {
            key: RwLock::new((key, Instant::now())),
            source,
        })
    }

    /// Where the key comes from, for the start-up log.
    pub(super) fn origin(&self) -> &'static str {
        match self.source {
            KeySource::File => "token_key_file",
            KeySource::Storage(_) => "storage",
        }
    }

    pub(super) fn get(&self) -> ring::hmac::Key {
        self.key.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// Re-reads a storage-kept key after a signature failure (another replica may have written
    /// it last); at most every 10 s. Returns whether the key changed.
    pub(super) async fn refresh(&self) -> bool {
        let KeySource::Storage(reg) = &self.source else {
            return false;
        };
        {
            let k = self.key.read().unwrap_or_else(|e| e.into_inner());
            if k.1.elapsed() < Duration::from_secs(10) {
                return false;
            }
        }
        let fresh = match reg.backend().get_bytes(STORED_KEY).await {
            Ok(b) => key_from_bytes(&b).ok(),
            Err(_) => None,
        };
        let mut k = self.key.write().unwrap_or_else(|e| e.into_inner());
        k.1 = Instant::now();
        match fresh {
            Some(f) => {
                k.0 = f;
                true
            }
            None => false,
        }
    }
}

//! Incremental hashing whose state can be saved in storage between requests, so any process
//! (after a restart, or another replica) continues an upload without re-reading its bytes.

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{Error, Result};
use crate::types::{Algorithm, Digest};

/// A running hash of one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_bytes(Algorithm::Sha256, h.finalize().as_ref()),
            Hasher::Sha512(h) => Digest::from_bytes(Algorithm::Sha512, h.finalize().as_ref()),
        }
    }

    /// The state as bytes, to store with an upload.
    pub fn save(&self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.serialize().as_slice().to_vec(),
            Hasher::Sha512(h) => h.serialize().as_slice().to_vec(),
        }
    }

    /// Restores a state written by [`Hasher::save`].
    pub fn restore(alg: Algorithm, state: &[u8]) -> Result<Self> {
        let bad = || Error::Corrupt(format!("unreadable {alg} hash state"));
        Ok(match alg {
            Algorithm::Sha256 => Hasher::Sha256(
                Sha256::deserialize(state.try_into().map_err(|_| bad())?).map_err(|_| bad())?,
            ),
            Algorithm::Sha512 => Hasher::Sha512(
                Sha512::deserialize(state.try_into().map_err(|_| bad())?).map_err(|_| bad())?,
            ),
        })
    }
}

/// The digest of a byte slice.
pub fn digest_of(alg: Algorithm, data: &[u8]) -> Digest {
    let mut h = Hasher::new(alg);
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_restore_continue_the_same_hash() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = Hasher::new(alg);
            h.update(b"hello ");
            let saved = h.save();
            let mut r = Hasher::restore(alg, &saved).unwrap();
            r.update(b"world");
            assert_eq!(r.finish(), digest_of(alg, b"hello world"));
        }
        assert!(Hasher::restore(Algorithm::Sha256, b"short").is_err());
    }

    #[test]
    fn known_answer() {
        assert_eq!(
            digest_of(Algorithm::Sha256, b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

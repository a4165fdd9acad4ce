//! Upload sessions: start, status, chunked appends hashed as they arrive, the closing commit,
//! monolithic uploads, cancellation and purging.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::tap::HashTap;
use super::{Registry, UploadStatus};
use crate::backend::ByteStream;
use crate::error::{Error, Result};
use crate::hash::Hasher;
use crate::layout;
use crate::types::{Algorithm, Digest, RepoName};

/// The saved state of an upload session (`uploads/<id>/state`).
#[derive(Debug, Serialize, Deserialize)]
struct UploadState {
    repo: String,
    offset: u64,
    algorithm: String,
    hash_state: String,
    created: u64,
}

fn upload_id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Refuses a chunk that does not start where the session ends.
fn check_start(start: Option<u64>, offset: u64) -> Result<()> {
    match start {
        Some(start) if start != offset => Err(Error::RangeInvalid { start, offset }),
        _ => Ok(()),
    }
}

impl Registry {
    fn upload_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.upload_locks.lock().expect("lock poisoned");
        if map.len() > 4096 {
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(id.to_owned()).or_default().clone()
    }

    async fn load_upload(&self, repo: &RepoName, id: &str) -> Result<UploadState> {
        if !upload_id_ok(id) {
            return Err(Error::UploadUnknown);
        }
        let raw = match self.backend.stage_get_state(id).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(Error::UploadUnknown),
            Err(e) => return Err(e),
        };
        let state: UploadState = serde_json::from_slice(&raw)
            .map_err(|e| Error::Corrupt(format!("upload {id} state: {e}")))?;
        if state.repo != repo.as_str() {
            return Err(Error::UploadUnknown);
        }
        Ok(state)
    }

    async fn save_upload(&self, id: &str, state: &UploadState) -> Result<()> {
        let raw = serde_json::to_vec(state).expect("state serialises");
        self.backend.stage_put_state(id, Bytes::from(raw)).await
    }

    /// Opens an upload session whose bytes will be hashed with `alg`.
    pub async fn upload_start(&self, repo: &RepoName, alg: Algorithm) -> Result<UploadStatus> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let state = UploadState {
            repo: repo.to_string(),
            offset: 0,
            algorithm: alg.to_string(),
            hash_state: base64::engine::general_purpose::STANDARD.encode(Hasher::new(alg).save()),
            created: now_secs(),
        };
        self.save_upload(&id, &state).await?;
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Where an upload session stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        let state = self.load_upload(repo, id).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: state.offset,
        })
    }

    /// Appends `data` at `offset` of staged upload `id`, hashing it into `hasher`. `len` is the
    /// body's declared length (enforced).
    async fn append(
        &self,
        id: &str,
        offset: u64,
        hasher: Hasher,
        len: Option<u64>,
        data: ByteStream,
    ) -> Result<(u64, Hasher)> {
        let tap = HashTap::start(hasher);
        // The backend drops the stream, and with it the tap's sender, when it returns.
        let res = match self
            .backend
            .stage_append(id, offset, tap.tap(data, len))
            .await
        {
            // The staged bytes fell short of the saved state (a power cut before the commit's
            // sync): the session cannot continue, so the client starts the upload again.
            Err(Error::Corrupt(why)) => {
                tracing::warn!(upload = id, %why, "dropping an upload whose bytes were lost");
                let _ = self.backend.stage_delete(id).await;
                Err(Error::UploadUnknown)
            }
            other => other,
        };
        let (count, hasher) = tap.finish().await?;
        let over = len.is_some_and(|l| count != l);
        match res {
            Err(Error::Body(_)) if over => Err(Error::SizeInvalid(format!(
                "body is longer than the declared {} bytes",
                len.unwrap_or(0)
            ))),
            Err(e) => Err(e),
            Ok(_) if over => Err(Error::SizeInvalid(format!(
                "received {count} bytes, declared {}",
                len.unwrap_or(0)
            ))),
            Ok(new_len) => Ok((new_len, hasher)),
        }
    }

    /// Appends a chunk to a session. `start` comes from `Content-Range` (None: append at the end),
    /// `len` from the chunk's declared length.
    pub async fn upload_append(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        len: Option<u64>,
        data: ByteStream,
    ) -> Result<UploadStatus> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let mut state = self.load_upload(repo, id).await?;
        check_start(start, state.offset)?;
        let hasher = self.restore_hasher(&state)?;
        let (offset, hasher) = self.append(id, state.offset, hasher, len, data).await?;
        state.offset = offset;
        state.hash_state = base64::engine::general_purpose::STANDARD.encode(hasher.save());
        self.save_upload(id, &state).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset,
        })
    }

    fn restore_hasher(&self, state: &UploadState) -> Result<Hasher> {
        let alg: Algorithm = state.algorithm.parse()?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&state.hash_state)
            .map_err(|e| Error::Corrupt(format!("upload hash state: {e}")))?;
        Hasher::restore(alg, &raw)
    }

    /// Closes a session: appends the optional final chunk, verifies the whole blob against
    /// `digest`, and publishes it in `repo`. On a mismatch nothing is stored and the session ends.
    pub async fn upload_finish(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        len: Option<u64>,
        data: Option<ByteStream>,
    ) -> Result<u64> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let state = self.load_upload(repo, id).await?;
        check_start(start, state.offset)?;
        let mut hasher = self.restore_hasher(&state)?;
        let mut offset = state.offset;
        if let Some(data) = data {
            (offset, hasher) = self.append(id, offset, hasher, len, data).await?;
        }
        self.verify_and_commit(repo, id, digest, offset, hasher)
            .await?;
        Ok(offset)
    }

    async fn verify_and_commit(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        len: u64,
        hasher: Hasher,
    ) -> Result<()> {
        let actual = if hasher.algorithm() == digest.algorithm() {
            hasher.finish()
        } else {
            // The client chose another algorithm than the session's: hash the staged bytes again.
            let mut h = Hasher::new(digest.algorithm());
            let mut s = self.backend.stage_read(id, len).await?;
            while let Some(chunk) = s
                .try_next()
                .await
                .map_err(|e| Error::backend("re-read upload", e))?
            {
                h.update(&chunk);
            }
            h.finish()
        };
        if &actual != digest {
            self.backend.stage_delete(id).await?;
            return Err(Error::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let _gc = self.gc_lock.read().await;
        self.backend
            .stage_commit(id, len, &layout::blob(digest))
            .await?;
        self.link_blob(repo, digest).await
    }

    /// A monolithic upload: the whole blob in one body, verified against `digest`.
    pub async fn blob_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        len: Option<u64>,
        data: ByteStream,
    ) -> Result<u64> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let res = async {
            let (offset, hasher) = self
                .append(&id, 0, Hasher::new(digest.algorithm()), len, data)
                .await?;
            self.verify_and_commit(repo, &id, digest, offset, hasher)
                .await?;
            Ok(offset)
        }
        .await;
        if res.is_err() {
            let _ = self.backend.stage_delete(&id).await;
        }
        res
    }

    /// Cancels a session and drops its bytes.
    pub async fn upload_cancel(&self, repo: &RepoName, id: &str) -> Result<()> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        self.load_upload(repo, id).await?;
        self.backend.stage_delete(id).await
    }

    /// Removes upload sessions untouched for longer than `age`. Returns how many.
    pub async fn purge_uploads(&self, age: Duration) -> Result<usize> {
        let cutoff = SystemTime::now() - age;
        let mut n = 0;
        for (id, modified) in self.backend.stage_list().await? {
            if modified < cutoff {
                self.backend.stage_delete(&id).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::FsBackend;
    use crate::registry::Options;
    use futures::StreamExt;

    fn body(data: &'static [u8]) -> ByteStream {
        futures::stream::iter(vec![Ok(Bytes::from_static(data))]).boxed()
    }

    #[test]
    fn upload_ids() {
        assert!(upload_id_ok("abc-DEF_1"));
        assert!(!upload_id_ok("../x"));
        assert!(!upload_id_ok(""));
    }

    #[tokio::test]
    async fn an_upload_whose_bytes_were_lost_is_unknown_not_broken() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(
            Arc::new(FsBackend::new(dir.path(), true).unwrap()),
            Options::default(),
        );
        let repo: RepoName = "r".parse().unwrap();
        let s = reg.upload_start(&repo, Algorithm::Sha256).await.unwrap();
        reg.upload_append(&repo, &s.id, Some(0), Some(6), body(b"hello "))
            .await
            .unwrap();
        // What a power cut before the commit's sync can leave: state ahead of the bytes.
        std::fs::write(dir.path().join(format!("uploads/{}/data", s.id)), b"he").unwrap();
        let e = reg
            .upload_append(&repo, &s.id, Some(6), Some(5), body(b"world"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::UploadUnknown), "{e:?}");
        assert!(matches!(
            reg.upload_status(&repo, &s.id).await,
            Err(Error::UploadUnknown)
        ));
    }
}

//! Upload sessions: start, status, chunked appends hashed as they arrive, the closing commit,
//! monolithic uploads, cancellation and purging.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::tap::HashTap;
use super::{Store, UploadStatus};
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

/// Takes the body out of `data`, leaving an empty stream.
fn take(data: &mut ByteStream) -> ByteStream {
    std::mem::replace(data, futures::stream::empty().boxed())
}

impl Store {
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
    ///
    /// The start is checked under the session's lock before `data` is touched: on
    /// [`Error::RangeInvalid`] the body is left unread in `data`, so the caller can drain it and
    /// the client, still sending, reads the answer instead of a reset. Otherwise `data` is taken
    /// (and left empty).
    pub async fn upload_append(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        len: Option<u64>,
        data: &mut ByteStream,
    ) -> Result<UploadStatus> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let mut state = self.load_upload(repo, id).await?;
        check_start(start, state.offset)?;
        let hasher = self.restore_hasher(&state)?;
        let (offset, hasher) = self
            .append(id, state.offset, hasher, len, take(data))
            .await?;
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
    /// `start` is checked as in [`Self::upload_append`], leaving `data` unread when it is wrong.
    pub async fn upload_finish(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        len: Option<u64>,
        data: Option<&mut ByteStream>,
    ) -> Result<u64> {
        let lock = self.upload_lock(id);
        let _guard = lock.lock().await;
        let state = self.load_upload(repo, id).await?;
        check_start(start, state.offset)?;
        let mut hasher = self.restore_hasher(&state)?;
        let mut offset = state.offset;
        if let Some(data) = data {
            (offset, hasher) = self.append(id, offset, hasher, len, take(data)).await?;
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
        self.commit_staged(repo, id, digest, len).await
    }

    /// Publishes the first `len` bytes of staged upload `id`, which hash to `digest`, as that
    /// blob in `repo`: the event first, then the backend's atomic commit, then the link.
    async fn commit_staged(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        len: u64,
    ) -> Result<()> {
        let _gc = self.gc_lock.read().await;
        let event = crate::outbox::Change::BlobPush {
            repo,
            digest,
            size: len,
        };
        self.evented(event, async {
            self.backend
                .stage_commit(id, len, &layout::blob(digest))
                .await?;
            self.link_blob(repo, digest).await
        })
        .await
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

    /// Stores a blob that the caller has already received into the local file `path` (`len`
    /// bytes) and hashed to `digest` itself, without reading it again where the backend can
    /// take the file as it is ([`Backend::stage_adopt`](crate::Backend::stage_adopt): a rename
    /// into staging on the same filesystem, see [`Self::scratch_dir`]); it is then committed
    /// like every upload: the event recorded, the bytes synced and published atomically, the link
    /// written, so a crash at any point leaves the blob whole or absent (an adopted stage left
    /// behind has no session state, no client can reach it, and purging removes it). Where the
    /// backend cannot take the file it is streamed through [`Self::blob_put`], which hashes it
    /// again. `Ok` means the file is gone from `path` or was copied: the caller removes it either
    /// way.
    ///
    /// The trust contract: the caller hashed exactly the `len` bytes now in the file with
    /// `digest`'s algorithm and got `digest`, and nothing writes to the file any more. The store
    /// does not check this when it adopts the file (that is the point); a caller that cannot
    /// promise it uses [`Self::blob_put`].
    pub async fn blob_put_verified(
        &self,
        repo: &RepoName,
        digest: &Digest,
        path: &std::path::Path,
        len: u64,
    ) -> Result<u64> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        if !self.backend.stage_adopt(&id, path).await? {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| Error::backend(format!("open {}", path.display()), e))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 1024 * 1024).boxed();
            return self.blob_put(repo, digest, Some(len), stream).await;
        }
        let res = self.commit_staged(repo, &id, digest, len).await;
        if res.is_err() {
            let _ = self.backend.stage_delete(&id).await;
        }
        res.map(|()| len)
    }

    /// A local folder where files meant for [`Self::blob_put_verified`] are taken without a copy
    /// (see [`Backend::scratch_dir`](crate::Backend::scratch_dir)); `None` when the backend
    /// keeps no local files.
    pub fn scratch_dir(&self) -> Option<std::path::PathBuf> {
        self.backend.scratch_dir()
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
    use crate::backend::Backend;
    use crate::fs::FsBackend;
    use crate::store::Options;
    use futures::StreamExt;

    fn body(data: &'static [u8]) -> ByteStream {
        futures::stream::iter(vec![Ok(Bytes::from_static(data))]).boxed()
    }

    /// A file of `data` in `folder` and its digest.
    fn local_file(folder: &std::path::Path, data: &[u8]) -> (std::path::PathBuf, Digest) {
        std::fs::create_dir_all(folder).unwrap();
        let path = folder.join(format!("fill-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, data).unwrap();
        (path, crate::hash::digest_of(Algorithm::Sha256, data))
    }

    async fn read_blob(reg: &Store, digest: &Digest) -> Vec<u8> {
        let parts: Vec<Bytes> = reg
            .blob_read(digest, None)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        parts.concat()
    }

    #[tokio::test]
    async fn a_verified_file_in_the_scratch_folder_becomes_the_blob_by_a_rename() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FsBackend::new(dir.path(), true).unwrap());
        let outbox = Arc::new(crate::outbox::Outbox::new(backend.clone()));
        let reg = Store::new(backend.clone(), Options::default()).with_outbox(outbox.clone());
        let repo: RepoName = "cache/img".parse().unwrap();
        let data = vec![7u8; 3 * 1024 * 1024 + 5];
        let scratch = reg
            .scratch_dir()
            .expect("the filesystem has a scratch folder");
        let (path, digest) = local_file(&scratch.join("spool"), &data);
        let inode = std::fs::metadata(&path).unwrap().ino();

        let n = reg
            .blob_put_verified(&repo, &digest, &path, data.len() as u64)
            .await
            .unwrap();

        assert_eq!(n, data.len() as u64);
        assert!(!path.exists(), "the file moved out of the scratch folder");
        assert_eq!(reg.blob_size(&repo, &digest).await.unwrap(), n);
        assert_eq!(read_blob(&reg, &digest).await, data);
        let stored = dir.path().join(layout::blob(&digest));
        assert_eq!(
            std::fs::metadata(&stored).unwrap().ino(),
            inode,
            "moved, not copied"
        );
        // Committed like an upload: the event, and no stage left.
        let events = outbox.pending().await.unwrap();
        assert_eq!(events.len(), 1);
        let rec = outbox.load(&events[0]).await.unwrap().unwrap();
        assert_eq!(rec.digest.as_deref(), Some(digest.to_string().as_str()));
        assert_eq!(rec.size, Some(n));
        assert_eq!(rec.repository, "cache/img");
        assert!(backend.stage_list().await.unwrap().is_empty());
        assert!(std::fs::read_dir(scratch.join("spool"))
            .unwrap()
            .next()
            .is_none());
        // Again for a blob stored already: kept, the file dropped.
        let (again, _) = local_file(&scratch.join("spool"), &data);
        reg.blob_put_verified(&repo, &digest, &again, data.len() as u64)
            .await
            .unwrap();
        assert!(!again.exists());
        assert_eq!(read_blob(&reg, &digest).await, data);
        assert!(backend.stage_list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn what_a_crash_before_the_commit_leaves_is_invisible_and_purged() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FsBackend::new(dir.path(), true).unwrap());
        let reg = Store::new(backend.clone(), Options::default());
        let repo: RepoName = "cache/img".parse().unwrap();
        let scratch = reg.scratch_dir().unwrap();
        // Killed mid-fill: a partial spool file; killed between adoption and commit: a stage.
        let (partial, _) = local_file(&scratch.join("spool"), b"part of a blob");
        let (whole, digest) = local_file(&scratch.join("spool"), b"all of a blob");
        assert!(backend.stage_adopt("crashed", &whole).await.unwrap());

        assert!(matches!(
            reg.blob_size(&repo, &digest).await,
            Err(Error::BlobUnknown(_))
        ));
        assert!(matches!(
            reg.blob_read(&digest, None).await.err(),
            Some(Error::BlobUnknown(_))
        ));
        assert!(matches!(
            reg.upload_status(&repo, "crashed").await,
            Err(Error::UploadUnknown)
        ));
        assert!(backend.list("").await.unwrap().is_empty());
        assert_eq!(reg.purge_uploads(Duration::ZERO).await.unwrap(), 1);
        assert!(backend.stage_list().await.unwrap().is_empty());
        assert!(
            partial.exists(),
            "the scratch folder is its writer's to clean"
        );
    }

    #[tokio::test]
    async fn a_backend_that_cannot_take_the_file_gets_its_bytes_verified_again() {
        let spool = tempfile::tempdir().unwrap();
        let reg = Store::new(
            Arc::new(crate::object::ObjectBackend::memory()),
            Options::default(),
        );
        assert!(reg.scratch_dir().is_none());
        let repo: RepoName = "cache/img".parse().unwrap();
        let data = vec![3u8; 2 * 1024 * 1024 + 1];
        let (path, digest) = local_file(spool.path(), &data);
        let n = reg
            .blob_put_verified(&repo, &digest, &path, data.len() as u64)
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(read_blob(&reg, &digest).await, data);
        assert!(path.exists(), "copied: the caller removes its file");
        // Streamed through blob_put, so a file that does not match its digest is refused.
        let (wrong, _) = local_file(spool.path(), b"other bytes");
        let e = reg
            .blob_put_verified(
                &repo,
                &crate::hash::digest_of(Algorithm::Sha256, b"x"),
                &wrong,
                11,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_file_on_another_filesystem_is_copied() {
        let shm = std::path::Path::new("/dev/shm");
        let dir = tempfile::tempdir().unwrap();
        let Ok(spool) = tempfile::tempdir_in(shm) else {
            eprintln!("SKIP: no /dev/shm to stand for another filesystem");
            return;
        };
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata(shm).unwrap().dev() == std::fs::metadata(dir.path()).unwrap().dev() {
            eprintln!("SKIP: /dev/shm is on the storage's filesystem here");
            return;
        }
        let backend = Arc::new(FsBackend::new(dir.path(), false).unwrap());
        let reg = Store::new(backend.clone(), Options::default());
        let repo: RepoName = "cache/img".parse().unwrap();
        let (path, digest) = local_file(spool.path(), b"bytes across filesystems");
        // EXDEV: the backend declines, leaving the file, and the store copies it.
        assert!(!backend.stage_adopt("x", &path).await.unwrap());
        assert!(path.exists());
        assert!(backend.stage_list().await.unwrap().is_empty());
        reg.blob_put_verified(&repo, &digest, &path, 24)
            .await
            .unwrap();
        assert_eq!(read_blob(&reg, &digest).await, b"bytes across filesystems");
        assert!(path.exists());
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
        let reg = Store::new(
            Arc::new(FsBackend::new(dir.path(), true).unwrap()),
            Options::default(),
        );
        let repo: RepoName = "r".parse().unwrap();
        let s = reg.upload_start(&repo, Algorithm::Sha256).await.unwrap();
        reg.upload_append(&repo, &s.id, Some(0), Some(6), &mut body(b"hello "))
            .await
            .unwrap();
        // What a power cut before the commit's sync can leave: state ahead of the bytes.
        std::fs::write(dir.path().join(format!("uploads/{}/data", s.id)), b"he").unwrap();
        let e = reg
            .upload_append(&repo, &s.id, Some(6), Some(5), &mut body(b"world"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::UploadUnknown), "{e:?}");
        assert!(matches!(
            reg.upload_status(&repo, &s.id).await,
            Err(Error::UploadUnknown)
        ));
    }
}

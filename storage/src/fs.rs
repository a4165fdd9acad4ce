//! The filesystem backend: one folder holds the key space, keys map to relative paths.
//!
//! Atomicity comes from `rename(2)`: every object is written to a hidden temporary file in its
//! destination folder and renamed into place, so a reader (or a restart after SIGKILL) sees the
//! old object, the new one, or none, never part of one. Leftover temporary files are invisible to
//! listings and are garbage. So is the scratch folder `.scratch/` under the root (see
//! [`Backend::scratch_dir`]): files written there on the same filesystem become staged uploads by
//! a rename ([`Backend::stage_adopt`]), and the backend neither lists nor deletes what is in it.
//!
//! With `sync` on, file data is fsync'd before the rename and the folder after it, so an
//! acknowledged write also survives a power cut. Upload sessions are the exception: their staged
//! bytes and state are synced only when the upload is committed (the 201 is the promise; a 202
//! for a chunk is not), so a chunked push pays for one sync, not one per chunk. After a power cut
//! a session whose bytes fell short of its saved state is reported as unknown, and the client
//! starts that upload again.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::io::{Read, Seek, Write};

use crate::backend::{Backend, ByteStream, GetObject, ObjectMeta};
use crate::error::{Error, Result};
use crate::layout;

/// Bytes read per blocking read when streaming a file out.
const READ_CHUNK: u64 = 512 * 1024;
/// Appends are written in batches of about this many bytes, one blocking write per batch, with
/// one batch being written while the next arrives.
const WRITE_BATCH: usize = 512 * 1024;
/// The staged bytes' name in an upload's staging folder (see [`crate::layout`]).
const STAGED_DATA: &str = "data";
/// Prefix of temporary files; never a valid key component.
const TMP_PREFIX: &str = ".tmp.";
/// The scratch folder under the root (see [`Backend::scratch_dir`]); hidden like temporary
/// files, so no listing and no key reaches into it.
const SCRATCH: &str = ".scratch";

/// Storage in a local folder.
#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
    sync: bool,
}

fn io_err(context: impl Into<String>, e: io::Error) -> Error {
    Error::backend(context, e)
}

fn map_nf(key: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound(key.to_owned())
    } else {
        io_err(format!("filesystem: {key}"), e)
    }
}

impl FsBackend {
    /// Opens (creating if needed) storage rooted at `root`. `sync` fsyncs before acknowledging.
    pub fn new(root: impl Into<PathBuf>, sync: bool) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| io_err(format!("create storage folder {}", root.display()), e))?;
        Ok(FsBackend { root, sync })
    }

    /// The storage folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        debug_assert!(
            !key.split('/').any(|c| c == ".." || c == "."),
            "unsafe key {key}"
        );
        self.root.join(key)
    }

    fn stage_dir(&self, id: &str) -> PathBuf {
        self.root.join(layout::upload_dir(id))
    }

    fn stage_data(&self, id: &str) -> PathBuf {
        self.root.join(layout::upload_object(id, STAGED_DATA))
    }

    /// Writes `key` through a temporary file renamed into place, syncing when `sync` is set.
    async fn write_atomic(&self, key: &str, data: Bytes, sync: bool) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("keys have a folder").to_owned();
        let tmp = dir.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let res = tokio::task::spawn_blocking(move || -> io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let write = || -> io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                io::Write::write_all(&mut f, &data)?;
                if sync {
                    f.sync_data()?;
                }
                std::fs::rename(&tmp, &path)?;
                if sync {
                    std::fs::File::open(&dir)?.sync_all()?;
                }
                Ok(())
            };
            let r = write();
            if r.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            r
        })
        .await
        .map_err(|e| Error::backend("put", e))?;
        res.map_err(|e| io_err(format!("write {key}"), e))
    }

    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        if !self.sync {
            return Ok(());
        }
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|f| f.sync_all()))
            .await
            .map_err(|e| Error::backend("fsync folder", e))?
            .map_err(|e| io_err("fsync folder", e))
    }
}

/// The entries of folder `dir`; `None` for a missing folder, or an object where the prefix
/// expects a folder: nothing below it.
fn read_dir_if_any(dir: &Path) -> io::Result<Option<std::fs::ReadDir>> {
    match std::fs::read_dir(dir) {
        Ok(e) => Ok(Some(e)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, std::fs::Metadata)>) -> io::Result<()> {
    let Some(entries) = read_dir_if_any(dir)? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let key = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(&entry.path(), &key, out)?;
        } else if ft.is_file() {
            match entry.metadata() {
                Ok(m) => out.push((key, m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Streams `range` of `file`, one blocking read per chunk straight into a fresh buffer (no
/// intermediate copy).
fn read_stream(file: std::fs::File, range: Range<u64>) -> ByteStream {
    let state = (Some(file), range.start, range.end);
    futures::stream::unfold(state, |(file, pos, end)| async move {
        let file = file?;
        if pos >= end {
            return None;
        }
        let want = (end - pos).min(READ_CHUNK);
        let res = tokio::task::spawn_blocking(move || {
            let mut f = file;
            let mut buf = Vec::with_capacity(want as usize);
            f.seek(SeekFrom::Start(pos))?;
            (&mut f).take(want).read_to_end(&mut buf)?;
            Ok::<_, io::Error>((f, buf))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match res {
            Ok((_, buf)) if buf.is_empty() => Some((
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than expected",
                )),
                (None, end, end),
            )),
            Ok((f, buf)) => {
                let next = pos + buf.len() as u64;
                Some((Ok(Bytes::from(buf)), (Some(f), next, end)))
            }
            Err(e) => Some((Err(e), (None, end, end))),
        }
    })
    .boxed()
}

/// Opens the staged bytes of upload `id` for writing at `offset`, dropping bytes past it.
fn open_stage_at(dir: &Path, path: &Path, id: &str, offset: u64) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir).map_err(|e| io_err("create upload folder", e))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io_err("open upload", e))?;
    let len = f.metadata().map_err(|e| io_err("stat upload", e))?.len();
    if len < offset {
        return Err(Error::Corrupt(format!(
            "upload {id} holds {len} bytes, its state says {offset}"
        )));
    }
    if len > offset {
        // Bytes of an append that failed before its state was recorded.
        f.set_len(offset)
            .map_err(|e| io_err("truncate upload", e))?;
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| io_err("seek upload", e))?;
    Ok(f)
}

/// Writes `batch` to `f` on a blocking thread; the handle gives the file back.
fn write_batch(
    mut f: std::fs::File,
    batch: Vec<Bytes>,
) -> tokio::task::JoinHandle<io::Result<std::fs::File>> {
    tokio::task::spawn_blocking(move || {
        for b in &batch {
            f.write_all(b)?;
        }
        Ok(f)
    })
}

/// Waits for a [`write_batch`].
async fn finish_batch(
    h: tokio::task::JoinHandle<io::Result<std::fs::File>>,
) -> Result<std::fs::File> {
    h.await
        .map_err(|e| Error::backend("write upload", e))?
        .map_err(|e| io_err("write upload", e))
}

#[async_trait]
impl Backend for FsBackend {
    fn kind(&self) -> &'static str {
        "filesystem"
    }

    // Metadata and small-object reads run inline: they are served from the page cache in a few
    // microseconds, less than handing them to a blocking thread costs.
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let m = std::fs::metadata(self.path(key)).map_err(|e| map_nf(key, e))?;
        if !m.is_file() {
            return Err(Error::NotFound(key.to_owned()));
        }
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: m.len(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetObject> {
        let path = self.path(key);
        let k = key.to_owned();
        let (file, size) = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&path)?;
            let size = f.metadata()?.len();
            Ok::<_, io::Error>((f, size))
        })
        .await
        .map_err(|e| Error::backend("open", e))?
        .map_err(|e| map_nf(&k, e))?;
        let r = range.unwrap_or(0..size);
        Ok(GetObject {
            size,
            stream: read_stream(file, r),
        })
    }

    // Opened inline like `head`: open(2) of a cached path costs less than a thread hand-off.
    async fn open_file(&self, key: &str) -> Result<Option<std::fs::File>> {
        let f = std::fs::File::open(self.path(key)).map_err(|e| map_nf(key, e))?;
        Ok(Some(f))
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        std::fs::read(self.path(key))
            .map(Bytes::from)
            .map_err(|e| map_nf(key, e))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.write_atomic(key, data, self.sync).await
    }

    async fn stage_put_state(&self, id: &str, state: Bytes) -> Result<()> {
        // Upload state is synced with the upload's commit, not on every chunk (module docs).
        self.write_atomic(&layout::upload_state(id), state, false)
            .await
    }

    async fn stage_get_state(&self, id: &str) -> Result<Bytes> {
        self.get_bytes(&layout::upload_state(id)).await
    }

    async fn touch(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        let k = key.to_owned();
        tokio::task::spawn_blocking(move || {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()))
        })
        .await
        .map_err(|e| Error::backend("touch", e))?
        .map_err(|e| map_nf(&k, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("delete {key}"), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let dir = self.root.join(dir_part);
        let rel = dir_part.to_owned();
        let prefix = prefix.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&dir, &rel, &mut out).map(|_| out)
        })
        .await
        .map_err(|e| Error::backend("list", e))?
        .map_err(|e| io_err(format!("list {prefix}"), e))?;
        let mut metas: Vec<ObjectMeta> = found
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix) && !layout::is_staging(k))
            .map(|(key, m)| ObjectMeta {
                key,
                size: m.len(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })
            .collect();
        metas.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(metas)
    }

    async fn list_dir(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.path(prefix.trim_end_matches('/'));
        let p = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let Some(rd) = read_dir_if_any(&dir).map_err(|e| io_err(format!("list {p}"), e))?
            else {
                return Ok(Vec::new());
            };
            let mut names = Vec::new();
            for entry in rd {
                let entry = entry.map_err(|e| io_err(format!("list {p}"), e))?;
                if let Some(name) = entry.file_name().to_str() {
                    if !name.starts_with('.') {
                        names.push(name.to_owned());
                    }
                }
            }
            names.sort();
            Ok(names)
        })
        .await
        .map_err(|e| Error::backend("list", e))?
    }

    async fn stage_append(&self, id: &str, offset: u64, mut data: ByteStream) -> Result<u64> {
        let dir = self.stage_dir(id);
        let path = self.stage_data(id);
        let id_owned = id.to_owned();
        let file =
            tokio::task::spawn_blocking(move || open_stage_at(&dir, &path, &id_owned, offset))
                .await
                .map_err(|e| Error::backend("open upload", e))??;
        let mut idle = Some(file);
        let mut writing: Option<tokio::task::JoinHandle<io::Result<std::fs::File>>> = None;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0usize;
        let mut total = offset;
        loop {
            let next = data.next().await;
            let last = next.is_none();
            if let Some(chunk) = next {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        // Let a write in flight finish before the next append reopens the file.
                        if let Some(h) = writing.take() {
                            let _ = h.await;
                        }
                        return Err(Error::Body(e));
                    }
                };
                total += chunk.len() as u64;
                batch_len += chunk.len();
                batch.push(chunk);
            }
            if batch_len >= WRITE_BATCH || (last && !batch.is_empty()) {
                let f = match (idle.take(), writing.take()) {
                    (Some(f), _) => f,
                    (None, Some(h)) => finish_batch(h).await?,
                    (None, None) => unreachable!("the file is idle or being written"),
                };
                writing = Some(write_batch(f, std::mem::take(&mut batch)));
                batch_len = 0;
            }
            if last {
                break;
            }
        }
        // Synced at commit (module docs).
        match (idle, writing) {
            (Some(_), _) => {}
            (None, Some(h)) => drop(finish_batch(h).await?),
            (None, None) => unreachable!("the file is idle or being written"),
        }
        Ok(total)
    }

    async fn stage_read(&self, id: &str, len: u64) -> Result<ByteStream> {
        let f = std::fs::File::open(self.stage_data(id)).map_err(|e| map_nf(id, e))?;
        Ok(read_stream(f, 0..len))
    }

    async fn stage_commit(&self, id: &str, len: u64, key: &str) -> Result<()> {
        let src = self.stage_data(id);
        let dest = self.path(key);
        let dir = dest.parent().expect("keys have a folder").to_owned();
        let sync = self.sync;
        let key_owned = key.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            if dest.exists() {
                std::fs::File::options()
                    .write(true)
                    .open(&dest)
                    .and_then(|f| f.set_modified(SystemTime::now()))
                    .map_err(|e| io_err(format!("refresh {key_owned}"), e))?;
                return Ok(());
            }
            let f = match std::fs::File::options().write(true).open(&src) {
                Ok(f) => f,
                // Nothing was ever appended: the blob is empty.
                Err(e) if e.kind() == io::ErrorKind::NotFound && len == 0 => {
                    std::fs::create_dir_all(src.parent().expect("stage folder"))
                        .and_then(|_| std::fs::File::create(&src))
                        .map_err(|e| io_err("create empty upload", e))?
                }
                Err(e) => return Err(io_err("open upload", e)),
            };
            let have = f.metadata().map_err(|e| io_err("stat upload", e))?.len();
            if have < len {
                return Err(Error::Corrupt(format!(
                    "upload holds {have} bytes, expected {len}"
                )));
            }
            if have > len {
                f.set_len(len).map_err(|e| io_err("truncate upload", e))?;
            }
            if sync {
                f.sync_data().map_err(|e| io_err("fsync upload", e))?;
            }
            drop(f);
            std::fs::create_dir_all(&dir).map_err(|e| io_err("create blob folder", e))?;
            std::fs::rename(&src, &dest).map_err(|e| io_err("publish blob", e))?;
            Ok(())
        })
        .await
        .map_err(|e| Error::backend("commit", e))??;
        self.sync_dir(self.path(key).parent().expect("folder"))
            .await?;
        self.stage_delete(id).await
    }

    async fn stage_adopt(&self, id: &str, path: &Path) -> Result<bool> {
        let (dir, dest, src) = (self.stage_dir(id), self.stage_data(id), path.to_owned());
        let res = tokio::task::spawn_blocking(move || -> io::Result<bool> {
            std::fs::create_dir_all(&dir)?;
            match std::fs::rename(&src, &dest) {
                Ok(()) => Ok(true),
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    match e.kind() {
                        io::ErrorKind::CrossesDevices => Ok(false),
                        _ => Err(e),
                    }
                }
            }
        })
        .await
        .map_err(|e| Error::backend("adopt upload", e))?;
        res.map_err(|e| io_err(format!("adopt {} as upload {id}", path.display()), e))
    }

    fn scratch_dir(&self) -> Option<PathBuf> {
        Some(self.root.join(SCRATCH))
    }

    async fn stage_delete(&self, id: &str) -> Result<()> {
        match tokio::fs::remove_dir_all(self.stage_dir(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete upload", e)),
        }
    }

    async fn stage_list(&self) -> Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(self.root.join(layout::UPLOADS)).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err("list uploads", e)),
        };
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| io_err("list uploads", e))?
        {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let mut newest = SystemTime::UNIX_EPOCH;
            for f in [layout::UPLOAD_STATE, STAGED_DATA, ""] {
                if let Ok(m) = tokio::fs::metadata(entry.path().join(f)).await {
                    newest = newest.max(m.modified().unwrap_or(SystemTime::UNIX_EPOCH));
                }
            }
            out.push((id, newest));
        }
        out.sort();
        Ok(out)
    }
}

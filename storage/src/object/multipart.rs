//! The multipart staging machine: appends fill parts of `part_size` bytes and upload each as it
//! fills, the rest waits as a tail; `stage_read` and `stage_commit` complete the multipart upload
//! and publish it. See the [module documentation](super) for the whole protocol.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

use super::stage::{Base, Part, Snapshot, Stage, Tail};
use super::{empty_stream, is_not_found, os_err, ObjectBackend, CONCURRENCY, MAX_PARTS};
use crate::backend::{Backend, ByteStream};
use crate::error::{Error, Result};
use crate::layout;

/// The backend's own objects in a staging folder (see [`crate::layout`]).
const STAGED: &str = "staged";
const DATA: &str = "data";
const TAIL_PREFIX: &str = "tail-";

fn staged_key(id: &str) -> String {
    layout::upload_object(id, STAGED)
}

fn data_key(id: &str) -> String {
    layout::upload_object(id, DATA)
}

fn tail_key(id: &str, name: &str) -> String {
    layout::upload_object(id, name)
}

impl ObjectBackend {
    async fn load_stage(&self, id: &str) -> Result<Option<Stage>> {
        let key = staged_key(id);
        match self.get_bytes(&key).await {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("{key}: {e}"))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn save_stage(&self, id: &str, stage: &Stage) -> Result<()> {
        let raw = serde_json::to_vec(stage).expect("stage serialises");
        self.put_raw(&staged_key(id), Bytes::from(raw)).await
    }

    /// Deletes tail objects of `old` that `new` no longer needs (best effort: `stage_delete`
    /// removes whatever is left).
    async fn drop_tails(&self, id: &str, old: &Stage, new: &Stage) {
        let keep = new.tails();
        for name in old.tails() {
            if !keep.contains(name) {
                if let Err(e) = self.store.delete(&self.path(&tail_key(id, name))).await {
                    tracing::debug!(error = %e, upload = id, "could not delete an old tail");
                }
            }
        }
    }

    /// Completes the multipart upload of `stage` into `uploads/<id>/data` (the tail becomes the
    /// last part) and records it. Returns the size of `data`.
    async fn complete(&self, id: &str, stage: &Stage) -> Result<u64> {
        if let Some(n) = stage.completed {
            return Ok(n);
        }
        let total = stage.len();
        let data = self.path(&data_key(id));
        let upload = stage
            .upload
            .as_ref()
            .ok_or_else(|| Error::Corrupt(format!("upload {id} has parts but no upload id")))?;
        let mut ids: Vec<PartId> = stage
            .parts
            .iter()
            .map(|p| PartId {
                content_id: p.id.clone(),
            })
            .collect();
        let tail = match &stage.tail {
            Some(t) => self.read_prefix(&tail_key(id, &t.name), t.len).await?,
            None => Bytes::new(),
        };
        if !tail.is_empty() || self.empty_final_part {
            let pid = self
                .multipart
                .put_part(&data, upload, ids.len(), PutPayload::from(tail))
                .await
                .map_err(|e| os_err("upload last part of", &data_key(id), e))?;
            ids.push(pid);
        }
        if let Err(e) = self.multipart.complete_multipart(&data, upload, ids).await {
            // A retry after a crash between completing and recording: the object is there.
            match self.store.head(&data).await {
                Ok(m) if m.size == total => {}
                _ => return Err(os_err("complete", &data_key(id), e)),
            }
        }
        let size = self
            .store
            .head(&data)
            .await
            .map_err(|e| os_err("head", &data_key(id), e))?
            .size;
        if size != total {
            return Err(Error::Corrupt(format!(
                "upload {id}: completed object holds {size} bytes, expected {total}"
            )));
        }
        let done = Stage {
            completed: Some(total),
            ..Stage::default()
        };
        self.save_stage(id, &done).await?;
        self.drop_tails(id, stage, &done).await;
        Ok(total)
    }

    /// Publishes the first `len` of the `size` bytes of `uploads/<id>/data` at `key`.
    async fn publish(&self, id: &str, size: u64, len: u64, key: &str) -> Result<()> {
        let src = self.path(&data_key(id));
        let dst = self.path(key);
        if len == size && len <= self.max_copy {
            return self
                .store
                .copy(&src, &dst)
                .await
                .map_err(|e| os_err("copy to", key, e));
        }
        let mut body = self.range_stream(&data_key(id), 0..len).await?;
        let upload = self
            .store
            .put_multipart(&dst)
            .await
            .map_err(|e| os_err("start upload of", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let res: Result<()> =
            async {
                while let Some(chunk) = body.try_next().await.map_err(|e| {
                    Error::backend(format!("object storage: read {}", data_key(id)), e)
                })? {
                    w.wait_for_capacity(CONCURRENCY)
                        .await
                        .map_err(|e| os_err("upload", key, e))?;
                    w.put(chunk);
                }
                Ok(())
            }
            .await;
        match res {
            Ok(()) => w
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| os_err("complete upload of", key, e)),
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    pub(super) async fn append_staged(
        &self,
        id: &str,
        offset: u64,
        data: ByteStream,
    ) -> Result<u64> {
        let old = self.load_stage(id).await?.unwrap_or_default();
        let base = old.base_at(id, offset)?;
        let mut app = Appender {
            be: self,
            id,
            data: self.path(&data_key(id)),
            upload: None,
            created: false,
            parts: Vec::new(),
            buf: BytesMut::new(),
        };
        let mut prev = None;
        let mut prefix = None;
        match base {
            Base::Parts { parts, tail } => {
                app.upload = old.upload.clone();
                app.parts = parts;
                if let Some(t) = &tail {
                    let bytes = self.read_prefix(&tail_key(id, &t.name), t.len).await?;
                    app.buf.extend_from_slice(&bytes);
                }
                prev = Some(Snapshot {
                    parts: app.parts.len(),
                    tail,
                });
            }
            // The parts were completed into `data` (by `stage_read`): upload them again.
            Base::Data { len } => prefix = Some(self.range_stream(&data_key(id), 0..len).await?),
        }
        let received = match app.fill(prefix, data).await {
            Ok(n) => n,
            Err(e) => {
                app.abandon().await;
                return Err(e);
            }
        };
        if received == 0 && offset == old.len() && old.completed.is_none() {
            return Ok(offset);
        }
        if let Err(e) = self.record_append(id, &old, &mut app, prev).await {
            app.abandon().await;
            return Err(e);
        }
        Ok(offset + received)
    }

    /// Writes what is left of an append as the new tail and records the new state.
    async fn record_append(
        &self,
        id: &str,
        old: &Stage,
        app: &mut Appender<'_>,
        prev: Option<Snapshot>,
    ) -> Result<()> {
        let tail = if app.buf.is_empty() {
            None
        } else {
            let name = format!("{TAIL_PREFIX}{}", uuid::Uuid::new_v4().simple());
            let len = app.buf.len() as u64;
            self.put_raw(&tail_key(id, &name), app.buf.split().freeze())
                .await?;
            Some(Tail { name, len })
        };
        let new = Stage {
            upload: app.upload.clone(),
            parts: std::mem::take(&mut app.parts),
            tail,
            prev,
            completed: None,
        };
        self.save_stage(id, &new).await?;
        self.drop_tails(id, old, &new).await;
        Ok(())
    }

    pub(super) async fn read_staged(&self, id: &str, len: u64) -> Result<ByteStream> {
        let Some(stage) = self.load_stage(id).await? else {
            return if len == 0 {
                Ok(empty_stream())
            } else {
                Err(Error::NotFound(layout::upload_dir(id)))
            };
        };
        if len > stage.len() {
            return Err(Error::Corrupt(format!(
                "upload {id} holds {} bytes, expected {len}",
                stage.len()
            )));
        }
        if stage.completed.is_none() && stage.parts.is_empty() {
            let Some(t) = &stage.tail else {
                return Ok(empty_stream());
            };
            return self.range_stream(&tail_key(id, &t.name), 0..len).await;
        }
        self.complete(id, &stage).await?;
        self.range_stream(&data_key(id), 0..len).await
    }

    pub(super) async fn commit_staged(&self, id: &str, len: u64, key: &str) -> Result<()> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => {
                // Content-addressed: the same bytes are there already. Refresh them for the GC.
                self.touch(key).await?;
                return self.stage_delete(id).await;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(os_err("head", key, e)),
        }
        match self.load_stage(id).await? {
            None if len == 0 => self.put_raw(key, Bytes::new()).await?,
            None => {
                return Err(Error::Corrupt(format!(
                    "upload {id} has no staged bytes, expected {len}"
                )))
            }
            Some(stage) => {
                let have = stage.len();
                if len > have {
                    return Err(Error::Corrupt(format!(
                        "upload {id} holds {have} bytes, expected {len}"
                    )));
                }
                if stage.completed.is_none() && stage.parts.is_empty() {
                    let bytes = match &stage.tail {
                        Some(t) => self.read_prefix(&tail_key(id, &t.name), len).await?,
                        None => Bytes::new(),
                    };
                    self.put_raw(key, bytes).await?;
                } else {
                    let size = self.complete(id, &stage).await?;
                    self.publish(id, size, len, key).await?;
                }
            }
        }
        self.stage_delete(id).await
    }

    pub(super) async fn delete_staged(&self, id: &str) -> Result<()> {
        match self.load_stage(id).await {
            Ok(Some(Stage {
                upload: Some(u),
                completed: None,
                ..
            })) => {
                if let Err(e) = self
                    .multipart
                    .abort_multipart(&self.path(&data_key(id)), &u)
                    .await
                {
                    tracing::debug!(error = %e, upload = id, "could not abort a multipart upload");
                }
            }
            Ok(_) => {}
            // Unreadable state must not keep the upload from being removed.
            Err(Error::Corrupt(_)) => {}
            Err(e) => return Err(e),
        }
        let dir = layout::upload_dir(id);
        let keys: Vec<String> = self
            .list_raw(dir.trim_end_matches('/'))
            .await?
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        futures::stream::iter(keys)
            .map(|k| async move {
                match self.store.delete(&self.path(&k)).await {
                    Ok(()) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(os_err("delete", &k, e)),
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
    }

    pub(super) async fn list_staged(&self) -> Result<Vec<(String, SystemTime)>> {
        let mut ids: BTreeMap<String, SystemTime> = BTreeMap::new();
        for (key, _, modified) in self.list_raw(layout::UPLOADS.trim_end_matches('/')).await? {
            let Some((id, _)) = key
                .strip_prefix(layout::UPLOADS)
                .and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let t = ids.entry(id.to_owned()).or_insert(SystemTime::UNIX_EPOCH);
            *t = (*t).max(modified);
        }
        Ok(ids.into_iter().collect())
    }
}

/// Fills parts of exactly `part_size` bytes and uploads each one as it fills.
struct Appender<'a> {
    be: &'a ObjectBackend,
    id: &'a str,
    data: Path,
    upload: Option<String>,
    /// Whether this append created `upload` (to abort it when the append fails).
    created: bool,
    parts: Vec<Part>,
    buf: BytesMut,
}

impl Appender<'_> {
    async fn push(&mut self, mut chunk: Bytes) -> Result<()> {
        while !chunk.is_empty() {
            let room = self.be.part_size - self.buf.len();
            let take = room.min(chunk.len());
            self.buf.extend_from_slice(&chunk.split_to(take));
            if self.buf.len() == self.be.part_size {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        if self.parts.len() + 1 >= MAX_PARTS {
            return Err(Error::Unsupported(format!(
                "uploads larger than {} bytes (parts of {} bytes)",
                (MAX_PARTS - 1) * self.be.part_size,
                self.be.part_size
            )));
        }
        let part = self.buf.split().freeze();
        let upload = match &self.upload {
            Some(u) => u.clone(),
            None => {
                let u = self
                    .be
                    .multipart
                    .create_multipart(&self.data)
                    .await
                    .map_err(|e| os_err("start upload of", &data_key(self.id), e))?;
                self.created = true;
                self.upload = Some(u.clone());
                u
            }
        };
        let size = part.len() as u64;
        let pid = self
            .be
            .multipart
            .put_part(
                &self.data,
                &upload,
                self.parts.len(),
                PutPayload::from(part),
            )
            .await
            .map_err(|e| os_err("upload part of", &data_key(self.id), e))?;
        self.parts.push(Part {
            size,
            id: pid.content_id,
        });
        Ok(())
    }

    /// Pushes the re-read `prefix` (if any), then the appended bytes. Returns how many bytes
    /// `data` held.
    async fn fill(&mut self, prefix: Option<ByteStream>, mut data: ByteStream) -> Result<u64> {
        if let Some(mut s) = prefix {
            while let Some(chunk) = s.try_next().await.map_err(|e| {
                Error::backend(format!("object storage: read {}", data_key(self.id)), e)
            })? {
                self.push(chunk).await?;
            }
        }
        let mut received = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(Error::Body)?;
            received += chunk.len() as u64;
            self.push(chunk).await?;
        }
        Ok(received)
    }

    /// Aborts the multipart upload this append created, after a failure.
    async fn abandon(&self) {
        if let (true, Some(u)) = (self.created, &self.upload) {
            let _ = self.be.multipart.abort_multipart(&self.data, u).await;
        }
    }
}

//! Hashing a body on a blocking thread while the backend writes it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::backend::ByteStream;
use crate::error::{Error, Result};
use crate::hash::Hasher;

/// Bytes handed to the hashing thread at once.
const HASH_BATCH: usize = 256 * 1024;

/// Chunks are reference-counted, so handing them to the hashing thread copies nothing, and
/// hashing overlaps receiving and writing. Chunks go over in batches of about [`HASH_BATCH`]
/// bytes, so the hand-off costs little per byte.
pub(super) struct HashTap {
    tx: mpsc::Sender<Vec<Bytes>>,
    hashing: JoinHandle<Hasher>,
    count: Arc<AtomicU64>,
    pending: Arc<Mutex<(Vec<Bytes>, usize)>>,
}

impl HashTap {
    /// Starts the hashing thread, continuing `hasher`.
    pub(super) fn start(hasher: Hasher) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(4);
        let hashing = tokio::task::spawn_blocking(move || {
            let mut h = hasher;
            while let Some(batch) = rx.blocking_recv() {
                for b in &batch {
                    h.update(b);
                }
            }
            h
        });
        HashTap {
            tx,
            hashing,
            count: Arc::default(),
            pending: Arc::default(),
        }
    }

    /// `data`, passing every chunk on to the hashing thread as it goes by, and failing once it
    /// is longer than `len`.
    pub(super) fn tap(&self, data: ByteStream, len: Option<u64>) -> ByteStream {
        let (seen, queued, tx) = (self.count.clone(), self.pending.clone(), self.tx.clone());
        data.then(move |r| {
            let (seen, queued, tx) = (seen.clone(), queued.clone(), tx.clone());
            async move {
                let chunk = r?;
                let n = seen.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
                if len.is_some_and(|l| n > l) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "body longer than its declared length",
                    ));
                }
                let full = {
                    let mut q = queued.lock().expect("hash batch");
                    q.1 += chunk.len();
                    q.0.push(chunk.clone());
                    (q.1 >= HASH_BATCH).then(|| {
                        q.1 = 0;
                        std::mem::take(&mut q.0)
                    })
                };
                if let Some(batch) = full {
                    tx.send(batch)
                        .await
                        .map_err(|_| io::Error::other("hashing stopped"))?;
                }
                Ok(chunk)
            }
        })
        .boxed()
    }

    /// Hashes what is still queued once the tapped stream is gone. Returns how many bytes went
    /// by, and the hasher.
    pub(super) async fn finish(self) -> Result<(u64, Hasher)> {
        let rest = std::mem::take(&mut self.pending.lock().expect("hash batch").0);
        if !rest.is_empty() {
            let _ = self.tx.send(rest).await;
        }
        drop(self.tx);
        let hasher = self
            .hashing
            .await
            .map_err(|e| Error::backend("hashing task", e))?;
        Ok((self.count.load(Ordering::Relaxed), hasher))
    }
}

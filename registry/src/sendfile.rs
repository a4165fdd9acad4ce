//! Zero-copy blob downloads on plain HTTP/1.x connections: a blob's pages go from the page cache
//! to the socket with `sendfile(2)`, never through the registry's memory.
//!
//! hyper writes every response itself and knows nothing of files, so the hand-over works like
//! this:
//!
//! 1. A download's body, [`FileBody`], yields *placeholder* chunks: slices of one static buffer
//!    ([`PLACEHOLDER`]) that nothing reads, adding up to the download's length. hyper frames the
//!    response exactly as it would for real bytes (the length is in `Content-Length`).
//! 2. When hyper first polls the body, the body queues its file and range on the connection's
//!    [`FileQueue`].
//! 3. The connection's socket, [`SendfileIo`], recognises placeholder slices by their address
//!    when hyper writes them and, instead of writing them, sends as many bytes from the file at
//!    the head of the queue with `sendfile(2)`.
//!
//! An HTTP/1 connection writes its responses one after another, so the order of the queue is
//! the order of the placeholder bytes. A body dropped before it yielded all its placeholders
//! takes the rest off its queue entry, so the entries stay in step with what hyper writes.
//!
//! This relies on hyper handing body chunks to the socket as they are, which it does with its
//! vectored ("queue") write strategy, chosen whenever the socket supports vectored writes (as
//! [`SendfileIo`] says it does). Placeholder bytes arriving with no file queued fail the
//! connection rather than send anything. TLS and HTTP/2 connections never get a queue: their
//! downloads are read through memory.
//!
//! `sendfile(2)` runs on the connection's task. From the page cache it takes microseconds; for a
//! file not in the cache it waits for the disk, as the first `sendfile` of nginx does, so each
//! download asks the kernel for sequential read-ahead. `sendfile = false` in the configuration
//! reads every download through memory on the blocking pool instead.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Length of [`PLACEHOLDER`]: the largest placeholder chunk.
const PLACEHOLDER_LEN: usize = 1 << 20;

/// Most bytes one `sendfile(2)` call is asked for.
const MAX_SEND: u64 = 4 << 20;

/// The placeholder buffer. Only its address matters: nothing reads or writes its bytes, so its
/// pages are never touched and cost no memory.
static PLACEHOLDER: [u8; PLACEHOLDER_LEN] = [0; PLACEHOLDER_LEN];

/// Whether `b` is (part of) a placeholder chunk.
fn is_placeholder(b: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let p = b.as_ptr() as usize;
    !b.is_empty() && p >= start && p + b.len() <= start + PLACEHOLDER_LEN
}

/// One download waiting for, or in, `sendfile(2)`.
#[derive(Debug)]
struct Job {
    id: u64,
    file: File,
    /// Next byte of `file` to send.
    offset: u64,
    /// Placeholder bytes still to come for this download.
    remaining: u64,
}

#[derive(Debug, Default)]
struct Jobs {
    queue: VecDeque<Job>,
    next_id: u64,
}

/// The files queued for sending on one connection, in response order.
#[derive(Debug, Default)]
pub struct FileQueue {
    jobs: Mutex<Jobs>,
}

impl FileQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().expect("file queue")
    }

    fn push(&self, file: File, range: Range<u64>) -> u64 {
        let mut jobs = self.lock();
        let id = jobs.next_id;
        jobs.next_id += 1;
        jobs.queue.push_back(Job {
            id,
            file,
            offset: range.start,
            remaining: range.end - range.start,
        });
        id
    }

    /// Download `id` will yield `unsent` placeholder bytes fewer than it queued.
    fn shorten(&self, id: u64, unsent: u64) {
        let mut jobs = self.lock();
        if let Some(i) = jobs.queue.iter().position(|j| j.id == id) {
            let job = &mut jobs.queue[i];
            job.remaining = job.remaining.saturating_sub(unsent);
            if job.remaining == 0 {
                jobs.queue.remove(i);
            }
        }
    }
}

/// A request extension, present on requests of connections that can send files: it makes
/// [`FileBody`]s for them.
#[derive(Debug, Clone)]
pub struct ZeroCopy(Arc<FileQueue>);

impl ZeroCopy {
    /// A response body carrying `range` (not empty, within the file) of `file`.
    pub fn body(&self, file: File, range: Range<u64>) -> FileBody {
        // Advice only: a failure changes nothing but read-ahead.
        let _ = rustix::fs::fadvise(
            &file,
            range.start,
            std::num::NonZeroU64::new(range.end - range.start),
            rustix::fs::Advice::Sequential,
        );
        FileBody {
            queue: self.0.clone(),
            left: range.end - range.start,
            pending: Some((file, range)),
            queued: None,
        }
    }
}

/// A response body whose bytes are sent from a file by the connection (module docs).
#[derive(Debug)]
pub struct FileBody {
    queue: Arc<FileQueue>,
    /// Placeholder bytes not yet yielded.
    left: u64,
    /// The file and range, until the first poll queues them.
    pending: Option<(File, Range<u64>)>,
    /// The queue entry's id, once queued.
    queued: Option<u64>,
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some((file, range)) = this.pending.take() {
            this.queued = Some(this.queue.push(file, range));
        }
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(PLACEHOLDER_LEN as u64) as usize;
        this.left -= n as u64;
        crate::metrics::METRICS.sent(n as u64);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PLACEHOLDER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        if let (Some(id), true) = (self.queued, self.left > 0) {
            self.queue.shorten(id, self.left);
        }
    }
}

/// A plain TCP connection that sends placeholder bytes from the queued files (module docs) and
/// passes everything else through.
#[derive(Debug)]
pub struct SendfileIo {
    tcp: TcpStream,
    queue: Arc<FileQueue>,
}

impl SendfileIo {
    /// Wraps `tcp`; the [`ZeroCopy`] goes on the connection's requests.
    pub fn new(tcp: TcpStream) -> (Self, ZeroCopy) {
        let queue = Arc::new(FileQueue::default());
        (
            SendfileIo {
                tcp,
                queue: queue.clone(),
            },
            ZeroCopy(queue),
        )
    }

    /// Sends up to `want` bytes of the file at the head of the queue in place of as many
    /// placeholder bytes.
    fn poll_send(&self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let mut jobs = self.queue.lock();
        let Some(job) = jobs.queue.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "placeholder bytes with no file queued; closing the connection",
            )));
        };
        let n = (want as u64).min(job.remaining).min(MAX_SEND) as usize;
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.tcp, &job.file, Some(&mut job.offset), n)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than its recorded size",
                    )))
                }
                Ok(k) => {
                    crate::metrics::METRICS.sent_from_file(k as u64);
                    job.remaining -= k as u64;
                    if job.remaining == 0 {
                        jobs.queue.pop_front();
                    }
                    return Poll::Ready(Ok(k));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if is_placeholder(buf) {
            return self.poll_send(cx, buf.len());
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Real bytes up to the first placeholder go out as they are; placeholders at the front
        // go out with sendfile. A partial write is what the caller expects either way.
        let Some(first) = bufs.iter().position(|b| is_placeholder(b)) else {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        };
        if bufs[..first].iter().any(|b| !b.is_empty()) {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[..first]);
        }
        let want: usize = bufs[first..]
            .iter()
            .take_while(|b| is_placeholder(b))
            .map(|b| b.len())
            .sum();
        self.poll_send(cx, want)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file() -> File {
        tempfile::tempfile().expect("temporary file")
    }

    #[test]
    fn placeholders_are_recognised_by_address_only() {
        assert!(is_placeholder(&PLACEHOLDER[..]));
        assert!(is_placeholder(&PLACEHOLDER[10..20]));
        assert!(
            !is_placeholder(&PLACEHOLDER[..0]),
            "empty is nothing to send"
        );
        let zeros = vec![0u8; 64];
        assert!(
            !is_placeholder(&zeros),
            "equal bytes elsewhere are real bytes"
        );
    }

    #[test]
    fn a_body_queues_its_file_when_first_polled_and_yields_its_length() {
        let zc = ZeroCopy(Arc::new(FileQueue::default()));
        let mut body = zc.body(temp_file(), 100..(100 + PLACEHOLDER_LEN as u64 + 5));
        assert!(zc.0.lock().queue.is_empty(), "queued before hyper polls");
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut lens = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            let data = frame.unwrap().into_data().unwrap();
            assert!(is_placeholder(&data));
            lens.push(data.len());
        }
        assert_eq!(lens, vec![PLACEHOLDER_LEN, 5]);
        let jobs = zc.0.lock();
        assert_eq!(jobs.queue.len(), 1);
        assert_eq!(jobs.queue[0].offset, 100);
        assert_eq!(jobs.queue[0].remaining, PLACEHOLDER_LEN as u64 + 5);
    }

    #[test]
    fn a_body_dropped_early_takes_its_unsent_bytes_off_the_queue() {
        let zc = ZeroCopy(Arc::new(FileQueue::default()));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Two downloads; the first yields one of its two placeholder chunks, then is dropped.
        let mut first = zc.body(temp_file(), 0..(2 * PLACEHOLDER_LEN as u64));
        let mut second = zc.body(temp_file(), 0..10);
        assert!(matches!(
            Pin::new(&mut first).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(matches!(
            Pin::new(&mut second).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        drop(first);
        let jobs = zc.0.lock();
        let remaining: Vec<u64> = jobs.queue.iter().map(|j| j.remaining).collect();
        assert_eq!(
            remaining,
            vec![PLACEHOLDER_LEN as u64, 10],
            "only the yielded chunk of the first is still to be sent"
        );
    }

    #[test]
    fn a_body_never_polled_leaves_no_entry() {
        let zc = ZeroCopy(Arc::new(FileQueue::default()));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut body = zc.body(temp_file(), 0..10);
        // Queued on the first poll, which also yields the only chunk; then a body never polled.
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_ready());
        drop(zc.body(temp_file(), 0..10));
        assert_eq!(zc.0.lock().queue.len(), 1);
    }
}

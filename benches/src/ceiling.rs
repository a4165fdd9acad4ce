//! The loopback ceiling: the least work a server can do to serve a blob from the page cache. A
//! minimal HTTP/1.1 sender inside regbench answers every request with one file's bytes, sent
//! with `sendfile(2)` from a file holding a blob of the scenario that was just written (so it is
//! in the page cache; the client checks its bytes exactly as it checks the servers'), and does nothing else: no storage lookups, no parsing beyond the end of the request
//! head. The warm-pull scenario times the same client against it right after each server, so
//! "share of the loopback ceiling" says how close a server comes to what this machine's loopback,
//! memory and this client can move at that moment.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

/// A running sender; it stops, and its file is removed, when dropped.
pub(crate) struct Ceiling {
    pub(crate) addr: SocketAddr,
    /// `/proc/self/task/<tid>/stat` of the sender's thread (all its work runs there).
    stat: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ceiling {
    /// CPU seconds the sender's thread has used so far.
    pub(crate) fn cpu_secs(&self, clk_tck: f64) -> Result<f64> {
        crate::procfs::cpu_secs_at(&self.stat, clk_tck)
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `content` to a file in the temporary folder and starts a sender for it on 127.0.0.1,
/// on a thread and runtime of its own, so that it is scheduled apart from the client the way a
/// server process is.
pub(crate) async fn start(content: Bytes) -> Result<Ceiling> {
    let len = content.len() as u64;
    let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
        let mut f = tempfile::tempfile().context("ceiling file")?;
        f.write_all(&content)?;
        Ok(f)
    })
    .await??;
    let file = Arc::new(file);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        // "/proc/thread-self" links to "<pid>/task/<tid>".
        let _ = tid_tx.send(std::fs::read_link("/proc/thread-self"));
        rt.block_on(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { break };
                        let file = file.clone();
                        tokio::spawn(async move {
                            let _ = serve(stream, &file, len).await;
                        });
                    }
                }
            }
        });
    });
    let task = tid_rx.recv()?.context("read /proc/thread-self")?;
    Ok(Ceiling {
        addr,
        stat: format!("/proc/{}/stat", task.display()),
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Answers requests on one connection until the client closes it.
async fn serve(mut stream: TcpStream, file: &std::fs::File, len: u64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        // Read up to the end of a request head (the requests here have no body).
        let end = loop {
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() > 64 * 1024 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        };
        head.drain(..end);
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
        );
        stream.write_all(answer.as_bytes()).await?;
        let mut offset = 0u64;
        while offset < len {
            let want = (len - offset).min(4 << 20) as usize;
            let sent = stream
                .async_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(&stream, file, Some(&mut offset), want)
                        .map_err(std::io::Error::from)
                })
                .await?;
            if sent == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

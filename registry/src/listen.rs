//! Accepting connections and serving them with hyper, for plain HTTP and (with [`crate::tls`])
//! HTTPS alike, with the limits a server facing many clients needs:
//!
//! - `header_read_timeout`: a request's headers must arrive within this time (slowloris).
//! - `idle_timeout`: a connection with no request in flight and no bytes moving for this long is
//!   closed. This also covers a peer that connects and never speaks, and a client that stops
//!   reading a download.
//! - HTTP/2: keep-alive pings, a bound on concurrent streams and on header list size.
//!
//! Stalled request bodies are bounded separately, per chunk, where bodies are read (`api`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::Config;
use crate::sendfile::{SendfileIo, ZeroCopy};

/// Connection limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time allowed for a request's headers.
    pub header_read_timeout: Duration,
    /// Time a connection may sit with nothing in flight and nothing moving.
    pub idle_timeout: Duration,
    /// Send downloads with `sendfile(2)` on plain HTTP/1.x ([`crate::sendfile`]).
    pub sendfile: bool,
}

impl Limits {
    /// The limits `config` sets.
    pub fn from_config(config: &Config) -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout.max(1)),
            idle_timeout: Duration::from_secs(config.idle_timeout.max(1)),
            sendfile: config.sendfile,
        }
    }
}

/// The hyper connection builder both listeners use.
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // HTTP/1 keeps hyper's limit of 100 request headers (more get 431): with that default the
    // header index is parsed on the stack, while any `max_headers` setting allocates it (4 KiB
    // for 128) on every request, and an allocation of that size also makes glibc's malloc
    // consolidate its free lists each time.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Larger HTTP/2 flow-control windows than the 64 KiB defaults: blob uploads and downloads
    // would otherwise stall on window updates.
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024)
        .initial_stream_window_size(4 * 1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024)
        .max_frame_size(256 * 1024);
    b
}

/// Milliseconds since `epoch`, for cheap atomic timestamps.
fn millis(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// What a connection's watchdog looks at: when bytes last moved, and how many requests are in
/// flight.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// A fresh record, active now.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last.store(millis(self.epoch), Ordering::Relaxed);
    }

    /// Completes when the connection has been idle for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let idle = Duration::from_millis(
                millis(self.epoch).saturating_sub(self.last.load(Ordering::Relaxed)),
            );
            if idle >= limit && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(limit.saturating_sub(idle).max(Duration::from_millis(250))).await;
        }
    }
}

/// An IO stream that records activity.
pub struct ActiveIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> ActiveIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        activity.touch();
        ActiveIo { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActiveIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActiveIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one connection until it ends, is idle too long, or shutdown drains it. With
/// `zero_copy`, its requests carry that extension (the connection can send files).
#[allow(clippy::too_many_arguments)]
pub async fn serve_connection<I>(
    io: I,
    activity: Arc<Activity>,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    app: Router,
    watcher: Watcher,
    limits: Limits,
    zero_copy: Option<ZeroCopy>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counted = activity.clone();
    let app = tower::ServiceExt::<http::Request<hyper::body::Incoming>>::map_request(
        app,
        move |mut req: http::Request<hyper::body::Incoming>| {
            if let Some(z) = &zero_copy {
                req.extensions_mut().insert(z.clone());
            }
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            req
        },
    );
    let app =
        tower::ServiceExt::<http::Request<hyper::body::Incoming>>::map_future(app, move |fut| {
            let counted = counted.clone();
            counted.in_flight.fetch_add(1, Ordering::Relaxed);
            async move {
                let r = fut.await;
                counted.in_flight.fetch_sub(1, Ordering::Relaxed);
                counted.touch();
                r
            }
        });
    let service = TowerToHyperService::new(app);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let conn = watcher.watch(conn.into_owned());
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        },
        _ = activity.idle_for(limits.idle_timeout) => {
            tracing::debug!(%peer, "closing an idle connection");
        }
    }
}

/// Accepts plain HTTP connections on `listener` until `shutdown` turns true, then stops accepting
/// and waits for open connections to finish their requests (the caller bounds that wait).
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let builder = Arc::new(http_builder(&limits));
    accept_loop(listener, shutdown, move |tcp, peer, watcher| {
        let builder = builder.clone();
        let app = app.clone();
        async move {
            let activity = Activity::new();
            let (tcp, zero_copy) = SendfileIo::new(tcp);
            let zero_copy = limits.sendfile.then_some(zero_copy);
            let io = ActiveIo::new(tcp, activity.clone());
            serve_connection(
                io, activity, peer, &builder, app, watcher, limits, zero_copy,
            )
            .await;
        }
    })
    .await
}

/// The accept loop shared by the listeners: `handle` serves each connection in its own task.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) -> anyhow::Result<()>
where
    F: Fn(TcpStream, SocketAddr, Watcher) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            res = listener.accept() => res,
            _ = shutdown.wait_for(|v| *v) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(handle(tcp, peer, graceful.watcher()));
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

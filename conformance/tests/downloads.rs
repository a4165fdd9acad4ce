//! Blob downloads on plain HTTP/1.1 connections, where the registry sends file bytes with
//! `sendfile(2)` (`registry::sendfile`): many responses on one connection, pipelined requests,
//! ranges, slow readers and abandoned downloads must all carry exactly the stored bytes. Each
//! case runs with `sendfile` on (the default) and off, and both must answer the same.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use conformance::{random_bytes, raw, sha256_digest, RawAnswer, TestRegistry};
use registry::metrics::METRICS;

/// Reads one response to a request whose method was `method` (HEAD has no body).
fn read_answer(r: &mut BufReader<TcpStream>, method: &str) -> RawAnswer {
    raw::read_response(r, method).expect("read an answer")
}

fn connect(reg: &TestRegistry) -> TcpStream {
    let addr = reg.base_url().trim_start_matches("http://");
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("read timeout");
    s
}

fn request(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: registry\r\n{extra}\r\n")
}

async fn start(sendfile: bool) -> TestRegistry {
    TestRegistry::start_with(move |c| c.sendfile = sendfile).await
}

async fn pipelined_requests_get_their_own_bytes(sendfile: bool) {
    let reg = start(sendfile).await;
    let a = random_bytes(3 << 20);
    let b = random_bytes((1 << 20) + 7);
    let da = reg.push_blob("dl/pipe", &a).await;
    let db = reg.push_blob("dl/pipe", &b).await;
    let missing = sha256_digest(b"not stored");
    let blob = |d: &str| format!("/v2/dl/pipe/blobs/{d}");

    // Every request is written before any answer is read: the server answers them in order on
    // one connection, mixing file downloads with answers that have no file behind them.
    let plan: Vec<(&str, String, &str)> = vec![
        ("GET", blob(&da), ""),
        ("HEAD", blob(&db), ""),
        ("GET", blob(&db), "Range: bytes=10-100009\r\n"),
        ("GET", blob(&missing), ""),
        ("GET", blob(&da), "Range: bytes=5-\r\n"),
        ("GET", "/v2/".into(), ""),
        ("GET", blob(&db), ""),
        ("GET", blob(&da), "Range: bytes=0-0\r\n"),
    ];
    let before = METRICS.sendfile_bytes();
    let mut conn = connect(&reg);
    let all: String = plan.iter().map(|(m, p, h)| request(m, p, h)).collect();
    conn.write_all(all.as_bytes()).expect("write requests");
    let mut r = BufReader::new(conn);
    let answers: Vec<RawAnswer> = plan
        .iter()
        .map(|(m, _, _)| read_answer(&mut r, m))
        .collect();

    assert_eq!(answers[0].status, 200);
    assert_eq!(sha256_digest(&answers[0].body), da, "first GET of a");
    assert_eq!(answers[1].status, 200);
    assert_eq!(answers[1].header("content-length"), Some("1048583"));
    assert_eq!(answers[2].status, 206);
    assert_eq!(answers[2].body, &b[10..100_010], "range of b");
    assert_eq!(answers[3].status, 404);
    assert!(
        String::from_utf8_lossy(&answers[3].body).contains("BLOB_UNKNOWN"),
        "404 body names the error"
    );
    assert_eq!(answers[4].status, 206);
    assert_eq!(answers[4].body, &a[5..], "open-ended range of a");
    assert_eq!(answers[5].status, 200);
    assert_eq!(answers[6].status, 200);
    assert_eq!(answers[6].body, b, "whole b after the others");
    assert_eq!(answers[7].status, 206);
    assert_eq!(answers[7].body, &a[..1], "one-byte range");
    if sendfile {
        let bodies: usize = answers.iter().map(|a| a.body.len()).sum();
        let blob_bytes = (bodies - answers[3].body.len() - answers[5].body.len()) as u64;
        // Other tests of this binary may add to the process-wide counter, never take away.
        assert!(
            METRICS.sendfile_bytes() - before >= blob_bytes,
            "downloads did not go out with sendfile"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_get_their_own_bytes_sendfile() {
    pipelined_requests_get_their_own_bytes(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_get_their_own_bytes_memory() {
    pipelined_requests_get_their_own_bytes(false).await;
}

/// A reader slower than the server fills the socket buffer, so the server must wait for room
/// and carry on where it stopped; a client that walks away mid-download must not disturb the
/// next ones.
async fn slow_and_abandoned_downloads(sendfile: bool) {
    let reg = start(sendfile).await;
    let data = random_bytes(24 << 20);
    let digest = reg.push_blob("dl/slow", &data).await;
    let path = format!("/v2/dl/slow/blobs/{digest}");

    // Abandoned after 1 MiB, twice, with the connection closed under the server's feet.
    for _ in 0..2 {
        let mut conn = connect(&reg);
        conn.write_all(request("GET", &path, "").as_bytes())
            .expect("write request");
        let mut first = vec![0; 1 << 20];
        conn.read_exact(&mut first).expect("first MiB");
        drop(conn);
    }

    // Slow: 64 KiB reads with pauses. 24 MiB is far more than the loopback socket buffers
    // hold, so the server often finds the socket full and must wait for room.
    let mut r = BufReader::with_capacity(64 << 10, connect(&reg));
    r.get_mut()
        .write_all(request("GET", &path, "").as_bytes())
        .expect("write request");
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "got {line:?}");
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        if line.trim_end().is_empty() {
            break;
        }
    }
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0; 64 << 10];
    let mut reads = 0u32;
    while got.len() < data.len() {
        let want = buf.len().min(data.len() - got.len());
        let n = r.read(&mut buf[..want]).expect("read body");
        assert!(n > 0, "connection closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        reads += 1;
        if reads % 16 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(got == data, "slow download differs from the blob");

    // The same connection serves the next request.
    let stream = r.get_mut();
    stream
        .write_all(request("GET", &path, "Range: bytes=100-199\r\n").as_bytes())
        .expect("write request");
    let a = read_answer(&mut r, "GET");
    assert_eq!(a.status, 206);
    assert_eq!(a.body, &data[100..200]);

    // And a fresh connection gets the whole blob after all that.
    let whole = reg
        .client()
        .get(reg.url(&path))
        .send()
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    assert_eq!(sha256_digest(&whole), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_abandoned_downloads_sendfile() {
    slow_and_abandoned_downloads(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_abandoned_downloads_memory() {
    slow_and_abandoned_downloads(false).await;
}

/// Many clients downloading different blobs at once, each over its own keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_downloads_on_kept_alive_connections() {
    let reg = start(true).await;
    let mut blobs = Vec::new();
    for i in 0..4 {
        let data = random_bytes((2 << 20) + i * 4099);
        let digest = reg.push_blob("dl/many", &data).await;
        blobs.push((digest, data));
    }
    let mut tasks = Vec::new();
    for c in 0..8 {
        let blobs = blobs.clone();
        let addr = reg.base_url().trim_start_matches("http://").to_owned();
        tasks.push(std::thread::spawn(move || {
            let conn = TcpStream::connect(&addr).expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            let mut r = BufReader::new(conn);
            for round in 0..6 {
                let (digest, data) = &blobs[(c + round) % blobs.len()];
                let path = format!("/v2/dl/many/blobs/{digest}");
                r.get_mut()
                    .write_all(request("GET", &path, "").as_bytes())
                    .expect("write request");
                let a = read_answer(&mut r, "GET");
                assert_eq!(a.status, 200);
                assert!(&a.body == data, "client {c} round {round}: other bytes");
            }
        }));
    }
    for t in tasks {
        t.join().expect("client thread");
    }
}

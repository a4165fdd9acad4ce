//! The access log (issue 16, "Drop-in for Distribution"): one `info` line per request with the
//! method, endpoint, repository, reference, status, bytes, duration and client address, on by
//! default and off with `--access-log false`. Runs the real `registry` binary on a loopback port
//! with JSON logs and real HTTP requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A running registry; killed (by its PID) when dropped.
struct Server {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<Value>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_registry"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--gc-interval", "0", "--storage"])
        .arg(dir.path().join("data"))
        .args(extra)
        .env_clear()
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let mut server = Server {
        child,
        addr: String::new(),
        lines,
    };
    let serving = next_line(&server, |v| v["fields"]["message"] == "registry serving")
        .expect("the registry logs its address");
    server.addr = serving["fields"]["listen"].as_str().unwrap().to_owned();
    (server, dir)
}

/// The next log line that `pred` accepts, within 10 s.
fn next_line(server: &Server, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        match server.lines.recv_timeout(left) {
            Ok(v) if pred(&v) => return Some(v),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Sends one request and returns the status line.
fn request(addr: &str, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or("").to_owned()
}

fn is_access(v: &Value) -> bool {
    v["target"] == "registry::access"
}

#[test]
fn one_line_per_request_with_its_fields() {
    let (server, _dir) = start(&[]);
    let status = request(&server.addr, "GET", "/v2/team/app/manifests/v1.0");
    assert!(status.contains(" 404 "), "{status}");
    let line = next_line(&server, is_access).expect("an access line for the request");
    let f = &line["fields"];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(f["method"], "GET", "{line}");
    assert_eq!(f["endpoint"], "get_manifest", "{line}");
    assert_eq!(f["repository"], "team/app", "{line}");
    assert_eq!(f["reference"], "v1.0", "{line}");
    assert_eq!(f["status"], 404, "{line}");
    assert!(f["bytes"].as_u64().is_some_and(|b| b > 0), "{line}");
    assert!(f["micros"].as_u64().is_some(), "{line}");
    assert!(
        f["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert!(
        f.get("identity").is_none(),
        "no identity before access control: {line}"
    );

    let status = request(&server.addr, "GET", "/v2/");
    assert!(status.contains(" 200 "), "{status}");
    let line = next_line(&server, is_access).expect("an access line for /v2/");
    assert_eq!(line["fields"]["endpoint"], "base", "{line}");
    assert_eq!(line["fields"]["status"], 200, "{line}");
}

#[test]
fn access_log_false_turns_it_off() {
    let (server, _dir) = start(&["--access-log", "false"]);
    let status = request(&server.addr, "GET", "/v2/team/app/manifests/v1.0");
    assert!(status.contains(" 404 "), "{status}");
    let status = request(&server.addr, "GET", "/v2/");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        next_line(&server, is_access).is_none(),
        "no access line with --access-log false"
    );
}

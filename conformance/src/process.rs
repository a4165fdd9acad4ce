//! The processes the test programs start on 127.0.0.1: `registry serve` and the S3-compatible
//! servers (`moto_server`, `s3s-fs`), and how they are stopped.
//!
//! Two ways to hold a process:
//! - [`Watched`] ([`spawn_watched`]): started through a watchdog shell that holds a pipe from the
//!   test process on its stdin. When the test process ends, however it ends (success, panic,
//!   SIGKILL), the pipe closes and the shell stops the server by its PID, so nothing is left
//!   behind. Its exit status is not seen. Used for [`RegistryProcess`] and [`S3Server`]; their
//!   ports come from the range 20000-20999 ([`PORT_FIRST`], [`PORT_COUNT`], [`free_port`]).
//! - [`RegistryChild`]: a direct child of the test process, so its exit status can be checked
//!   (graceful shutdown) and it can be killed and started again on the same storage. It is
//!   killed when dropped. Its port is one the kernel picks ([`loopback_port`]).
//!
//! # API
//! - Ports: [`free_port`] (in the range), [`loopback_port`] (any).
//! - Any process: [`spawn_watched`], [`Watched`] (signal, alive, kill, `/proc/PID/status`
//!   fields such as `VmHWM`/`VmRSS`), [`listens`], [`wait_listening`].
//! - `registry serve`: [`RegistryChild`] (on a storage folder, ready when `/readyz` is 200),
//!   [`RegistryProcess`] (watched, on object storage, ready when `/v2/` is 200), and
//!   [`storage_option_args`] for other `registry` commands on object storage.
//! - S3 servers: [`start_moto`], [`start_s3s_fs`], [`S3Server`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First port of the range the watched servers use.
pub const PORT_FIRST: u16 = 20000;
/// Number of ports in the range.
pub const PORT_COUNT: u16 = 1000;

/// A port of the range that is free now, chosen from a pseudo-random start.
pub fn free_port() -> Result<u16, String> {
    let start = (crate::random::random_u64() % u64::from(PORT_COUNT)) as u16;
    (0..PORT_COUNT)
        .map(|i| PORT_FIRST + (start + i * 7) % PORT_COUNT)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or_else(|| {
            format!(
                "no free port in {PORT_FIRST}-{}",
                PORT_FIRST + PORT_COUNT - 1
            )
        })
}

/// A loopback port that is free now, whichever the kernel hands out for `127.0.0.1:0`.
pub fn loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `kill -<signal> <pid>`.
fn send_signal(pid: u32, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map_err(|e| format!("kill -{signal}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} failed"))
    }
}

/// Whether `program` is a file in one of the `PATH` folders.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// A process started by [`spawn_watched`]. Dropping it stops the process (the watchdog shell
/// sees its stdin close and kills it).
pub struct Watched {
    /// PID of the process itself (not of the watchdog shell).
    pub pid: u32,
    child: Mutex<Child>,
}

impl Watched {
    /// Sends `signal` (e.g. `"KILL"`, `"TERM"`, `"STOP"`, `"CONT"`) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = send_signal(self.pid, signal);
    }

    /// Whether the process still runs (and is not a zombie).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|s| {
                let state = s.rsplit_once(") ").map(|(_, r)| r.chars().next());
                !matches!(state, Some(Some('Z' | 'X')) | None)
            })
            .unwrap_or(false)
    }

    /// Kills the process (SIGKILL) and waits up to 10 s for it to be gone.
    pub fn kill(&self) {
        self.signal("KILL");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A field of `/proc/PID/status` in kB (e.g. `VmHWM`, the peak resident memory, or
    /// `VmRSS`).
    pub fn status_kb(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
    }
}

/// Starts `program args` (with `envs` added and `AWS_CA_BUNDLE`/`REQUESTS_CA_BUNDLE` removed)
/// under a watchdog shell; its stdout and stderr are appended to `log`.
pub fn spawn_watched(
    program: &str,
    args: &[String],
    envs: &[(&str, String)],
    log: &Path,
) -> Result<Watched, String> {
    // The shell starts the program, prints its PID, then waits for its own stdin to close
    // (this process ending) and stops the program by that PID.
    let script = "\"$@\" >>\"$WATCHED_LOG\" 2>&1 </dev/null & pid=$!; echo $pid; \
                  cat >/dev/null; kill $pid 2>/dev/null; (sleep 5; kill -9 $pid 2>/dev/null) & k=$!; \
                  wait $pid 2>/dev/null; kill $k 2>/dev/null";
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(program)
        .args(args)
        .env("WATCHED_LOG", log)
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("REQUESTS_CA_BUNDLE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("start {program}: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .map_err(|e| format!("read PID of {program}: {e}"))?;
    let pid = line
        .trim()
        .parse()
        .map_err(|_| format!("watchdog of {program} printed {line:?}, not a PID"))?;
    Ok(Watched {
        pid,
        child: Mutex::new(child),
    })
}

/// Whether `pid` has a socket listening on `127.0.0.1:port` (from `/proc/net/tcp` and the
/// process's descriptors). Tells our server apart from another one on the same port.
pub fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == want && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|e| {
        std::fs::read_link(e.path())
            .map(|l| inodes.iter().any(|i| l.to_str() == Some(i)))
            .unwrap_or(false)
    })
}

/// Waits until the watched process listens on `127.0.0.1:port`, at most `limit`.
pub fn wait_listening(w: &Watched, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if listens(w.pid, port) {
            return Ok(());
        }
        if !w.alive() {
            return Err(format!(
                "process {} exited before listening on {port}",
                w.pid
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "process {} not listening on {port} after {limit:?}",
                w.pid
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The start of every `registry serve` command line: `serve --listen 127.0.0.1:<port>
/// --storage <storage>`.
fn serve_args(port: u16, storage: &str) -> Vec<String> {
    vec![
        "serve".to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--storage".to_owned(),
        storage.to_owned(),
    ]
}

/// How a `registry` command line carries the storage options `options` (`storage_options` in
/// the config): arguments `--storage-option k=v`, except the credentials `access_key_id` and
/// `secret_access_key`, which go in the environment as `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`. Returns (arguments, environment), in the order of `options`.
pub fn storage_option_args(
    options: &BTreeMap<String, String>,
) -> (Vec<String>, Vec<(&'static str, String)>) {
    let mut args = Vec::new();
    let mut envs = Vec::new();
    for (k, v) in options {
        match k.as_str() {
            "access_key_id" => envs.push(("AWS_ACCESS_KEY_ID", v.clone())),
            "secret_access_key" => envs.push(("AWS_SECRET_ACCESS_KEY", v.clone())),
            _ => {
                args.push("--storage-option".to_owned());
                args.push(format!("{k}={v}"));
            }
        }
    }
    (args, envs)
}

/// A `registry serve` process that is a direct child of this one, on a storage folder: its
/// exit status is seen, so a graceful shutdown can be checked. Killed (SIGKILL) when dropped.
pub struct RegistryChild {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    child: tokio::process::Child,
}

impl RegistryChild {
    /// Starts `binary serve --listen 127.0.0.1:<loopback_port()> --storage <storage>`, then the
    /// `extra` arguments, without `REGISTRY_CONFIG` in its environment, with stdout discarded
    /// and stderr appended to `log`; waits until `GET /readyz` answers 200 (20 s at most).
    pub async fn start(
        binary: &Path,
        storage: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Result<Self, String> {
        let port = loopback_port();
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("log file: {e}"))?;
        let storage = storage.to_str().ok_or("non-UTF-8 storage path")?;
        let child = tokio::process::Command::new(binary)
            .args(serve_args(port, storage))
            .args(extra)
            .env_remove("REGISTRY_CONFIG")
            .stdout(Stdio::null())
            .stderr(logf)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {}: {e}", binary.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    return Ok(RegistryChild { base, child });
                }
            }
            if Instant::now() > deadline {
                return Err("registry did not become ready within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM (the start of a graceful shutdown); see [`RegistryChild::wait_stopped`].
    pub fn terminate(&self) -> Result<(), String> {
        let pid = self.child.id().ok_or("registry already exited")?;
        send_signal(pid, "TERM")
    }

    /// After [`RegistryChild::terminate`]: waits at most `limit` for the process to exit, and
    /// wants exit status 0. Past the limit it kills the process.
    pub async fn wait_stopped(&mut self, limit: Duration) -> Result<(), String> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("registry exited with {s} after SIGTERM")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                let _ = self.child.start_kill();
                Err(format!(
                    "registry did not exit within {} s of SIGTERM",
                    limit.as_secs()
                ))
            }
        }
    }

    /// Graceful stop: SIGTERM, then exit status 0 within `limit`.
    pub async fn stop(mut self, limit: Duration) -> Result<(), String> {
        self.terminate()?;
        self.wait_stopped(limit).await
    }

    /// SIGKILL, as a crash would, and waits for the process to be gone.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A `registry serve` process on object storage, on a port of the range, watched (see
/// [`spawn_watched`]).
pub struct RegistryProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub port: u16,
    pub process: Watched,
}

impl RegistryProcess {
    /// Starts `binary serve --listen 127.0.0.1:<free port> --storage <storage>` with the
    /// storage options `options` (see [`storage_option_args`]), then `extra` arguments; waits
    /// until it listens and answers `GET /v2/`. Tries three ports before it gives up.
    pub fn start(
        binary: &Path,
        storage: &str,
        options: &BTreeMap<String, String>,
        extra: &[&str],
        log: &Path,
    ) -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let mut args = serve_args(port, storage);
            let (option_args, envs) = storage_option_args(options);
            args.extend(option_args);
            args.extend(extra.iter().map(|a| (*a).to_owned()));
            let bin = binary.to_str().ok_or("non-UTF-8 registry path")?;
            let process = spawn_watched(bin, &args, &envs, log)?;
            match wait_listening(&process, port, Duration::from_secs(20)) {
                Ok(()) => {
                    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while !crate::raw::blocking_request(addr, "GET", "/v2/", b"")
                        .is_ok_and(|a| a.status == 200)
                    {
                        if Instant::now() > deadline {
                            return Err(format!(
                                "registry on {addr} does not answer GET /v2/ with 200"
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    return Ok(RegistryProcess {
                        base: format!("http://{addr}"),
                        port,
                        process,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(format!("registry did not start: {last}"))
    }

    /// The base URL joined with `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// `registry fsck --storage STORAGE` with the binary `bin`: `Ok` when it finds nothing damaged,
/// else what it printed.
pub async fn fsck(bin: &Path, storage: &Path) -> Result<(), String> {
    let out = tokio::process::Command::new(bin)
        .arg("fsck")
        .arg("--storage")
        .arg(storage)
        .env_remove("REGISTRY_CONFIG")
        .output()
        .await
        .map_err(|e| format!("run {} fsck: {e}", bin.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fsck exit {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

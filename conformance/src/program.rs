//! What the test programs in `src/bin` share (`crash-soak`, `gc-soak`, `s3-replicas`,
//! `s3-outage`, `s3-memory`): the command line ([`Common`], with `clap`), the PASS/FAIL
//! [`Tally`], and the run itself ([`run`]: runtime, work folder, summary line, exit code).
//!
//! They stay programs rather than `cargo test` targets because they drive the release
//! `registry` binary as a separate process (SIGKILL, SIGSTOP, `/proc/PID/status` memory) for up
//! to minutes, with bounds `scripts/test.sh` sets on their command lines.

use std::future::Future;
use std::path::PathBuf;

/// The registry binary the programs test unless `--registry` says otherwise: the one
/// `scripts/test.sh` builds.
pub const DEFAULT_REGISTRY: &str = "target/x86_64-unknown-linux-gnu/release/registry";

/// The arguments every program takes (`#[command(flatten)]` it into the program's own).
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The `registry` binary under test.
    #[arg(long, default_value = DEFAULT_REGISTRY)]
    pub registry: PathBuf,
}

/// Counts checks and prints `PASS name` / `FAIL name: reason` lines and the final
/// `N passed, N failed`.
#[derive(Default, Debug)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

impl Tally {
    /// Records one check; a non-empty `Ok` note is printed after the name.
    pub fn record(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(note) if note.is_empty() => {
                self.passed += 1;
                println!("PASS {name}");
            }
            Ok(note) => {
                self.passed += 1;
                println!("PASS {name} ({note})");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }

    /// Prints the summary; the process's exit code (0 when nothing failed).
    pub fn finish(&self) -> i32 {
        println!("{} passed, {} failed", self.passed, self.failed);
        i32::from(self.failed > 0)
    }
}

/// Runs a test program: parses `A` from the command line (`--help`; a bad argument prints the
/// usage and exits 2), makes a work folder `/tmp/<name>-XXXXXX`, runs `checks` with the arguments
/// and the folder on a multi-threaded runtime (2 workers), prints the `N passed, N failed` line
/// of the tally it returns, and exits 0 only when nothing failed. The work folder (logs, storage)
/// is kept and named when a check failed or `S3_TEST_KEEP` is set, otherwise removed. Every
/// process the checks started is stopped when they return (the handles stop them on drop).
pub fn run<A, F, Fut>(name: &str, checks: F) -> !
where
    A: clap::Parser,
    F: FnOnce(A, PathBuf) -> Fut,
    Fut: Future<Output = Tally>,
{
    let args = A::parse();
    let work = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir()
        .expect("make the work folder");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build the runtime");
    let tally = runtime.block_on(checks(args, work.path().to_owned()));
    drop(runtime);
    let code = tally.finish();
    if code != 0 || std::env::var_os("S3_TEST_KEEP").is_some() {
        eprintln!("# work folder (logs) kept in {}", work.keep().display());
    } else {
        // exit() runs no destructors: remove the folder first.
        drop(work);
    }
    std::process::exit(code);
}

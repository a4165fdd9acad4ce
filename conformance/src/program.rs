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

/// The arguments every program takes: a program's own `Args` `#[command(flatten)]` them, a
/// program with no options of its own takes `Common` as its arguments.
#[derive(clap::Parser, Debug, Clone)]
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

    /// The value a setup step gave; when it failed, records `FAIL <what>: why` and gives `None`
    /// (the program then returns its tally: `let Some(x) = tally.setup(..) else { return tally };`).
    pub fn setup<T>(&mut self, what: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(why) => {
                self.record(what, Err(why));
                None
            }
        }
    }

    /// Prints the summary; the process's exit code (0 when nothing failed).
    pub fn finish(&self) -> i32 {
        println!("{} passed, {} failed", self.passed, self.failed);
        i32::from(self.failed > 0)
    }
}

/// `conformance::program_main!(checks)`, or `conformance::program_main!(checks, "about")` for a
/// program whose arguments carry no doc comment: the program's `main`, [`run`] under the name of
/// its binary.
#[macro_export]
macro_rules! program_main {
    ($checks:path) => {
        fn main() {
            $crate::program::run(env!("CARGO_BIN_NAME"), None, $checks)
        }
    };
    ($checks:path, $about:literal) => {
        fn main() {
            $crate::program::run(env!("CARGO_BIN_NAME"), Some($about), $checks)
        }
    };
}

/// Runs a test program: parses `A` from the command line under `name`, with `about` as the
/// `--help` summary when given (`--help`; a bad argument prints the usage and exits 2), makes a
/// work folder `/tmp/<name>-XXXXXX`, runs `checks` with the arguments and the folder on a
/// multi-threaded runtime (2 workers), prints the `N passed, N failed` line of the tally it
/// returns, and exits 0 only when nothing failed. The work folder (logs, storage) is kept and
/// named when a check failed or `S3_TEST_KEEP` is set, otherwise removed. Every process the
/// checks started is stopped when they return (the handles stop them on drop).
pub fn run<A, F, Fut>(name: &'static str, about: Option<&'static str>, checks: F) -> !
where
    A: clap::Parser,
    F: FnOnce(A, PathBuf) -> Fut,
    Fut: Future<Output = Tally>,
{
    let mut command = A::command().name(name);
    if let Some(about) = about {
        command = command.about(about);
    }
    let args = A::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
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

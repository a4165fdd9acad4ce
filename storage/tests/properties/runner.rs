//! The runner of the property tests of `storage` and `registry` (`tests/properties.rs` in each
//! includes this file by path as its module `runner`).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Runs `test` on values from `strategy`: once with proptest's configured case count, or, with
/// `PROPTEST_SECONDS` set, in batches with fresh seeds until that time has passed. Prints the
/// number of cases and the time taken; panics with the (shrunk) failing input.
pub(crate) fn check<S>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let base = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let seconds: Option<u64> = std::env::var("PROPTEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    let started = Instant::now();
    let mut total: u64 = 0;
    loop {
        let mut runner = TestRunner::new(base.clone());
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(why, value)) => {
                panic!(
                    "{name}: property failed after {total}+ cases: {why}; minimal input: {value:?}"
                )
            }
            Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
        }
        total += u64::from(base.cases);
        match seconds {
            Some(s) if started.elapsed() < Duration::from_secs(s) => continue,
            _ => break,
        }
    }
    eprintln!(
        "property {name}: {total} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// One of `list`, each equally likely (with `prop_oneof![N => words(..), ...]`, `N` the list's
/// length, every word is as likely as each other choice).
pub(crate) fn words(list: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(list).prop_map(str::to_owned)
}

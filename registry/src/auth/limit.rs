//! Failed logins per source address: after `max` failures within `window`, requests carrying
//! credentials from that address get 429 until the window ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked; when full, expired entries are dropped, then the oldest half.
const MAX_TRACKED: usize = 65_536;

/// The failure counter.
#[derive(Debug)]
pub struct FailureLimit {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimit {
    /// `max` failures per `window`; `max == 0` turns limiting off.
    pub fn new(max: u32, window: Duration) -> FailureLimit {
        FailureLimit {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `ip` may try again, when it is blocked now.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        if self.max == 0 {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (n, since) = seen.get(&ip)?;
        let left = self.window.checked_sub(since.elapsed())?;
        (*n >= self.max).then(|| left.as_secs().max(1))
    }

    /// Counts one failure from `ip`.
    pub fn fail(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_TRACKED {
            let window = self.window;
            seen.retain(|_, (_, t)| t.elapsed() < window);
            if seen.len() >= MAX_TRACKED / 2 {
                let mut times: Vec<Instant> = seen.values().map(|v| v.1).collect();
                times.sort();
                let cut = times[times.len() / 2];
                seen.retain(|_, (_, t)| *t > cut);
            }
        }
        let e = seen.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_the_window_ends() {
        let l = FailureLimit::new(3, Duration::from_millis(300));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            l.fail(a);
        }
        assert_eq!(l.blocked(a), None);
        l.fail(a);
        assert_eq!(l.blocked(a), Some(1));
        assert_eq!(l.blocked(b), None, "per address");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(l.blocked(a), None);
        l.fail(a);
        assert_eq!(l.blocked(a), None, "a new window starts from zero");
        let off = FailureLimit::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            off.fail(a);
        }
        assert_eq!(off.blocked(a), None);
    }
}

//! htpasswd files with bcrypt entries (`htpasswd -B`), re-read when the file changes, and a
//! reloading file watcher shared with the JWKS.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

/// How often a watched file's metadata is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A file parsed into `T`, re-read when its size or modification time changes. A file that stops
/// parsing keeps the last good contents (and says so in the log).
#[derive(Debug)]
pub struct Watched<T> {
    path: PathBuf,
    what: &'static str,
    parse: fn(&[u8]) -> anyhow::Result<T>,
    state: RwLock<Loaded<T>>,
}

/// The parsed contents, the file's (mtime, size) when read, and when it was last looked at.
type Loaded<T> = (Arc<T>, Option<(SystemTime, u64)>, Instant);

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl<T> Watched<T> {
    /// Reads and parses `path` now; fails when it cannot.
    pub fn open(
        path: &Path,
        what: &'static str,
        parse: fn(&[u8]) -> anyhow::Result<T>,
    ) -> anyhow::Result<Watched<T>> {
        let st = stamp(path);
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading {what} {}: {e}", path.display()))?;
        let v = parse(&bytes).map_err(|e| anyhow::anyhow!("{what} {}: {e:#}", path.display()))?;
        Ok(Watched {
            path: path.to_owned(),
            what,
            parse,
            state: RwLock::new((Arc::new(v), st, Instant::now())),
        })
    }

    /// The current contents; re-reads the file when it changed (checked every 2 s at most).
    /// Returns whether it was reloaded.
    pub fn get(&self) -> (Arc<T>, bool) {
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if s.2.elapsed() < CHECK_EVERY {
                return (s.0.clone(), false);
            }
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.2.elapsed() < CHECK_EVERY {
            return (s.0.clone(), false);
        }
        s.2 = Instant::now();
        let now = stamp(&self.path);
        if now == s.1 {
            return (s.0.clone(), false);
        }
        match std::fs::read(&self.path)
            .map_err(anyhow::Error::from)
            .and_then(|b| (self.parse)(&b))
        {
            Ok(v) => {
                s.0 = Arc::new(v);
                s.1 = now;
                tracing::info!(file = %self.path.display(), "{} reloaded", self.what);
                (s.0.clone(), true)
            }
            Err(e) => {
                s.1 = now;
                tracing::warn!(file = %self.path.display(), error = %e, "{} unreadable; keeping the previous one", self.what);
                (s.0.clone(), false)
            }
        }
    }
}

/// Users and their bcrypt hashes.
#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
}

/// A bcrypt hash nobody's password matches, verified for unknown users so that they take as
/// long as known ones (cost 5, as `htpasswd -B` writes by default).
const DUMMY: &str = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

impl Htpasswd {
    /// Parses `user:hash` lines; blank lines and `#` comments are skipped. Only bcrypt entries
    /// are accepted (`$2y$`, `$2b$`, `$2a$`): MD5, SHA1 and crypt entries are refused at load.
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Htpasswd> {
        let text = std::str::from_utf8(bytes)?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                anyhow::bail!("line {}: not user:hash", i + 1);
            };
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                anyhow::bail!(
                    "line {}: only bcrypt entries are accepted (htpasswd -B)",
                    i + 1
                );
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Htpasswd { users })
    }

    /// Whether `user` is listed.
    pub fn has(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Checks a password. An unknown user costs one bcrypt too.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY, false),
        };
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        ok && known
    }
}

/// htpasswd from a watched file, with a short-lived cache of successful checks (bcrypt costs
/// milliseconds, and clients send Basic credentials on every request). The cache key is a
/// SHA-256 of user and password; it is dropped when the file changes.
#[derive(Debug)]
pub struct Users {
    file: Watched<Htpasswd>,
    ok: Mutex<HashMap<[u8; 32], Instant>>,
}

const CACHE_FOR: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 10_000;

impl Users {
    /// Loads the file.
    pub fn open(path: &Path) -> anyhow::Result<Users> {
        Ok(Users {
            file: Watched::open(path, "htpasswd", Htpasswd::parse)?,
            ok: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `user` is listed (in the file as it is now).
    pub fn has(&self, user: &str) -> bool {
        self.file.get().0.has(user)
    }

    /// Checks a password (bcrypt runs on the blocking pool).
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        let (file, reloaded) = self.file.get();
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        {
            let mut ok = self.ok.lock().unwrap_or_else(|e| e.into_inner());
            if reloaded {
                ok.clear();
            }
            if ok.get(&key).is_some_and(|t| t.elapsed() < CACHE_FOR) && file.has(user) {
                return true;
            }
        }
        let (u, p) = (user.to_owned(), password.to_owned());
        let good = tokio::task::spawn_blocking(move || file.verify(&u, &p))
            .await
            .unwrap_or(false);
        if good {
            let mut ok = self.ok.lock().unwrap_or_else(|e| e.into_inner());
            if ok.len() >= CACHE_MAX {
                ok.clear();
            }
            ok.insert(key, Instant::now());
        }
        good
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_entries_verify() {
        let alice = bcrypt::hash("s3cret", 5)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let f = Htpasswd::parse(format!("# users\nalice:{alice}\n\n").as_bytes()).unwrap();
        assert!(f.verify("alice", "s3cret"));
        assert!(!f.verify("alice", "s3cret "));
        assert!(!f.verify("bob", "s3cret"));
        assert!(!f.verify("alice", ""));
        assert!(Htpasswd::parse(b"bob:$apr1$abc$def\n").is_err());
        assert!(Htpasswd::parse(b"nocolon\n").is_err());
        // The dummy hash is well formed (so unknown users cost a real bcrypt).
        assert!(bcrypt::verify("x", DUMMY).is_ok());
    }

    #[tokio::test]
    async fn reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let h = |p: &str| bcrypt::hash(p, 4).unwrap();
        std::fs::write(&path, format!("alice:{}\n", h("one"))).unwrap();
        let users = Users::open(&path).unwrap();
        assert!(users.verify("alice", "one").await);
        assert!(users.verify("alice", "one").await, "cached");
        std::fs::write(&path, format!("alice:{}\nbob:{}\n", h("two"), h("three"))).unwrap();
        // The cached success is dropped with the reload (after the check interval).
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(100));
        assert!(!users.verify("alice", "one").await);
        assert!(users.verify("alice", "two").await);
        assert!(users.verify("bob", "three").await);
        // A broken file keeps the last good one.
        std::fs::write(&path, "garbage without a colon, longer than before\n").unwrap();
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(100));
        assert!(users.verify("bob", "three").await);
    }
}

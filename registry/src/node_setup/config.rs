//! Reading a containerd `config.toml` the way containerd merges it: the main file, then every
//! file its `imports` name (a string or an array, possibly over several lines; `*` globs, paths
//! relative to the importing file), later files overriding earlier ones. Only the keys the node
//! setup needs are kept. Paths are node paths, read below a host root.

use std::path::{Path, PathBuf};

/// What a containerd config says about registry hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// `version` of the main file (1 when absent, as containerd reads it).
    pub version: i64,
    /// The registry `config_path` of the CRI plugin, with the file that set it.
    pub config_path: Option<(String, String)>,
    /// `use_local_image_pull` of containerd 2.x's CRI images plugin (false: the transfer service).
    pub use_local_image_pull: Option<bool>,
    /// Every file read, in order (node paths).
    pub files: Vec<String>,
}

fn get<'a>(v: &'a toml::Value, path: &[&str]) -> Option<&'a toml::Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// Expands `pattern` (a node path, `*` allowed in the last component) below `root`, sorted.
fn expand(root: &Path, pattern: &str) -> Vec<String> {
    let (dir, name) = match pattern.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => return vec![],
    };
    if !name.contains('*') {
        return vec![pattern.to_owned()];
    }
    let (pre, post) = name.split_once('*').unwrap_or((name, ""));
    let mut out: Vec<String> = std::fs::read_dir(host_path(root, dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post))
        .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
        .collect();
    out.sort();
    out
}

/// The node path `p` as seen from here.
pub fn host_path(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

impl ContainerdConfig {
    /// Reads `file` (a node path) and its imports below `root`. `Ok(None)` when the file does not
    /// exist; an error when a file cannot be parsed.
    pub fn read(root: &Path, file: &str) -> Result<Option<Self>, String> {
        let main = host_path(root, file);
        if !main.exists() {
            return Ok(None);
        }
        let mut cfg = ContainerdConfig {
            version: 1,
            ..Default::default()
        };
        let mut queue = vec![file.to_owned()];
        let mut first = true;
        while let Some(f) = queue.pop() {
            if cfg.files.contains(&f) || cfg.files.len() > 64 {
                continue;
            }
            let text = match std::fs::read_to_string(host_path(root, &f)) {
                Ok(t) => t,
                Err(e) if !first && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("{f}: {e}")),
            };
            let v: toml::Value = toml::from_str(&text).map_err(|e| format!("{f}: {e}"))?;
            cfg.files.push(f.clone());
            if first {
                if let Some(n) = v.get("version").and_then(toml::Value::as_integer) {
                    cfg.version = n;
                }
            }
            cfg.apply(&v, &f);
            let imports: Vec<String> = match v.get("imports") {
                Some(toml::Value::String(s)) => vec![s.clone()],
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                _ => vec![],
            };
            let dir = f.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let mut found = Vec::new();
            for i in imports {
                let abs = if i.starts_with('/') {
                    i
                } else {
                    format!("{dir}/{i}")
                };
                found.extend(expand(root, &abs));
            }
            // processed in order: the queue is a stack
            queue.extend(found.into_iter().rev());
            first = false;
        }
        Ok(Some(cfg))
    }

    fn apply(&mut self, v: &toml::Value, file: &str) {
        let plugins = match v.get("plugins") {
            Some(p) => p,
            None => return,
        };
        for key in [
            &["io.containerd.grpc.v1.cri", "registry", "config_path"][..],
            &["io.containerd.cri.v1.images", "registry", "config_path"][..],
            &["cri", "registry", "config_path"][..],
        ] {
            if let Some(s) = get(plugins, key).and_then(toml::Value::as_str) {
                self.config_path = Some((s.to_owned(), file.to_owned()));
            }
        }
        if let Some(b) = get(
            plugins,
            &["io.containerd.cri.v1.images", "use_local_image_pull"],
        )
        .and_then(toml::Value::as_bool)
        {
            self.use_local_image_pull = Some(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, p: &str, s: &str) {
        let f = host_path(root, p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, s).unwrap();
    }

    const MAIN: &str = "/etc/containerd/config.toml";

    /// Writes the main config and reads it (with its imports) back.
    fn main_config(root: &Path, text: &str) -> ContainerdConfig {
        write(root, MAIN, text);
        ContainerdConfig::read(root, MAIN).unwrap().unwrap()
    }

    #[test]
    fn imports_multiline_globs_and_last_wins() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(
            r,
            "/etc/containerd/conf.d/10-x.toml",
            "[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/b:/c'\n",
        );
        write(
            r,
            "/etc/containerd/conf.d/ignored.conf",
            "not = toml = at all",
        );
        write(
            r,
            "/etc/containerd/extra.toml",
            "[plugins.'io.containerd.cri.v1.images']\nuse_local_image_pull = true\n",
        );
        let c = main_config(
            r,
            "version = 3\nimports = [\n  '/etc/containerd/conf.d/*.toml',\n  \"extra.toml\",\n]\n\
             [plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/a'\n",
        );
        assert_eq!(c.version, 3);
        assert_eq!(
            c.config_path,
            Some((
                "/b:/c".to_owned(),
                "/etc/containerd/conf.d/10-x.toml".to_owned()
            ))
        );
        assert_eq!(c.use_local_image_pull, Some(true));
        assert_eq!(c.files.len(), 3);
    }

    #[test]
    fn version_2_key_and_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert_eq!(ContainerdConfig::read(r, MAIN), Ok(None));
        let c = main_config(
            r,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"\"\n",
        );
        assert_eq!(c.version, 2);
        assert_eq!(c.config_path.map(|x| x.0), Some(String::new()));
        write(r, "/etc/containerd/config.toml", "version = [");
        assert!(ContainerdConfig::read(r, "/etc/containerd/config.toml").is_err());
    }
}

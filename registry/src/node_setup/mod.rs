//! `registry node-setup`: what the node DaemonSet (deploy/node-containerd) asks the node's
//! container runtime before and after it writes `hosts.toml`, so that it never reports a node
//! ready that cannot pull the registry's service name.
//!
//! - `plan`: reads the runtime's effective configuration over its CRI socket (`Version`, and
//!   `Status` with `verbose`, whose `config` carries the registry `configPath` on containerd 1.x)
//!   and the node's config file (with its imports), and prints where `hosts.toml` must go, or the
//!   exact one-time change a human must make (exit 2), or why it cannot tell (exit 3).
//! - `probe`: pushes a tiny probe image to the registry's address, then has the runtime pull it
//!   by the service name through CRI `PullImage` (the kubelet's path). Exit 0 only when that works.
//! - `upstreams`: checks the `UPSTREAMS` list (`host=url` pairs) and prints one `HOST URL` line
//!   per upstream, for the upstream `hosts.toml` files (exit 2 with the reason when it is wrong).
//! - `install`: copies this binary to a path (an init container puts it into the setup pod).

pub mod config;
pub mod cri;
pub mod probe;
pub mod upstreams;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use config::ContainerdConfig;

/// Where the default hosts directory goes in the one-time change.
pub const DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";

/// The node setup's decision for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Write `<dir>/<name>/hosts.toml` into each of these node paths; `why` says what was read.
    Write { dirs: Vec<String>, why: String },
    /// Nothing the setup may write works: a human makes this one-time change (then restarts the
    /// runtime once).
    Change { why: String, toml: String },
}

/// The major version of a runtime version string such as `v2.1.9`, `1.7.24~ds1`, `2.1.9+unknown`.
pub fn major(version: &str) -> Option<u32> {
    version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|s| s.parse().ok())
}

/// The registry `configPath` from containerd's `Status` info (`config.registry.configPath`), when
/// the runtime reports it (containerd 1.x does; 2.1 does not).
pub fn status_config_path(info: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let cfg: serde_json::Value = serde_json::from_str(info.get("config")?).ok()?;
    cfg.get("registry")?
        .get("configPath")?
        .as_str()
        .map(str::to_owned)
}

fn change_toml(config_version: i64) -> String {
    match config_version {
        3 => format!(
            "[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '{DEFAULT_HOSTS_DIR}'"
        ),
        2 => format!(
            "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{DEFAULT_HOSTS_DIR}\""
        ),
        _ => format!("[plugins.cri.registry]\n  config_path = \"{DEFAULT_HOSTS_DIR}\""),
    }
}

/// Decides for a containerd node. `runtime_version` from CRI `Version`; `status_path` from CRI
/// `Status` (authoritative when present); `file` the node's config as read (None: no file).
pub fn plan(
    runtime_version: &str,
    status_path: Option<&str>,
    file: Option<&ContainerdConfig>,
    config_file: &str,
) -> Plan {
    let major = major(runtime_version).unwrap_or(0);
    let file_path = file.and_then(|f| f.config_path.as_ref());
    let (path, from) = match (status_path, file_path) {
        (Some(p), _) => (
            p.to_owned(),
            "the runtime's effective CRI config (Status)".to_owned(),
        ),
        (None, Some((p, f))) => (p.clone(), format!("{f} (the runtime does not report it)")),
        (None, None) => (String::new(), String::new()),
    };
    if path.is_empty() {
        let (version, what) = match file {
            Some(f) => (
                f.version,
                format!(
                    "{config_file} (version {}) sets no registry config_path",
                    f.version
                ),
            ),
            None => (
                if major >= 2 { 3 } else { 2 },
                format!("there is no {config_file}"),
            ),
        };
        let defaults = if major >= 2 {
            "containerd 2.x has no default hosts directory"
        } else {
            "containerd 1.x then reads no hosts directory"
        };
        let mut toml = change_toml(version);
        if file.is_none() {
            toml = format!("version = {version}\n{toml}");
        }
        return Plan::Change {
            why: format!(
                "containerd {runtime_version}: {what}; {defaults}, so no hosts.toml is read. \
                 Add to {config_file} and restart containerd once"
            ),
            toml,
        };
    }
    let first = path.split(':').next().unwrap_or_default().to_owned();
    if !path.contains(':') {
        return Plan::Write {
            dirs: vec![path.clone()],
            why: format!("containerd {runtime_version}: config_path = '{path}' from {from}"),
        };
    }
    if major < 2 || file.and_then(|f| f.use_local_image_pull) == Some(true) {
        return Plan::Write {
            dirs: vec![first.clone()],
            why: format!(
                "containerd {runtime_version}: config_path = '{path}' from {from}; the CRI \
                 resolver searches the list in order, so the first folder '{first}'"
            ),
        };
    }
    // containerd 2.x pulls CRI images through the transfer service, which takes the string as ONE
    // folder: `<list>/<name>/hosts.toml`. Writing there works with no restart; the first folder
    // too, for when the node switches to use_local_image_pull.
    Plan::Write {
        dirs: vec![path.clone(), first.clone()],
        why: format!(
            "containerd {runtime_version}: config_path = '{path}' from {from}, a list, and CRI \
             pulls go through the transfer service (use_local_image_pull is not true), which \
             reads the whole string as one folder; writing '{path}/<name>' and '{first}/<name>'"
        ),
    }
}

#[derive(clap::Args)]
pub struct NodeSetupArgs {
    #[command(subcommand)]
    pub command: NodeSetupCommand,
}

#[derive(clap::Subcommand)]
pub enum NodeSetupCommand {
    /// Print where hosts.toml goes on this node (`write DIR` lines, exit 0), or the one-time
    /// change a human must make (exit 2), or why the runtime cannot be read (exit 3).
    Plan {
        /// The runtime's CRI socket, as mounted in this container.
        #[arg(long)]
        socket: PathBuf,
        /// Where the node's / is mounted.
        #[arg(long, default_value = "/host")]
        host_root: PathBuf,
        /// The node's containerd config file (node path).
        #[arg(long, default_value = "/etc/containerd/config.toml")]
        config: String,
    },
    /// Push the probe image to ADDRESS, then pull it by NAME through the runtime's CRI PullImage.
    Probe {
        #[arg(long)]
        socket: PathBuf,
        /// The registry's service name, as pods and nodes use it.
        #[arg(long)]
        name: String,
        /// host:port to push the probe image to; omit to only pull.
        #[arg(long)]
        push_to: Option<String>,
        /// Push over HTTPS, trusting this CA (PEM); the certificate must name --name.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Seconds to wait for the pull.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Check a list of upstreams (`host=url,host=url`) and print `HOST URL` per upstream (exit 2
    /// with the reason when the list is wrong).
    Upstreams { list: String },
    /// Copy this binary to DEST (for an init container).
    Install { dest: PathBuf },
}

/// The probe image's repository and tag below the registry name.
pub use crate::probe_image::REPO as PROBE_REPO;
pub use crate::probe_image::TAG as PROBE_TAG;

async fn read_runtime(socket: &Path) -> Result<(cri::Version, Option<String>), cri::CallError> {
    let v = cri::version(socket).await?;
    let info = cri::status_info(socket).await?;
    Ok((v, status_config_path(&info)))
}

/// Runs `registry node-setup ...`.
pub fn run(args: NodeSetupArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("node-setup: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        NodeSetupCommand::Install { dest } => install(&dest),
        NodeSetupCommand::Upstreams { list } => match upstreams::parse(&list) {
            Ok(list) => {
                for u in list {
                    println!("{} {}", u.host, u.url);
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("UPSTREAMS: {e}");
                ExitCode::from(2)
            }
        },
        NodeSetupCommand::Plan {
            socket,
            host_root,
            config,
        } => plan_cmd(&rt, &socket, &host_root, &config),
        NodeSetupCommand::Probe {
            socket,
            name,
            push_to,
            ca,
            timeout,
        } => probe_cmd(&rt, &socket, &name, push_to, ca.as_deref(), timeout),
    }
}

/// `node-setup install DEST`: copies this binary to `dest`.
fn install(dest: &Path) -> ExitCode {
    let res = std::env::current_exe().and_then(|me| std::fs::copy(me, dest));
    match res {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node-setup install {}: {e}", dest.display());
            ExitCode::FAILURE
        }
    }
}

/// `node-setup plan`: reads the runtime and its config, then prints the plan.
fn plan_cmd(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    host_root: &Path,
    config: &str,
) -> ExitCode {
    let (version, status_path) = match rt.block_on(read_runtime(socket)) {
        Ok(x) => x,
        Err(e) => {
            println!(
                "unknown cannot read the runtime's effective configuration over {}: {e}; \
                 not claiming this node can pull",
                socket.display()
            );
            return ExitCode::from(3);
        }
    };
    if version.runtime_name != "containerd" {
        println!(
            "unknown the runtime on {} is {} {}, not containerd",
            socket.display(),
            version.runtime_name,
            version.runtime_version
        );
        return ExitCode::from(3);
    }
    let file = match ContainerdConfig::read(host_root, config) {
        Ok(f) => f,
        Err(e) => {
            println!("unknown cannot parse the containerd config: {e}");
            return ExitCode::from(3);
        }
    };
    print_plan(plan(
        &version.runtime_version,
        status_path.as_deref(),
        file.as_ref(),
        config,
    ))
}

/// Prints `p` as `why`/`write` lines (exit 0) or `change`/`toml` lines (exit 2).
fn print_plan(p: Plan) -> ExitCode {
    match p {
        Plan::Write { dirs, why } => {
            println!("why {why}");
            for d in dirs {
                println!("write {d}");
            }
            ExitCode::SUCCESS
        }
        Plan::Change { why, toml } => {
            println!("change {why}:");
            for l in toml.lines() {
                println!("toml {l}");
            }
            ExitCode::from(2)
        }
    }
}

/// `node-setup probe`: pushes the probe image (with `push_to`), then pulls it through the runtime.
fn probe_cmd(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    name: &str,
    push_to: Option<String>,
    ca: Option<&Path>,
    timeout: u64,
) -> ExitCode {
    let image = format!("{name}/{PROBE_REPO}:{PROBE_TAG}");
    if let Some(addr) = push_to {
        let target = probe::Target { addr: &addr, ca };
        if let Err(e) = rt.block_on(probe::push(&target, name)) {
            println!("probe-failed cannot push the probe image to {addr}: {e}");
            return ExitCode::from(1);
        }
    }
    match rt.block_on(cri::pull(socket, &image, Duration::from_secs(timeout))) {
        Ok(r) => {
            println!("probe-ok the runtime pulled {image} ({r})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("probe-failed the runtime cannot pull {image}: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(version: i64, path: Option<&str>, local: Option<bool>) -> ContainerdConfig {
        ContainerdConfig {
            version,
            config_path: path.map(|p| (p.to_owned(), "/etc/containerd/config.toml".to_owned())),
            use_local_image_pull: local,
            files: vec!["/etc/containerd/config.toml".into()],
        }
    }
    const CFG: &str = "/etc/containerd/config.toml";

    fn dirs(p: Plan) -> Vec<String> {
        match p {
            Plan::Write { dirs, .. } => dirs,
            Plan::Change { why, .. } => panic!("expected Write, got Change: {why}"),
        }
    }

    #[test]
    fn containerd_1x_follows_status() {
        // Status wins over the file (the daemon may have started with another config)
        let f = file(2, Some("/elsewhere"), None);
        assert_eq!(dirs(plan("1.6.20~ds1", Some("/a"), Some(&f), CFG)), ["/a"]);
        assert_eq!(dirs(plan("v1.7.24", Some("/a:/b"), Some(&f), CFG)), ["/a"]);
        match plan("1.6.20", Some(""), Some(&file(2, None, None)), CFG) {
            Plan::Change { toml, .. } => {
                assert!(toml.contains("[plugins.\"io.containerd.grpc.v1.cri\".registry]"))
            }
            p => panic!("{p:?}"),
        }
        match plan("1.7.24", Some(""), None, CFG) {
            Plan::Change { toml, why } => {
                assert!(toml.starts_with("version = 2\n"), "{toml}");
                assert!(why.contains("there is no"), "{why}");
            }
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn containerd_2x_list_with_transfer_writes_the_literal_path_too() {
        let f = file(3, Some("/etc/containerd/certs.d:/etc/docker/certs.d"), None);
        assert_eq!(
            dirs(plan("2.1.9+unknown", None, Some(&f), CFG)),
            [
                "/etc/containerd/certs.d:/etc/docker/certs.d",
                "/etc/containerd/certs.d"
            ]
        );
        let f = file(3, Some("/x:/y"), Some(true));
        assert_eq!(dirs(plan("v2.1.9", None, Some(&f), CFG)), ["/x"]);
        let f = file(3, Some("/x"), None);
        assert_eq!(dirs(plan("v2.1.9", None, Some(&f), CFG)), ["/x"]);
    }

    #[test]
    fn containerd_2x_without_config_path_never_writes() {
        for f in [
            None,
            Some(file(3, Some(""), None)),
            Some(file(3, None, None)),
        ] {
            match plan("2.1.9", None, f.as_ref(), CFG) {
                Plan::Change { toml, why } => {
                    assert!(toml.contains("[plugins.'io.containerd.cri.v1.images'.registry]"));
                    assert!(toml.contains("config_path = '/etc/containerd/certs.d'"));
                    assert!(why.contains("no default hosts directory"), "{why}");
                }
                p => panic!("{p:?}"),
            }
        }
        // a version 2 file on containerd 2.x: the advice uses the file's own key names
        match plan("2.1.9", None, Some(&file(2, None, None)), CFG) {
            Plan::Change { toml, .. } => assert!(toml.contains("io.containerd.grpc.v1.cri")),
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn status_config_path_from_json() {
        let mut info = std::collections::BTreeMap::new();
        info.insert(
            "config".to_owned(),
            r#"{"registry":{"configPath":"/a:/b","mirrors":null}}"#.to_owned(),
        );
        assert_eq!(status_config_path(&info).as_deref(), Some("/a:/b"));
        info.insert("config".to_owned(), r#"{"containerd":{}}"#.to_owned());
        assert_eq!(status_config_path(&info), None);
        assert_eq!(major("v2.1.9"), Some(2));
        assert_eq!(major("1.6.20~ds1"), Some(1));
    }
}

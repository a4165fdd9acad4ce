use crate::auth::{Action, Identity, Rules};
use crate::config::tests::{config_file, env_of};
use crate::config::{Config, ConfigFileArgs, ServeArgs};

/// The configuration of `yaml` (sections beside a filesystem storage), and that of
/// Distribution's variables `env` alone (beside the same storage).
fn from_file_and_from_env(yaml: &str, env: &[(&str, &str)]) -> [Config; 2] {
    let yaml = format!("version: 0.1\nstorage:\n  filesystem: {{rootdirectory: /x}}\n{yaml}");
    let mut env = env.to_vec();
    env.push(("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/x"));
    [
        load(&yaml, &[]).unwrap(),
        Config::load(&ServeArgs::default(), &env_of(&env)).unwrap(),
    ]
}

fn load(yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
    let (_dir, file) = config_file("config.yml", yaml);
    // Named as Distribution's `registry serve FILE` names it.
    let file = ConfigFileArgs {
        config_file: Some(file),
        ..Default::default()
    };
    let args = ServeArgs {
        file,
        ..Default::default()
    };
    Config::load(&args, &env_of(env))
}

const DIST: &str = r#"
version: 0.1
log:
  level: debug
  formatter: json
  fields:
    service: registry
    environment: staging
storage:
  filesystem:
    rootdirectory: /srv/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: true
      age: 24h
      interval: 1h
      dryrun: false
http:
  addr: :5001
  secret: asecretforlocaldevelopment
  headers:
    X-Content-Type-Options: [nosniff]
  debug:
    addr: 127.0.0.1:5002
    prometheus:
      enabled: true
      path: /metrics
notifications:
  events:
    includereferences: true
  endpoints:
    - name: listener
      url: http://127.0.0.1:8080/events
      headers:
        Authorization: [Bearer token]
      timeout: 500ms
      threshold: 5
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"#;

#[test]
fn a_distribution_config_translates() {
    let c = load(DIST, &[]).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:5001");
    assert_eq!(c.storage, "/srv/registry");
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.log_format, crate::config::LogFormat::Json);
    assert_eq!(c.upload_max_age, 24 * 3600);
    let x = &c.distribution;
    assert_eq!(
        x.headers["X-Content-Type-Options"],
        vec!["nosniff".to_owned()]
    );
    assert_eq!(x.debug_addr.as_deref(), Some("127.0.0.1:5002"));
    assert_eq!(x.debug_metrics_path.as_deref(), Some("/metrics"));
    assert!(!x.delete_disabled);
    assert!(!x.read_only);
    assert_eq!(x.log_fields["service"], "registry");
    assert_eq!(
        x.unsupported,
        vec![
            "notifications.events.includereferences".to_owned(),
            "storage.maintenance.uploadpurging.interval".to_owned()
        ]
    );
    let ep = &c.events.endpoints[0];
    assert_eq!(ep.name, "listener");
    assert_eq!(ep.timeout, std::time::Duration::from_millis(500));
    assert_eq!(ep.threshold, 5);
    assert_eq!(ep.headers["Authorization"], vec!["Bearer token".to_owned()]);
    assert_eq!(
        ep.ignoredmediatypes,
        vec!["application/octet-stream".to_owned()]
    );
}

#[test]
fn distribution_variables_override_the_file_and_select_s3() {
    let c = load(
        DIST,
        &[
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:6000"),
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_BUCKET", "images"),
            ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
            (
                "REGISTRY_STORAGE_S3_REGIONENDPOINT",
                "http://127.0.0.1:9000",
            ),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "ak"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", "sk"),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", "/reg"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:6000");
    assert_eq!(c.storage, "s3://images/reg");
    let o = &c.storage_options;
    assert_eq!(o["endpoint"], "http://127.0.0.1:9000");
    assert_eq!(o["allow_http"], "true");
    assert_eq!(o["access_key_id"], "ak");
    assert_eq!(o["secret_access_key"], "sk");
    assert_eq!(o["region"], "us-east-1");
    assert_eq!(o["virtual_hosted_style_request"], "false");
    assert!(c.distribution.delete_disabled);
}

#[test]
fn the_projects_own_variables_still_apply() {
    let c = load(DIST, &[("REGISTRY_LISTEN", "127.0.0.1:7000")]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(c.storage, "/srv/registry");
}

#[test]
fn variables_alone_make_a_distribution_config() {
    let args = ServeArgs::default();
    let c = Config::load(
        &args,
        &env_of(&[
            ("REGISTRY_HTTP_ADDR", "127.0.0.1:6001"),
            ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/data/x"),
            (
                "REGISTRY_NOTIFICATIONS_ENDPOINTS",
                "- name: a\n  url: http://127.0.0.1:1/e\n",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:6001");
    assert_eq!(c.storage, "/data/x");
    assert_eq!(c.events.endpoints[0].url, "http://127.0.0.1:1/e");
    assert!(c.distribution.delete_disabled, "Distribution's default");
    // Without Distribution variables nothing changes.
    let c = Config::load(&args, &env_of(&[("REGISTRY_STORAGE", "/p")])).unwrap();
    assert_eq!(c.storage, "/p");
    assert!(!c.distribution.delete_disabled);
}

#[test]
fn behaviour_changing_keys_are_honoured_or_refused() {
    let ro = load(
        "version: 0.1\nstorage:\n  filesystem: {rootdirectory: /x}\n  maintenance:\n    readonly:\n      enabled: true\n",
        &[],
    )
    .unwrap();
    assert!(ro.distribution.read_only);
    assert!(ro.distribution.delete_disabled);
    for (scheme, why) in [
        (
            "token:\n    realm: https://auth.example/token",
            "auth.token",
        ),
        ("silly:\n    realm: r", "auth.silly"),
        ("htpasswd:\n    realm: r", "auth.htpasswd without a path"),
    ] {
        let e = load(
            &format!(
                "version: 0.1\nauth:\n  {scheme}\nstorage:\n  filesystem: {{rootdirectory: /x}}\n"
            ),
            &[],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains(why), "{e:#}");
    }
    let e = load(
        "version: 0.1\nproxy:\n  remoteurl: registry-1.docker.io\n",
        &[],
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("proxy.remoteurl"), "{e:#}");
    let e = load("version: 0.1\nhttp:\n  prefix: /reg/\n", &[]).unwrap_err();
    assert!(format!("{e:#}").contains("http.prefix"), "{e:#}");
}

#[test]
fn unknown_keys_are_named_once() {
    let c = load(
        "version: 0.1\nstorage:\n  filesystem: {rootdirectory: /x}\nredis:\n  addr: localhost:6379\nhttp:\n  host: https://r.example\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        c.distribution.unsupported,
        vec!["http.host".to_owned(), "redis.addr".to_owned()]
    );
}

#[test]
fn tls_serves_https_on_the_distribution_address() {
    let c = load(
        "version: 0.1\nhttp:\n  addr: 0.0.0.0:5443\n  tls:\n    certificate: /c.pem\n    key: /k.pem\n    clientcas: [/ca.pem]\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.tls_listen.to_string(), "0.0.0.0:5443");
    assert_eq!(c.listen.ip().to_string(), "127.0.0.1");
    assert_eq!(c.tls_client_ca.unwrap().to_str(), Some("/ca.pem"));
}

#[test]
fn htpasswd_becomes_auth_with_a_login_for_everything() {
    let yaml = "auth:\n  htpasswd:\n    realm: basic-realm\n    path: /auth/htpasswd\n";
    let env = [("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd")];
    for c in from_file_and_from_env(yaml, &env) {
        let a = c.auth.expect("an [auth] section");
        assert_eq!(a.htpasswd.unwrap().to_str(), Some("/auth/htpasswd"));
        assert!(a.serviceaccount.is_none());
        let rules = Rules(a.rules);
        let (user, anon) = (Identity::named("alice"), Identity::anonymous());
        for action in [Action::Pull, Action::Push, Action::Delete] {
            assert!(rules.allows(&user, "any/repo", action), "{action:?}");
            assert!(!rules.allows(&anon, "any/repo", action), "{action:?}");
        }
        assert!(
            c.distribution
                .notes
                .iter()
                .any(|n| n.contains("no anonymous pull")),
            "{:?}",
            c.distribution.notes
        );
        assert!(c.distribution.unsupported.is_empty());
    }
}

#[test]
fn proxy_remoteurl_makes_the_registry_a_cache_of_one_upstream() {
    let yaml = "proxy:\n  remoteurl: https://registry-1.docker.io\n  username: robot\n  password: hub-token\n  ttl: 168h\n";
    let from_env = [
        ("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io"),
        ("REGISTRY_PROXY_USERNAME", "robot"),
        ("REGISTRY_PROXY_PASSWORD", "hub-token"),
        ("REGISTRY_PROXY_TTL", "168h"),
    ];
    for c in from_file_and_from_env(yaml, &from_env) {
        let p = c.proxy.expect("a [proxy] section");
        assert_eq!(p.upstreams.len(), 1);
        let up = &p.upstreams[0];
        assert_eq!(up.name, "docker.io");
        assert_eq!(up.url, "https://registry-1.docker.io");
        assert!(up.catch_all);
        assert_eq!(
            up.credentials().unwrap(),
            Some(("robot".to_owned(), "hub-token".to_owned()))
        );
        assert!(c.distribution.unsupported.is_empty());
        assert!(!format!("{:?}", c.distribution).contains("hub-token"));
    }
}

#[test]
fn gcs_and_azure_name_their_bucket_and_root() {
    let cases = [
        (
            "gcs:\n    bucket: b\n    rootdirectory: /r/\n    keyfile: /k.json\n",
            "gs://b/r",
            ("service_account_path", "/k.json"),
        ),
        (
            "azure:\n    accountname: acct\n    accountkey: key\n    container: c\n",
            "az://c",
            ("account_name", "acct"),
        ),
    ];
    for (section, storage, (key, value)) in cases {
        let c = load(&format!("version: 0.1\nstorage:\n  {section}"), &[]).unwrap();
        assert_eq!(c.storage, storage);
        assert_eq!(c.storage_options[key], value);
    }
    let e = load(
        "version: 0.1\nstorage:\n  gcs:\n    rootdirectory: /r\n",
        &[],
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("storage.gcs.bucket is required"),
        "{e:#}"
    );
}

//! The middleware end to end over the real router and filesystem storage.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use base64::Engine;
use http::{Request, StatusCode};
use sha2::Digest as _;
use tower::ServiceExt;

use super::jwt::tests::{ec_key, es256, sa_claims, ISS};
use super::jwt::RegistryClaims;
use super::rules::rule_toml;
use super::types::now_secs;
use super::*;
use crate::api::AppState;
use crate::config::Config;

struct Fixture {
    app: axum::Router,
    _dir: tempfile::TempDir,
    jwt_key: ring::signature::EcdsaKeyPair,
}

async fn fixture(rules: &str, max_failures: u32) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("wonderland", 4).unwrap()),
    )
    .unwrap();
    let (kp, jwk) = ec_key("k1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
    let text = format!(
        r#"
        htpasswd = "{}"
        max_failures = {max_failures}
        [serviceaccount]
        jwks_file = "{}"
        issuer = "{ISS}"
        audience = "registry"
        {rules}
        "#,
        htpasswd.display(),
        jwks.display()
    );
    let cfg: AuthConfig = toml::from_str(&text).unwrap();
    let config = Config {
        storage: dir.path().join("data").display().to_string(),
        fsync: false,
        auth: Some(cfg.clone()),
        ..Config::default()
    };
    let registry = Arc::new(crate::server::open_registry(&config).unwrap());
    let auth = Auth::new(cfg, registry.clone()).await.unwrap();
    let state = Arc::new(AppState {
        registry,
        config: Arc::new(config),
        proxy: None,
    });
    Fixture {
        app: crate::server::app(state, Some(auth)),
        _dir: dir,
        jwt_key: kp,
    }
}

fn sha256(b: &[u8]) -> String {
    let d = sha2::Sha256::digest(b);
    let hex: String = d.iter().map(|x| format!("{x:02x}")).collect();
    format!("sha256:{hex}")
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

impl Fixture {
    async fn call(&self, method: &str, uri: &str, auth: Option<&str>, body: &[u8]) -> Response {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "reg.test:5000");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        let req = b
            .header("content-length", body.len())
            .extension(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 40000))))
            .body(Body::from(body.to_vec()))
            .unwrap();
        self.app.clone().oneshot(req).await.unwrap()
    }

    /// Pushes a one-layer image to `repo:tag`; returns the final status.
    async fn push(&self, repo: &str, auth: Option<&str>) -> StatusCode {
        let layer = format!("layer of {repo}");
        let ld = sha256(layer.as_bytes());
        let r = self
            .call(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={ld}"),
                auth,
                layer.as_bytes(),
            )
            .await;
        if r.status() != StatusCode::CREATED {
            return r.status();
        }
        let config = b"{}";
        let cd = sha256(config);
        let r = self
            .call(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/?digest={cd}"),
                auth,
                config,
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
        });
        let req = Request::builder()
            .method("PUT")
            .uri(format!("/v2/{repo}/manifests/v1"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json");
        let req = match auth {
            Some(a) => req.header("authorization", a),
            None => req,
        };
        let r = self
            .app
            .clone()
            .oneshot(req.body(Body::from(m.to_string())).unwrap())
            .await
            .unwrap();
        r.status()
    }

    async fn token(&self, scope: &str, auth: Option<&str>) -> (StatusCode, Option<String>) {
        let r = self
            .call(
                "GET",
                &format!(
                    "/token?service=registry&scope={}",
                    form_urlencoded::byte_serialize(scope.as_bytes()).collect::<String>()
                ),
                auth,
                b"",
            )
            .await;
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let t = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_owned));
        (status, t)
    }
}

fn challenge(r: &Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn error_code(r: Response) -> String {
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn anonymous_pull_authenticated_push() {
    let f = fixture("", 3).await;
    let alice = basic("alice", "wonderland");
    // Anonymous push: 401 with a challenge naming the scope.
    let r = f
        .call("POST", "/v2/lib/app/blobs/uploads/", None, b"")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="http://reg.test:5000/token",service="registry",scope="repository:lib/app:pull,push""#
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");
    // Basic auth directly on /v2/.
    assert_eq!(f.push("lib/app", Some(&alice)).await, StatusCode::CREATED);
    // Anonymous pull works without any token.
    let r = f.call("GET", "/v2/lib/app/manifests/v1", None, b"").await;
    assert_eq!(r.status(), StatusCode::OK);
    // The base endpoint asks anonymous callers to log in, and accepts good credentials.
    let r = f.call("GET", "/v2/", None, b"").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="http://reg.test:5000/token",service="registry""#
    );
    assert_eq!(
        f.call("GET", "/v2/", Some(&alice), b"").await.status(),
        StatusCode::OK
    );
    let r = f
        .call("GET", "/v2/", Some(&basic("alice", "nope")), b"")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Delete is not in the default rules: authenticated, so 403 DENIED.
    let r = f
        .call("DELETE", "/v2/lib/app/manifests/v1", Some(&alice), b"")
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "DENIED");
    // Health and metrics stay open.
    assert_eq!(
        f.call("GET", "/livez", None, b"").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        f.call("GET", "/metrics", None, b"").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_flow_grants_the_allowed_subset() {
    let f = fixture("", 3).await;
    let alice = basic("alice", "wonderland");
    let (s, anon) = f.token("repository:lib/app:pull,push", None).await;
    assert_eq!(s, StatusCode::OK);
    let anon = format!("Bearer {}", anon.unwrap());
    // The anonymous token grants pull only: pushing with it asks for a login.
    let r = f
        .call("POST", "/v2/lib/app/blobs/uploads/", Some(&anon), b"")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.call("GET", "/v2/", Some(&anon), b"").await.status(),
        StatusCode::OK
    );
    let (s, t) = f.token("repository:lib/app:pull,push", Some(&alice)).await;
    assert_eq!(s, StatusCode::OK);
    let t = format!("Bearer {}", t.unwrap());
    assert_eq!(f.push("lib/app", Some(&t)).await, StatusCode::CREATED);
    // A token for one repository does not cover another, though alice may push there: 401
    // insufficient_scope, so the client fetches a new token.
    let r = f
        .call("POST", "/v2/lib/other/blobs/uploads/", Some(&t), b"")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenge(&r).contains(r#"error="insufficient_scope""#),
        "{}",
        challenge(&r)
    );
    // Wrong password at /token: 401.
    let (s, _) = f
        .token("repository:lib/app:pull", Some(&basic("alice", "x")))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // A tampered token is refused.
    let mut bad = t.clone();
    bad.pop();
    bad.push(if t.ends_with('A') { 'B' } else { 'A' });
    let r = f
        .call("GET", "/v2/lib/app/manifests/v1", Some(&bad), b"")
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// ServiceAccounts push into `builds/<their namespace>/`, alice everywhere, everyone pulls
/// `public/`.
fn per_namespace() -> String {
    [
        rule_toml(
            &["builds/{namespace}/**"],
            &["system:serviceaccount:*:*"],
            &["pull", "push"],
            false,
        ),
        rule_toml(&["**"], &["alice"], &["pull", "push", "delete"], false),
        rule_toml(&["public/**"], &["everyone"], &["pull"], false),
    ]
    .concat()
}

#[tokio::test]
async fn service_account_tokens_per_namespace() {
    let f = fixture(&per_namespace(), 10).await;
    let exp = now_secs() + 600;
    let sa = es256(&f.jwt_key, "k1", &sa_claims("team-a", exp));
    let as_basic = basic("serviceaccount", &sa);
    let as_bearer = format!("Bearer {sa}");
    assert_eq!(
        f.push("builds/team-a/app", Some(&as_basic)).await,
        StatusCode::CREATED
    );
    assert_eq!(
        f.push("builds/team-a/tool", Some(&as_bearer)).await,
        StatusCode::CREATED
    );
    let r = f
        .call(
            "POST",
            "/v2/builds/team-b/app/blobs/uploads/",
            Some(&as_basic),
            b"",
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(r).await, "DENIED");
    // Through /token: the namespace's repository is granted, the other one is left out.
    let (s, t) = f
        .token(
            "repository:builds/team-a/app:pull,push repository:builds/team-b/app:push",
            Some(&as_basic),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let t = t.unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&jwt::b64d(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["sub"], "system:serviceaccount:team-a:builder");
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "builds/team-a/app", "actions": ["pull", "push"]}])
    );
    // A named caller whose token lacks a scope the rules refuse gets 403, not a new challenge.
    let r = f
        .call(
            "POST",
            "/v2/builds/team-b/app/blobs/uploads/",
            Some(&format!("Bearer {t}")),
            b"",
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Expired, wrong audience, wrong issuer, other key: 401.
    let (other, _) = ec_key("k1");
    let mut aud = sa_claims("team-a", exp);
    aud["aud"] = "elsewhere".into();
    let mut iss = sa_claims("team-a", exp);
    iss["iss"] = "https://other".into();
    for bad in [
        es256(&f.jwt_key, "k1", &sa_claims("team-a", now_secs() - 600)),
        es256(&f.jwt_key, "k1", &aud),
        es256(&f.jwt_key, "k1", &iss),
        es256(&other, "k1", &sa_claims("team-a", exp)),
        es256(&f.jwt_key, "unknown", &sa_claims("team-a", exp)),
    ] {
        let r = f
            .call(
                "POST",
                "/v2/builds/team-a/x/blobs/uploads/",
                Some(&basic("sa", &bad)),
                b"",
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn catalog_and_mount_follow_pull_rights() {
    let f = fixture(&per_namespace(), 10).await;
    let alice = basic("alice", "wonderland");
    assert_eq!(
        f.push("public/base", Some(&alice)).await,
        StatusCode::CREATED
    );
    assert_eq!(
        f.push("private/secret", Some(&alice)).await,
        StatusCode::CREATED
    );
    let list = |r: Response| async move {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["repositories"].clone()
    };
    let r = f.call("GET", "/v2/_catalog", None, b"").await;
    assert_eq!(list(r).await, serde_json::json!(["public/base"]));
    let r = f.call("GET", "/v2/_catalog", Some(&alice), b"").await;
    assert_eq!(
        list(r).await,
        serde_json::json!(["private/secret", "public/base"])
    );
    // A ServiceAccount of team-a mounting alice's private layer into its own repository opens
    // an ordinary upload instead (202), so the blob does not leak; from public it mounts.
    let sa = es256(&f.jwt_key, "k1", &sa_claims("team-a", now_secs() + 600));
    let sa = basic("sa", &sa);
    let secret = sha256(b"layer of private/secret");
    let r = f
        .call(
            "POST",
            &format!("/v2/builds/team-a/x/blobs/uploads/?mount={secret}&from=private/secret"),
            Some(&sa),
            b"",
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = f
        .call(
            "HEAD",
            &format!("/v2/builds/team-a/x/blobs/{secret}"),
            Some(&sa),
            b"",
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let public = sha256(b"layer of public/base");
    let r = f
        .call(
            "POST",
            &format!("/v2/builds/team-a/x/blobs/uploads/?mount={public}&from=public/base"),
            Some(&sa),
            b"",
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // Without `from`, no digest-only mount either.
    let r = f
        .call(
            "POST",
            &format!("/v2/builds/team-a/x/blobs/uploads/?mount={secret}"),
            Some(&sa),
            b"",
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn failed_logins_are_limited_per_address_and_bad_headers_refused() {
    let f = fixture("", 3).await;
    for h in ["Basic !!!", "Bearer a.b", "Digest x"] {
        let r = f.call("GET", "/v2/lib/app/tags/list", Some(h), b"").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{h}");
    }
    // Three failures (the fixture's limit) already happened above; now 429, even with good
    // credentials, until the window ends.
    let r = f
        .call("GET", "/v2/", Some(&basic("alice", "wonderland")), b"")
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // Anonymous pulls from that address still work.
    let r = f.call("GET", "/v2/lib/app/tags/list", None, b"").await;
    assert_ne!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let (s, _) = f
        .token(
            "repository:lib/app:pull",
            Some(&basic("alice", "wonderland")),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_stored_signing_key_is_shared_by_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        storage: dir.path().display().to_string(),
        fsync: false,
        ..Config::default()
    };
    let cfg: AuthConfig = toml::from_str("").unwrap();
    let a = Auth::new(
        cfg.clone(),
        Arc::new(crate::server::open_registry(&config).unwrap()),
    )
    .await
    .unwrap();
    let b = Auth::new(
        cfg,
        Arc::new(crate::server::open_registry(&config).unwrap()),
    )
    .await
    .unwrap();
    let claims = RegistryClaims::issue("registry", "x", now_secs(), 60, vec![]);
    let t = jwt::sign_registry(&claims, &a.key());
    assert_eq!(b.verify_registry_token(&t).await.unwrap(), claims);
}

#[test]
fn client_certificate_subject_is_the_identity() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["builder.example".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "builder");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "team-a");
    let cert = params.self_signed(&key).unwrap();
    let chain = vec![cert.der().clone()];
    let c = TlsClient::from_chain(Some(&chain));
    assert_eq!(c.subject.as_deref(), Some("CN=builder, O=team-a"));
    assert_eq!(TlsClient::from_chain(None).subject, None);
    let rules: Rules = Rules(vec![Rule {
        repositories: vec!["team-a/**".into()],
        identities: vec!["CN=builder, O=team-a".into()],
        actions: vec![Action::Push],
        deny: false,
    }]);
    let id = Identity::named(c.subject.as_deref().unwrap());
    assert!(rules.allows(&id, "team-a/app", Action::Push));
    assert!(!rules.allows(&id, "team-b/app", Action::Push));
}

#[tokio::test]
async fn the_caller_identity_reaches_the_answer_and_the_access_log() {
    let f = fixture(&per_namespace(), 10).await;
    let logs = crate::distribution::logging::Captured::default();
    let _guard = logs.start();
    let token = es256(&f.jwt_key, "k1", &sa_claims("team-a", now_secs() + 600));
    let sa = basic("serviceaccount", &token);
    let wrong = basic("alice", "not-her-password");
    const SA: &str = "system:serviceaccount:team-a:builder";
    // A refusal of a known caller names it; refused credentials name nobody.
    let cases = [
        (
            "POST",
            "/v2/builds/team-a/app/blobs/uploads/",
            Some(&sa),
            202,
            Some(SA),
        ),
        (
            "GET",
            "/v2/public/x/tags/list",
            None,
            404,
            Some("anonymous"),
        ),
        (
            "DELETE",
            "/v2/builds/team-a/app/manifests/v1",
            Some(&sa),
            403,
            Some(SA),
        ),
        ("GET", "/v2/public/x/tags/list", Some(&wrong), 401, None),
    ];
    for (method, uri, auth, status, want) in cases {
        let r = f.call(method, uri, auth.map(String::as_str), b"").await;
        assert_eq!(r.status().as_u16(), status, "{method} {uri}");
        let id = r.extensions().get::<Identity>().map(Identity::display);
        assert_eq!(id, want, "{method} {uri}");
    }
    let lines = logs.access_lines();
    assert_eq!(lines.len(), cases.len(), "{lines:#?}");
    for (line, (_, _, _, status, want)) in lines.iter().zip(&cases) {
        assert!(line.contains(&format!("status={status}")), "{line}");
        match want {
            Some(who) => assert!(line.contains(&format!("identity=\"{who}\"")), "{line}"),
            None => assert!(!line.contains("identity="), "{line}"),
        }
    }
    let all = logs.text();
    for secret in [&token, &sa[6..], "not-her-password", &wrong[6..]] {
        assert!(!all.contains(secret), "a secret is in the log");
    }
}

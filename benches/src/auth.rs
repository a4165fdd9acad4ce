//! Credentials for servers with access control: Basic credentials on every request, or a bearer
//! token fetched once per scenario from the registry's `GET /token` with Basic credentials (the
//! Docker token flow, as clients do it), then sent with every request of the scenario.

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use bytes::Bytes;
use http::Method;

use crate::http::{Conn, Endpoint};

/// How requests to a server authenticate.
#[derive(Debug, Clone)]
pub(crate) enum Login {
    /// `Authorization: Basic ...` on every request.
    Basic { user: String, pass: String },
    /// A token from `GET /token` (asked for with Basic credentials) on every request.
    Bearer { user: String, pass: String },
    /// `Authorization: Bearer` and this many characters on every request, to a server without
    /// access control (which ignores it): what carrying a token of that length costs alone.
    Ignored { len: usize },
}

/// The repositories the scenarios use: the scope a bearer token is asked for.
const REPOS: [&str; 6] = [
    "bench/big",
    "bench/chunked",
    "bench/load",
    "bench/small",
    "bench/tags",
    "bench/mixed",
];

impl Login {
    /// `basic:USER:PASS`, `bearer:USER:PASS` or `ignored:LENGTH`.
    pub(crate) fn parse(s: &str) -> Result<Login> {
        if let Some(len) = s.strip_prefix("ignored:") {
            let len = len
                .parse()
                .context("auth=ignored:LENGTH: a number of characters")?;
            return Ok(Login::Ignored { len });
        }
        let mut it = s.splitn(3, ':');
        let (Some(kind), Some(user), Some(pass)) = (it.next(), it.next(), it.next()) else {
            bail!("auth={s}: expected basic:USER:PASS or bearer:USER:PASS");
        };
        let (user, pass) = (user.to_owned(), pass.to_owned());
        match kind {
            "basic" => Ok(Login::Basic { user, pass }),
            "bearer" => Ok(Login::Bearer { user, pass }),
            other => bail!("auth={other}:...: expected basic or bearer"),
        }
    }

    fn basic(&self) -> String {
        let (Login::Basic { user, pass } | Login::Bearer { user, pass }) = self else {
            return String::new();
        };
        let raw = format!("{user}:{pass}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The `Authorization` value for the next scenario against `ep`. Checks first that the server
    /// refuses an anonymous request with 401, so that access control is really on.
    pub(crate) async fn header(&self, ep: &Endpoint) -> Result<String> {
        let anonymous = Endpoint {
            auth: None,
            ..ep.clone()
        };
        let mut conn = Conn::connect(&anonymous).await?;
        let r = conn
            .send(Method::GET, "/v2/bench/load/tags/list", &[], Bytes::new())
            .await?;
        if let Login::Ignored { len } = self {
            ensure!(
                r.status.as_u16() != 401,
                "auth=ignored is for a server without access control; this one answered 401"
            );
            return Ok(format!("Bearer {}", "x".repeat(*len)));
        }
        ensure!(
            r.status.as_u16() == 401,
            "an anonymous request got {} where access control should answer 401",
            r.status
        );
        let basic = self.basic();
        if let Login::Basic { .. } = self {
            return Ok(basic);
        }
        let scopes: Vec<String> = REPOS
            .iter()
            .map(|r| format!("scope=repository:{r}:pull,push"))
            .collect();
        let target = format!("/token?service=registry&{}", scopes.join("&"));
        let r = conn
            .send(
                Method::GET,
                &target,
                &[("authorization", basic.as_str())],
                Bytes::new(),
            )
            .await?
            .expect(200, "GET /token")?;
        let v: serde_json::Value =
            serde_json::from_slice(&r.body()).context("GET /token: not JSON")?;
        let token = v["token"]
            .as_str()
            .context("GET /token: no token in the answer")?;
        Ok(format!("Bearer {token}"))
    }
}

//! Notification endpoint settings, named as Distribution names them (`notifications.endpoints`
//! in its YAML, `[[events.endpoints]]` in this registry's TOML).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};

/// The body format an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Distribution's envelope, `application/vnd.docker.distribution.events.v1+json`.
    #[default]
    Distribution,
    /// CloudEvents 1.0, structured JSON mode (`application/cloudevents+json`).
    Cloudevents,
}

/// Distribution's `ignore` block.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Ignore {
    /// Media types whose events are not sent.
    pub mediatypes: Vec<String>,
    /// Actions (`push`, `pull`, `delete`) whose events are not sent.
    pub actions: Vec<String>,
}

/// One notification endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Name, unique among endpoints (keys its delivery state in storage).
    #[serde(default)]
    pub name: String,
    /// Turned off (nothing recorded for it, nothing sent).
    #[serde(default)]
    pub disabled: bool,
    /// Where events are POSTed.
    pub url: String,
    /// Extra request headers; each name has a list of values, as in Distribution.
    #[serde(default, deserialize_with = "headers")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Time allowed for one delivery attempt.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Failed attempts in a row before retries wait `backoff`.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// Wait between retries once `threshold` attempts in a row failed.
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    pub backoff: Duration,
    /// Media types not sent (Distribution's older key).
    #[serde(default)]
    pub ignoredmediatypes: Vec<String>,
    /// Media types and actions not sent.
    #[serde(default)]
    pub ignore: Ignore,
    /// Body format.
    #[serde(default)]
    pub format: Format,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_threshold() -> u32 {
    10
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

/// Event settings of the registry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Endpoints that receive events.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Most events kept in the outbox; beyond it the oldest are dropped (counted and logged).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Oldest event kept, in seconds; older ones are dropped (counted and logged).
    #[serde(default = "default_max_age")]
    pub max_age: u64,
}

fn default_max_events() -> usize {
    100_000
}

fn default_max_age() -> u64 {
    7 * 24 * 3600
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            endpoints: Vec::new(),
            max_events: default_max_events(),
            max_age: default_max_age(),
        }
    }
}

impl EventsConfig {
    /// The endpoints that are on.
    pub fn active(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| !e.disabled)
    }

    /// Fills in default names and checks the settings.
    pub fn validate(&mut self) -> anyhow::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (i, ep) in self.endpoints.iter_mut().enumerate() {
            if ep.name.trim().is_empty() {
                ep.name = format!("endpoint-{i}");
            }
            let url: http::Uri = ep
                .url
                .parse()
                .with_context(|| format!("notification endpoint {:?}: url", ep.name))?;
            if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
                bail!(
                    "notification endpoint {:?}: url {:?} must be http:// or https:// with a host",
                    ep.name,
                    ep.url
                );
            }
            if !seen.insert(storage::outbox::endpoint_key(&ep.name)) {
                bail!("notification endpoint name {:?} is used twice", ep.name);
            }
            if ep.timeout.is_zero() {
                ep.timeout = default_timeout();
            }
            for name in ep.headers.keys() {
                http::HeaderName::try_from(name.as_str())
                    .with_context(|| format!("notification endpoint {:?}: header", ep.name))?;
            }
        }
        if self.max_events == 0 {
            bail!("events.max_events must be at least 1");
        }
        Ok(())
    }
}

/// Parses a Go duration (`300ms`, `1.5s`, `2m30s`, `1h`), as Distribution's settings use.
pub fn parse_go_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| format!("duration {s:?} lacks a unit (ns, us, ms, s, m, h)"))?;
        let n: f64 = rest[..num_end]
            .parse()
            .with_context(|| format!("duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => bail!("duration {s:?}: unknown unit {u:?}"),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration as a Go duration string, or an integer count of nanoseconds (how Distribution's
/// YAML reads a bare number).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Str(String),
    }
    match Raw::deserialize(d)? {
        Raw::Int(n) => Ok(Duration::from_nanos(n)),
        Raw::Str(s) => parse_go_duration(&s).map_err(serde::de::Error::custom),
    }
}

/// Header values: a list (Distribution's form) or a single string.
fn headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let m: BTreeMap<String, Raw> = BTreeMap::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| {
            (
                k,
                match v {
                    Raw::One(s) => vec![s],
                    Raw::Many(v) => v,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_go_duration("168h").unwrap(),
            Duration::from_secs(168 * 3600)
        );
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("5d").is_err());
    }

    #[test]
    fn endpoints_read_as_distribution_writes_them() {
        let mut c: EventsConfig = toml::from_str(
            r#"
            [[endpoints]]
            name = "hook"
            url = "http://127.0.0.1:9/events"
            headers = { Authorization = ["Bearer x"], X-One = "y" }
            timeout = "500ms"
            threshold = 3
            backoff = 2000000000
            ignoredmediatypes = ["application/octet-stream"]
            ignore = { actions = ["pull"] }
            format = "cloudevents"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let e = &c.endpoints[0];
        assert_eq!(e.timeout, Duration::from_millis(500));
        assert_eq!(e.backoff, Duration::from_secs(2));
        assert_eq!(e.headers["X-One"], vec!["y".to_owned()]);
        assert_eq!(e.format, Format::Cloudevents);
        assert_eq!(e.ignore.actions, vec!["pull".to_owned()]);
        let mut bad: EventsConfig = toml::from_str("[[endpoints]]\nurl = \"ftp://x\"\n").unwrap();
        assert!(bad.validate().is_err());
    }
}

//! Turning a stored event record into the bodies endpoints receive: Distribution's envelope or
//! CloudEvents 1.0 in structured JSON mode.

use serde_json::{json, Map, Value};
use storage::outbox::{EventRecord, Kind};

use super::config::{Endpoint, Format};

/// Distribution's envelope media type.
pub const ENVELOPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// One CloudEvent, structured mode.
pub const CLOUDEVENT: &str = "application/cloudevents+json";
/// Several CloudEvents, batched mode.
pub const CLOUDEVENTS_BATCH: &str = "application/cloudevents-batch+json";

/// Who sends events: this registry's address and instance.
#[derive(Debug, Clone)]
pub struct Source {
    /// `host:port` of this registry, as Distribution's `source.addr`.
    pub addr: String,
    /// Process instance id.
    pub instance: String,
}

/// RFC 3339 UTC time with milliseconds, from milliseconds since the epoch.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        ms % 1000
    )
}

/// The Distribution-format events one record stands for: one per tag a push set (ids
/// `<id>`, `<id>-1`, ...), else one.
pub fn events(rec: &EventRecord, source: &Source) -> Vec<Value> {
    let req = rec.request.clone().unwrap_or_default();
    let host = if req.host.is_empty() {
        source.addr.clone()
    } else {
        req.host.clone()
    };
    let scheme = "http";
    let tags: Vec<Option<&String>> = if rec.tags.is_empty() {
        vec![None]
    } else {
        rec.tags.iter().map(Some).collect()
    };
    tags.into_iter()
        .enumerate()
        .map(|(i, tag)| {
            let mut target = Map::new();
            if let Some(mt) = &rec.media_type {
                target.insert("mediaType".into(), json!(mt));
            }
            if let Some(size) = rec.size {
                target.insert("size".into(), json!(size));
                target.insert("length".into(), json!(size));
            }
            if let Some(d) = &rec.digest {
                target.insert("digest".into(), json!(d));
            }
            target.insert("repository".into(), json!(rec.repository));
            let path = match (rec.kind, &rec.digest) {
                (Kind::Blob, Some(d)) => Some(format!("blobs/{d}")),
                (_, Some(d)) => Some(format!("manifests/{d}")),
                (Kind::Tag, None) => tag.map(|t| format!("manifests/{t}")),
                _ => None,
            };
            if let Some(p) = path {
                target.insert(
                    "url".into(),
                    json!(format!("{scheme}://{host}/v2/{}/{p}", rec.repository)),
                );
            }
            if let Some(t) = tag {
                target.insert("tag".into(), json!(t));
            }
            let id = if i == 0 {
                rec.id.clone()
            } else {
                format!("{}-{i}", rec.id)
            };
            let mut actor = Map::new();
            if !req.actor.is_empty() {
                actor.insert("name".into(), json!(req.actor));
            }
            json!({
                "id": id,
                "timestamp": rfc3339(rec.time_ms),
                "action": rec.action.as_str(),
                "target": target,
                "request": {
                    "id": req.id,
                    "addr": req.addr,
                    "host": req.host,
                    "method": req.method,
                    "useragent": req.useragent,
                },
                "actor": actor,
                "source": {"addr": source.addr, "instanceID": source.instance},
            })
        })
        .collect()
}

/// Whether `ev` (one Distribution-format event) is filtered out by `ep`'s ignore settings.
pub fn ignored(ep: &Endpoint, ev: &Value) -> bool {
    let mt = ev["target"]["mediaType"].as_str().unwrap_or("");
    let action = ev["action"].as_str().unwrap_or("");
    (!mt.is_empty()
        && (ep.ignoredmediatypes.iter().any(|m| m == mt)
            || ep.ignore.mediatypes.iter().any(|m| m == mt)))
        || ep.ignore.actions.iter().any(|a| a == action)
}

/// The body and content type to send `evs` (already filtered) to `ep`.
pub fn body(ep: &Endpoint, evs: &[Value]) -> (&'static str, Vec<u8>) {
    match ep.format {
        Format::Distribution => (
            ENVELOPE,
            serde_json::to_vec(&json!({ "events": evs })).expect("json"),
        ),
        Format::Cloudevents => {
            let ces: Vec<Value> = evs.iter().map(cloudevent).collect();
            if ces.len() == 1 {
                (CLOUDEVENT, serde_json::to_vec(&ces[0]).expect("json"))
            } else {
                (CLOUDEVENTS_BATCH, serde_json::to_vec(&ces).expect("json"))
            }
        }
    }
}

/// One Distribution event as a CloudEvent: type `org.cncf.distribution.<action>`, the
/// repository as subject, the Distribution event as data.
fn cloudevent(ev: &Value) -> Value {
    let source = format!(
        "registry://{}",
        ev["source"]["addr"].as_str().unwrap_or("registry")
    );
    json!({
        "specversion": "1.0",
        "id": ev["id"],
        "source": source,
        "type": format!("org.cncf.distribution.{}", ev["action"].as_str().unwrap_or("event")),
        "time": ev["timestamp"],
        "subject": ev["target"]["repository"],
        "datacontenttype": "application/json",
        "data": ev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::outbox::{Action, RequestInfo};

    fn rec() -> EventRecord {
        EventRecord {
            id: "000001700000000-000000-abc".into(),
            time_ms: 1_700_000_000_123,
            action: Action::Push,
            kind: Kind::Manifest,
            repository: "team/app".into(),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
            media_type: Some("application/vnd.oci.image.index.v1+json".into()),
            size: Some(42),
            tags: vec!["v1".into(), "latest".into()],
            request: Some(RequestInfo {
                host: "reg.example:5000".into(),
                method: "PUT".into(),
                ..Default::default()
            }),
            instance: "abc".into(),
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_push_with_two_tags_is_two_distribution_events_with_stable_ids() {
        let src = Source {
            addr: "host:5000".into(),
            instance: "abc".into(),
        };
        let evs = events(&rec(), &src);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0]["id"], "000001700000000-000000-abc");
        assert_eq!(evs[1]["id"], "000001700000000-000000-abc-1");
        assert_eq!(evs[0]["action"], "push");
        assert_eq!(evs[0]["target"]["tag"], "v1");
        assert_eq!(evs[1]["target"]["tag"], "latest");
        assert_eq!(evs[0]["target"]["length"], 42);
        assert_eq!(
            evs[0]["target"]["url"],
            format!(
                "http://reg.example:5000/v2/team/app/manifests/sha256:{}",
                "a".repeat(64)
            )
        );
        assert_eq!(evs[0]["source"]["addr"], "host:5000");
        assert_eq!(evs, events(&rec(), &src));
    }

    #[test]
    fn ignore_rules_and_cloudevents() {
        let mut ep: Endpoint = toml::from_str("url = \"http://x/\"").unwrap();
        let src = Source {
            addr: "h:1".into(),
            instance: "i".into(),
        };
        let evs = events(&rec(), &src);
        assert!(!ignored(&ep, &evs[0]));
        ep.ignore.mediatypes = vec!["application/vnd.oci.image.index.v1+json".into()];
        assert!(ignored(&ep, &evs[0]));
        ep.ignore.mediatypes.clear();
        ep.ignore.actions = vec!["push".into()];
        assert!(ignored(&ep, &evs[0]));
        ep.format = Format::Cloudevents;
        let (ct, b) = body(&ep, &evs[..1]);
        assert_eq!(ct, CLOUDEVENT);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "org.cncf.distribution.push");
        assert_eq!(v["id"], evs[0]["id"]);
        assert_eq!(v["data"]["target"]["tag"], "v1");
    }
}

//! The access log's lines, written straight into the log writer's buffer.
//!
//! The access log writes one line per request, so its formatting is on every request's path.
//! The general formatter of `tracing-subscriber` spends more on such a line than the request
//! itself costs (it walks the request's span for its fields, pads and styles each part, and
//! formats every value through `Debug`). An event of the target [`TARGET`] is therefore written
//! here instead: the timestamp, the level, the target, the message and the fields, in the same
//! text and JSON shapes as every other line (`key=value` and `"fields":{...}`), without the
//! span prefix (its `endpoint` and `method` are fields of the line already) and without colour.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::Event;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// The access log's target.
pub const TARGET: &str = "registry::access";

/// Writes `event` (of the target [`TARGET`]) as one line: text, or JSON with `json`; `suffix` is
/// what [`super::logging::WithFields`] adds to every line (already in the line's format).
pub(super) fn write(mut w: Writer<'_>, event: &Event<'_>, json: bool, suffix: &str) -> fmt::Result {
    let level = event.metadata().level().as_str();
    if json {
        w.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut w)?;
        write!(w, "\",\"level\":\"{level}\",\"fields\":{{")?;
    } else {
        SystemTime.format_time(&mut w)?;
        write!(w, " {level:>5} {TARGET}: ")?;
    }
    let mut fields = Fields {
        w: &mut w,
        json,
        first: true,
        res: Ok(()),
    };
    event.record(&mut fields);
    fields.res?;
    if json {
        write!(w, "}},\"target\":\"{TARGET}\"{suffix}}}")?;
    } else {
        w.write_str(suffix)?;
    }
    w.write_char('\n')
}

/// Writes the fields of an event: `message k=v ...` as text, `"message":"...","k":v,...` as
/// the members of a JSON object.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    json: bool,
    first: bool,
    res: fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a field: its separator and, but for a text line's message, its name.
    fn key(&mut self, field: &Field) -> fmt::Result {
        let first = std::mem::replace(&mut self.first, false);
        if self.json {
            if !first {
                self.w.write_char(',')?;
            }
            return write!(self.w, "\"{}\":", field.name());
        }
        if field.name() == "message" {
            return Ok(());
        }
        write!(self.w, " {}=", field.name())
    }

    fn str_value(&mut self, field: &Field, value: &str) -> fmt::Result {
        self.key(field)?;
        if self.json {
            return json_str(self.w, value);
        }
        if field.name() == "message" {
            return self.w.write_str(value);
        }
        // As `Debug` writes a string, without its cost when nothing needs escaping.
        if value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            write!(self.w, "\"{value}\"")
        } else {
            write!(self.w, "{value:?}")
        }
    }

    fn keep(&mut self, r: fmt::Result) {
        if self.res.is_ok() {
            self.res = r;
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let r = self.str_value(field, value);
        self.keep(r);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let r = self.key(field).and_then(|_| write!(self.w, "{value}"));
        self.keep(r);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let r = self.key(field).and_then(|_| write!(self.w, "{value}"));
        self.keep(r);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        let r = self.key(field).and_then(|_| write!(self.w, "{value}"));
        self.keep(r);
    }

    /// The message and `%`/`?` values: as text they are written as formatted (no quotes), in
    /// JSON as strings.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let r = self.key(field).and_then(|_| {
            if self.json {
                self.w.write_char('"')?;
                write!(JsonEscaped(&mut *self.w), "{value:?}")?;
                self.w.write_char('"')
            } else {
                write!(self.w, "{value:?}")
            }
        });
        self.keep(r);
    }
}

/// `s` as a JSON string.
fn json_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaped(&mut *w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given with JSON string escapes (the quotes around it are the caller's).
struct JsonEscaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for JsonEscaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(|c: char| c < ' ' || c == '"' || c == '\\') {
            self.0.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().expect("found at i");
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{:04x}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::logging::Captured;

    /// What `log` writes, as text or JSON lines with the field `service=registry`.
    fn captured(json: bool, log: impl FnOnce()) -> String {
        let logs = Captured::default();
        let fields = BTreeMap::from([("service".to_owned(), "registry".to_owned())]);
        {
            let _g = logs.start_with(json, &fields);
            log();
        }
        logs.text()
    }

    fn log_one() {
        let _s = tracing::info_span!("request", endpoint = "get_blob").entered();
        tracing::info!(
            target: "registry::access",
            method = %http::Method::GET,
            endpoint = "get_blob",
            repository = "team/app",
            reference = "sha256:00",
            status = 200u16,
            bytes = 12u64,
            client = %"127.0.0.1:4000",
            identity = Some("CN=a \"b\""),
            "access"
        );
    }

    #[test]
    fn text_line_has_every_field_and_no_span() {
        let text = captured(false, log_one);
        let line = text.lines().next().expect("one line");
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{line}");
        assert_eq!(
            rest,
            r#" INFO registry::access: access method=GET endpoint="get_blob" repository="team/app" reference="sha256:00" status=200 bytes=12 client=127.0.0.1:4000 identity="CN=a \"b\"" service=registry"#
        );
    }

    #[test]
    fn json_line_parses_with_typed_fields() {
        let text = captured(true, log_one);
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).expect(&text);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "registry::access");
        assert_eq!(v["service"], "registry");
        let f = &v["fields"];
        assert_eq!(f["message"], "access");
        assert_eq!(f["method"], "GET");
        assert_eq!(f["repository"], "team/app");
        assert_eq!(f["status"], 200);
        assert_eq!(f["bytes"], 12);
        assert_eq!(f["client"], "127.0.0.1:4000");
        assert_eq!(f["identity"], "CN=a \"b\"");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn json_strings_are_escaped() {
        let odd = "a\"b\\c\nd\u{1}e\u{e9}";
        let text = captured(true, || {
            tracing::info!(target: "registry::access", reference = odd, client = %odd, "access");
        });
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).expect(&text);
        assert_eq!(v["fields"]["reference"], odd, "{text}");
        assert_eq!(v["fields"]["client"], odd, "{text}");
        assert_eq!(v["service"], "registry", "{text}");
    }
}

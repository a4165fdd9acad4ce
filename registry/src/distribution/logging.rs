//! The process's log output: text or JSON lines on stderr, and on every line the static fields
//! of Distribution's `log.fields` (`service: registry`, `environment: staging`, ...), as
//! Distribution's logger adds them.
//!
//! The fields are added by [`WithFields`], a wrapper around the usual formatter: it formats the
//! line, then appends ` key=value` before the end of a text line, or `"key":"value"` members at
//! the top level of a JSON line (where Distribution's JSON formatter puts them). When fields are
//! set, text lines are written without colours (the line is formatted into a buffer first).
//! The access log's lines are written by [`super::access_line`], on the request path.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber: lines on stderr filtered by `filter`, in JSON with
/// `json` (else text), each carrying `fields`.
pub fn init(filter: EnvFilter, json: bool, fields: &BTreeMap<String, String>) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        let format = WithFields::json(Format::default().json(), fields);
        builder.json().event_format(format).init();
    } else {
        builder
            .event_format(WithFields::text(Format::default(), fields))
            .init();
    }
}

/// A line formatter that adds static fields to every line of `inner`.
#[derive(Debug, Clone)]
pub struct WithFields<F> {
    inner: F,
    /// What a line gets before its end: ` k=v ...` for text, `,"k":"v"...` for JSON.
    suffix: String,
    json: bool,
}

impl<F> WithFields<F> {
    /// Adds `fields` to the text lines of `inner`: ` key=value`, the value quoted when it holds
    /// a space, a quote or `=`.
    pub fn text(inner: F, fields: &BTreeMap<String, String>) -> WithFields<F> {
        let mut suffix = String::new();
        for (k, v) in fields {
            let plain = !v.is_empty() && !v.chars().any(|c| c.is_whitespace() || "\"=".contains(c));
            if plain {
                let _ = write!(suffix, " {k}={v}");
            } else {
                let _ = write!(suffix, " {k}={v:?}");
            }
        }
        WithFields {
            inner,
            suffix,
            json: false,
        }
    }

    /// Adds `fields` as top-level members of the JSON objects `inner` writes.
    pub fn json(inner: F, fields: &BTreeMap<String, String>) -> WithFields<F> {
        let mut suffix = String::new();
        for (k, v) in fields {
            let _ = write!(
                suffix,
                ",{}:{}",
                serde_json::Value::from(k.as_str()),
                serde_json::Value::from(v.as_str())
            );
        }
        WithFields {
            inner,
            suffix,
            json: true,
        }
    }

    /// `line` (as `inner` wrote it, ending in a newline) with the fields added.
    fn extend(&self, line: &str) -> Option<String> {
        let body = line.strip_suffix('\n').unwrap_or(line);
        if !self.json {
            return Some(format!("{body}{}\n", self.suffix));
        }
        let open = body.strip_suffix('}')?;
        let sep = if open.trim_end().ends_with('{') {
            &self.suffix[1..]
        } else {
            &self.suffix
        };
        Some(format!("{open}{sep}}}\n"))
    }
}

impl<S, N, F> FormatEvent<S, N> for WithFields<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() == super::access_line::TARGET {
            return super::access_line::write(writer, event, self.json, &self.suffix);
        }
        if self.suffix.is_empty() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match self.extend(&line) {
            Some(out) => writer.write_str(&out),
            None => writer.write_str(&line),
        }
    }
}

/// Log lines written while a [`Captured::start`] guard lives, for tests that check what the
/// registry logs.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl Captured {
    /// Captures the `info` lines of this thread, as text (or JSON), with `fields` on each line.
    pub(crate) fn start_with(
        &self,
        json: bool,
        fields: &BTreeMap<String, String>,
    ) -> tracing::subscriber::DefaultGuard {
        let w = self.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || w.clone());
        let sub: Box<dyn Subscriber + Send + Sync> = if json {
            let format = WithFields::json(Format::default().json(), fields);
            Box::new(builder.json().event_format(format).finish())
        } else {
            Box::new(
                builder
                    .event_format(WithFields::text(Format::default(), fields))
                    .finish(),
            )
        };
        tracing::subscriber::set_default(sub)
    }

    /// Captures the `info` lines of this thread as text.
    pub(crate) fn start(&self) -> tracing::subscriber::DefaultGuard {
        self.start_with(false, &BTreeMap::new())
    }

    /// Everything captured so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The access-log lines captured so far.
    pub(crate) fn access_lines(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("registry::access"))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("service".to_owned(), "registry".to_owned()),
            ("environment".to_owned(), "staging area".to_owned()),
        ])
    }

    #[test]
    fn text_lines_end_with_the_fields() {
        let logs = Captured::default();
        {
            let _g = logs.start_with(false, &fields());
            tracing::info!(target: "registry::access", status = 200, "access");
            tracing::warn!("something else");
        }
        let text = logs.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in &lines {
            assert!(
                l.ends_with(r#" environment="staging area" service=registry"#),
                "{l}"
            );
        }
        assert!(lines[0].contains("access status=200"), "{}", lines[0]);
    }

    #[test]
    fn json_lines_carry_the_fields_at_the_top_level() {
        let logs = Captured::default();
        {
            let _g = logs.start_with(true, &fields());
            tracing::info!(target: "registry::access", status = 200, "access");
            let _s = tracing::info_span!("request", endpoint = "get_blob").entered();
            tracing::info!("in a span");
        }
        let text = logs.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for v in &lines {
            assert_eq!(v["service"], "registry", "{v}");
            assert_eq!(v["environment"], "staging area", "{v}");
        }
        assert_eq!(lines[0]["fields"]["status"], 200);
        assert_eq!(lines[1]["span"]["endpoint"], "get_blob");
    }

    #[test]
    fn no_fields_no_change() {
        let f = WithFields::text((), &BTreeMap::new());
        assert!(f.suffix.is_empty());
        let j = WithFields::json((), &fields());
        assert_eq!(
            j.extend("{}\n").as_deref(),
            Some("{\"environment\":\"staging area\",\"service\":\"registry\"}\n")
        );
        assert_eq!(j.extend("not json\n"), None);
    }
}

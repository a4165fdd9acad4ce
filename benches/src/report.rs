//! The results table: one row per (scenario, metric), one column per server, and the ratio of the
//! first two servers (ours / theirs).

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One measured figure, or why there is none.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Cell {
    Num(f64),
    Na(String),
    /// Shown as is (e.g. one figure per replica).
    Text(String),
}

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) metric: String,
    pub(crate) unit: String,
    pub(crate) lower_is_better: bool,
    pub(crate) values: BTreeMap<String, Cell>,
}

/// All rows, in the order they were first written.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) rows: Vec<Row>,
}

impl Results {
    /// Records `cell` for `server` in the row (scenario, metric), creating the row if needed.
    pub(crate) fn set(
        &mut self,
        scenario: &str,
        metric: &str,
        unit: &str,
        lower_is_better: bool,
        server: &str,
        cell: Cell,
    ) {
        let i = match self
            .rows
            .iter()
            .position(|r| r.scenario == scenario && r.metric == metric)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    scenario: scenario.to_owned(),
                    metric: metric.to_owned(),
                    unit: unit.to_owned(),
                    lower_is_better,
                    values: BTreeMap::new(),
                });
                self.rows.len() - 1
            }
        };
        self.rows[i].values.insert(server.to_owned(), cell);
    }

    /// Appends the rows of another result set (e.g. start-up timings measured separately).
    pub(crate) fn merge(&mut self, other: Results) {
        for r in other.rows {
            for (server, cell) in r.values {
                self.set(
                    &r.scenario,
                    &r.metric,
                    &r.unit,
                    r.lower_is_better,
                    &server,
                    cell,
                );
            }
        }
    }

    /// Reads a result set written with [`Results::save`].
    pub(crate) fn load(path: &str) -> Result<Self> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }

    /// Writes the result set as JSON.
    pub(crate) fn save(&self, path: &str) -> Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// For each (row, server), the median of the numbers the result sets hold (the result of
    /// several rounds of the same scenarios); a text cell is taken from the last set.
    pub(crate) fn median_of(sets: Vec<Results>) -> Results {
        let mut samples: Vec<((String, String, String), Vec<f64>)> = Vec::new();
        let mut out = Results::default();
        for set in sets {
            for r in &set.rows {
                for (server, cell) in &r.values {
                    let Cell::Num(v) = cell else { continue };
                    let key = (r.scenario.clone(), r.metric.clone(), server.clone());
                    match samples.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, vs)) => vs.push(*v),
                        None => samples.push((key, vec![*v])),
                    }
                }
            }
            out.merge(set);
        }
        for ((scenario, metric, server), mut vs) in samples {
            vs.sort_by(f64::total_cmp);
            let n = vs.len();
            let m = if n % 2 == 1 {
                vs[n / 2]
            } else {
                (vs[n / 2 - 1] + vs[n / 2]) / 2.0
            };
            let r = out
                .rows
                .iter_mut()
                .find(|r| r.scenario == scenario && r.metric == metric)
                .expect("row written above");
            r.values.insert(server, Cell::Num(m));
        }
        out
    }

    /// A Markdown table with `columns` (server names and titles) in order. Without `ratios`, the
    /// ratio column divides the first server by the second and stands between the second and
    /// the others; with `ratios` (pairs of server names), every column comes first, then one
    /// ratio column per pair.
    pub(crate) fn markdown(
        &self,
        columns: &[(String, String)],
        ratios: &[(String, String)],
    ) -> String {
        let title = |name: &str| {
            columns
                .iter()
                .find(|(n, _)| n == name)
                .map_or(name, |(_, t)| t.as_str())
                .to_owned()
        };
        let legacy = [(columns[0].0.clone(), columns[1].0.clone())];
        let (ratios, before) = if ratios.is_empty() {
            (&legacy[..], 2)
        } else {
            (ratios, columns.len())
        };
        let mut out = String::new();
        out.push_str("| scenario | metric | unit | better |");
        for (_, t) in columns.iter().take(before) {
            out.push_str(&format!(" {t} |"));
        }
        for (a, b) in ratios {
            out.push_str(&format!(" ratio {}/{} |", title(a), title(b)));
        }
        for (_, t) in columns.iter().skip(before) {
            out.push_str(&format!(" {t} |"));
        }
        out.push('\n');
        out.push_str("|---|---|---|---|");
        for _ in 0..columns.len() + ratios.len() {
            out.push_str("---:|");
        }
        out.push('\n');
        for r in &self.rows {
            let better = if r.lower_is_better { "lower" } else { "higher" };
            out.push_str(&format!(
                "| {} | {} | {} | {} |",
                r.scenario, r.metric, r.unit, better
            ));
            let cell = |name: &str| match r.values.get(name) {
                Some(Cell::Num(v)) => fmt_num(*v),
                Some(Cell::Na(why)) => format!("n/a ({why})"),
                Some(Cell::Text(t)) => t.clone(),
                None => "–".to_owned(),
            };
            for (name, _) in columns.iter().take(before) {
                out.push_str(&format!(" {} |", cell(name)));
            }
            for (a, b) in ratios {
                let ratio = match (r.values.get(a), r.values.get(b)) {
                    (Some(Cell::Num(x)), Some(Cell::Num(y))) if *y != 0.0 => {
                        format!("{:.2}", x / y)
                    }
                    _ => "–".to_owned(),
                };
                out.push_str(&format!(" {ratio} |"));
            }
            for (name, _) in columns.iter().skip(before) {
                out.push_str(&format!(" {} |", cell(name)));
            }
            out.push('\n');
        }
        out
    }
}

/// About three significant figures.
pub(crate) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The `p`-th percentile (0..=100) of sorted samples.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}

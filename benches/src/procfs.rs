//! Server-side resource figures read from /proc: CPU time (utime + stime of all threads), resident
//! memory now (VmRSS) and its high-water mark (VmHWM), which can be reset between scenarios.

use anyhow::{anyhow, Context, Result};

/// CPU seconds (user + system) the process has used so far.
pub(crate) fn cpu_secs(pid: u32, clk_tck: f64) -> Result<f64> {
    cpu_secs_at(&format!("/proc/{pid}/stat"), clk_tck)
}

/// CPU seconds (user + system) from a `stat` file of /proc: a process's, or one thread's
/// (`/proc/<pid>/task/<tid>/stat`).
pub(crate) fn cpu_secs_at(path: &str, clk_tck: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(path)
        .with_context(|| format!("read {path} (is the server still running?)"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("odd {path}"))? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: u64 = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok((utime + stime) as f64 / clk_tck)
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
pub(crate) fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let n = v.trim().trim_end_matches("kB").trim();
            return Ok(n.parse()?);
        }
    }
    Err(anyhow!("no {key} in /proc/{pid}/status"))
}

/// Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs). Returns whether it worked.
pub(crate) fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Resource use of one server (all its replicas) across one scenario.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    /// CPU seconds of all replicas together.
    pub(crate) cpu_secs: f64,
    /// Peak RSS during the scenario in MiB, the largest of the replicas (since the start of the
    /// process if reset failed).
    pub(crate) peak_mib: f64,
    /// Peak RSS of each replica in MiB, in the order given.
    pub(crate) peaks_mib: Vec<f64>,
}

/// Started before a scenario, finished after it.
pub(crate) struct Probe {
    pids: Vec<u32>,
    clk_tck: f64,
    cpu0: f64,
}

impl Probe {
    pub(crate) fn start(pids: &[u32], clk_tck: f64) -> Result<Self> {
        let mut cpu0 = 0.0;
        for &pid in pids {
            reset_peak(pid);
            cpu0 += cpu_secs(pid, clk_tck)?;
        }
        Ok(Probe {
            pids: pids.to_vec(),
            clk_tck,
            cpu0,
        })
    }

    pub(crate) fn finish(self) -> Result<Usage> {
        let mut cpu = -self.cpu0;
        let mut peaks_mib = Vec::with_capacity(self.pids.len());
        for &pid in &self.pids {
            cpu += cpu_secs(pid, self.clk_tck)?;
            peaks_mib.push(status_kib(pid, "VmHWM")? as f64 / 1024.0);
        }
        Ok(Usage {
            cpu_secs: cpu,
            peak_mib: peaks_mib.iter().copied().fold(0.0, f64::max),
            peaks_mib,
        })
    }
}

/// The largest value of a `Vm*` line over several processes, in MiB.
pub(crate) fn max_mib(pids: &[u32], key: &str) -> Result<f64> {
    let mut m = 0.0f64;
    for &pid in pids {
        m = m.max(status_kib(pid, key)? as f64 / 1024.0);
    }
    Ok(m)
}

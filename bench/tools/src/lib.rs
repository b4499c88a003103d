//! Shared helpers for the bench binaries: a tiny argument parser and /proc readers.

use std::collections::HashMap;
use std::time::Duration;

/// `--key value` / `--flag` parser; repeated keys keep every value.
pub struct Args {
    map: HashMap<String, Vec<String>>,
}

impl Args {
    /// Parses `std::env::args()`. Keys in `flags` take no value.
    pub fn parse(flags: &[&str]) -> Result<Args, String> {
        Args::parse_from(std::env::args().skip(1), flags)
    }

    /// Parses the given arguments (without the program name).
    pub fn parse_from(args: impl Iterator<Item = String>, flags: &[&str]) -> Result<Args, String> {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        let mut it = args;
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if let Some((k, v)) = key.split_once('=') {
                map.entry(k.to_string()).or_default().push(v.to_string());
            } else if flags.contains(&key) {
                map.entry(key.to_string()).or_default().push(String::new());
            } else {
                let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
                map.entry(key.to_string()).or_default().push(v);
            }
        }
        Ok(Args { map })
    }

    pub fn flag(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }

    pub fn str(&self, k: &str) -> Option<&str> {
        self.map.get(k).and_then(|v| v.last()).map(String::as_str)
    }

    pub fn all(&self, k: &str) -> Vec<String> {
        self.map.get(k).cloned().unwrap_or_default()
    }

    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T, String> {
        match self.str(k) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|_| format!("--{k}: bad number {s:?}")),
        }
    }

    pub fn ms(&self, k: &str, default_ms: u64) -> Result<Duration, String> {
        let v: f64 = self.num(k, default_ms as f64)?;
        if !(0.0..=86_400_000.0).contains(&v) {
            return Err(format!("--{k}: out of range"));
        }
        Ok(Duration::from_micros((v * 1000.0) as u64))
    }
}

/// utime+stime of a whole process (all threads, including exited ones), in seconds.
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Sum of on-CPU nanoseconds of the live threads (/proc/PID/task/*/schedstat): ns precision,
/// but misses threads that already exited. Used together with `proc_cpu_secs`.
pub fn proc_sched_ns(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    for e in dir.flatten() {
        let p = e.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            sum += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(sum)
}

/// A `Vm*:` field of /proc/PID/status, in KiB.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix(field) {
            let v = v.trim_start_matches(':').trim();
            return v.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// Resets VmHWM (peak RSS) of a process to its current RSS. Needs ptrace rights (same
/// user or root); returns false where the kernel refuses.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok()
}

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Per-CPU jiffies from /proc/stat: (cpu index, busy, idle+iowait, steal).
pub fn cpu_times() -> Vec<(usize, u64, u64, u64)> {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in s.lines() {
        // "cpu0 ..", "cpu1 ..": skip the aggregate "cpu  .." line.
        let Some(rest) = line.strip_prefix("cpu") else { continue };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let mut it = rest.split_whitespace();
        let Some(Ok(idx)) = it.next().map(str::parse::<usize>) else { continue };
        let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
        if v.len() < 8 {
            continue;
        }
        // user nice system idle iowait irq softirq steal
        let idle = v[3] + v[4];
        let steal = v[7];
        let busy = v[0] + v[1] + v[2] + v[5] + v[6];
        out.push((idx, busy, idle, steal));
    }
    out
}

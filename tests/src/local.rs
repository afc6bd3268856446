//! A `meshctl local` cluster driven from the benchmarks: run its commands, read its logs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a benchmark waits for something to show in a log.
const T: Duration = Duration::from_secs(120);

/// The binaries the benchmarks' directory must hold besides them (one build profile).
pub fn bin_dir(needs: &[&str]) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the bench's directory")?.to_path_buf();
    for b in needs {
        if !dir.join(b).exists() {
            bail!(
                "{b} is not beside the bench in {}: build the workspace's binaries in one profile",
                dir.display()
            );
        }
    }
    Ok(dir)
}

pub struct Cluster {
    pub meshctl: PathBuf,
    pub name: String,
    pub state: PathBuf,
    /// With the binaries' directory first, so pods find `meshapp`.
    pub path: String,
}

impl Cluster {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.meshctl);
        c.env("PATH", &self.path).arg("local").arg(args[0]);
        c.args(["--name", &self.name, "--state"]).arg(&self.state);
        c.args(&args[1..]);
        c
    }

    pub fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = self.command(args).status()?;
        if !status.success() {
            bail!("meshctl local {args:?}: {status}");
        }
        Ok(())
    }

    pub fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command(args).output()?;
        if !out.status.success() {
            bail!(
                "meshctl local {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Waits until `needle` appears `count` times in the file; its text then.
pub fn wait_for_count(path: &Path, needle: &str, count: usize) -> anyhow::Result<String> {
    let deadline = Instant::now() + T;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return Ok(text);
        }
        if Instant::now() > deadline {
            bail!(
                "{needle:?} not {count} times in {} within {T:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The process named `comm` in network namespace `netns`.
pub fn pid_in_netns(netns: &str, comm: &str) -> anyhow::Result<u32> {
    let out = Command::new("ip").args(["netns", "pids", netns]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .with_context(|| format!("no {comm} in {netns}"))
}

/// Seconds since the epoch of a log line starting `2026-12-01T08:20:21.315496Z`.
pub fn log_time(line: &str) -> Option<f64> {
    let line = line.trim_start_matches(|c: char| !c.is_ascii_digit());
    let (date, rest) = line.split_once('T')?;
    let time = rest.split('Z').next()?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<f64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (&[y, m, day], &[h, min, s]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

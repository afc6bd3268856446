//! `bench`: what the tunnel costs. Builds the two-workload topology, then measures the same
//! workloads straight over the link (outsider -> bare host, no ztunnel) and through both
//! ztunnels (client -> server), alternating rounds, and reports medians and tunnel/direct
//! ratios as a table and as JSON. `--short` is the CI mode: one quick round, small counts.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use e2e::mesh::{Binaries, wait_for_file};
use e2e::netns::Host;
use e2e::procfs::{Rss, machine_busy_secs, median, proc_context_switches, proc_cpu_secs, rss};
use e2e::topology::{BARE_IP, Options, SERVER_IP, TwoWorkloads};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// CI mode: one round of short runs, 1,000 idle connections, brief memory settle.
    #[arg(long)]
    short: bool,
    /// Rounds per measurement (each alternates which path goes first).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per throughput/latency run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Idle tunneled connections for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Seconds to wait after the idle connections close before measuring memory again.
    #[arg(long, default_value_t = 30.0)]
    settle_secs: f64,
    /// Only these scenarios (bulk1, bulk8, pingpong, rate, connrate); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these paths (direct, tunnel); both when empty. Useful under a profiler.
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Skip the idle-connection memory measurement.
    #[arg(long)]
    no_memory: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    out: std::path::PathBuf,
}

/// One path under test.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Tunnel,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Tunnel => "tunnel",
        }
    }
}

struct Bench {
    w: TwoWorkloads,
    args: Args,
    /// (scenario, metric, path) -> samples.
    samples: BTreeMap<(String, String, &'static str), Vec<f64>>,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.short {
        args.rounds = 1;
        args.secs = 1.0;
        args.idle = 1000;
        args.settle_secs = 5.0;
    }
    let exe = std::env::current_exe()?;
    let bins = Binaries::beside(exe.with_file_name("meshapp"))?;
    eprintln!("bench: building topology");
    let w = TwoWorkloads::start("bench", bins, Options::default())?;
    let mut b = Bench {
        w,
        args,
        samples: BTreeMap::new(),
    };
    b.start_servers()?;
    b.throughput_and_latency()?;
    let memory = if b.args.no_memory {
        Value::Null
    } else {
        b.memory()?
    };
    b.report(memory)
}

impl Bench {
    fn start_servers(&mut self) -> anyhow::Result<()> {
        for host in [self.w.server.clone(), self.w.bare.clone()] {
            let tag = host.ns.rsplit('.').next().unwrap_or("x").to_string();
            self.w.serve(
                &host,
                &format!("echo-{tag}"),
                &["echo", "--listen", "0.0.0.0:8080"],
            )?;
            self.w.serve(
                &host,
                &format!("sink-{tag}"),
                &["sink", "--listen", "0.0.0.0:9000"],
            )?;
        }
        Ok(())
    }

    /// Where the generator runs and what it targets, per path.
    fn endpoints(&self, path: Path, port: u16) -> (Host, String) {
        match path {
            Path::Direct => (self.w.outsider.clone(), format!("{BARE_IP}:{port}")),
            Path::Tunnel => (self.w.client.clone(), format!("{SERVER_IP}:{port}")),
        }
    }

    fn run(&self, path: Path, port: u16, args: &[&str]) -> anyhow::Result<Value> {
        let (host, target) = self.endpoints(path, port);
        let mut full = vec![args[0], "--connect", &target];
        full.extend_from_slice(&args[1..]);
        let out = self.w.mesh.run_app(
            &host,
            &full,
            Duration::from_secs_f64(self.args.secs * 4.0 + 60.0),
        )?;
        serde_json::from_str(out.trim()).with_context(|| format!("{full:?} printed {out:?}"))
    }

    fn record(&mut self, scenario: &str, metric: &str, path: Path, v: f64) {
        self.samples
            .entry((scenario.to_string(), metric.to_string(), path.name()))
            .or_default()
            .push(v);
    }

    fn throughput_and_latency(&mut self) -> anyhow::Result<()> {
        let secs = format!("{}", self.args.secs);
        let rps = if self.args.short { "500" } else { "2000" };
        for round in 0..self.args.rounds {
            eprintln!("bench: round {}/{}", round + 1, self.args.rounds);
            let order = if round % 2 == 0 {
                [Path::Direct, Path::Tunnel]
            } else {
                [Path::Tunnel, Path::Direct]
            };
            for path in order {
                if !self.args.paths.is_empty() && !self.args.paths.iter().any(|p| p == path.name())
                {
                    continue;
                }
                self.scenarios(path, &secs, rps)?;
            }
        }
        Ok(())
    }

    fn wanted(&self, scenario: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|s| s == scenario)
    }

    fn scenarios(&mut self, path: Path, secs: &str, rps: &str) -> anyhow::Result<()> {
        let secs = secs.to_string();
        {
            if self.wanted("bulk1") {
                let cpu_before = self.ztunnels_total(proc_cpu_secs);
                let machine_before = machine_busy_secs();
                let v = self.run(path, 9000, &["bulk", "--streams", "1", "--secs", &secs])?;
                let cpu = self.ztunnels_total(proc_cpu_secs) - cpu_before;
                let machine = machine_busy_secs().zip(machine_before).map(|(a, b)| a - b);
                let bytes = v["bytes"].as_f64().unwrap_or(0.0);
                if let (Some(machine), true) = (machine, bytes > 0.0) {
                    // Everything the machine did (apps, ztunnels, kernel): what one byte costs.
                    self.record("machine CPU", "CPU s per GB", path, machine / (bytes / 1e9));
                }
                self.record(
                    "bulk 1 stream",
                    "Mbit/s",
                    path,
                    v["mbps"].as_f64().unwrap_or(0.0),
                );
                if path == Path::Tunnel && bytes > 0.0 {
                    self.record("ztunnel CPU", "CPU s per GB", path, cpu / (bytes / 1e9));
                }
            }
            if self.wanted("bulk8") {
                let v = self.run(path, 9000, &["bulk", "--streams", "8", "--secs", &secs])?;
                self.record(
                    "bulk 8 streams",
                    "Mbit/s",
                    path,
                    v["mbps"].as_f64().unwrap_or(0.0),
                );
            }
            if self.wanted("pingpong") {
                let switches_before = self.ztunnels_total(proc_context_switches);
                let v = self.run(path, 8080, &["pingpong", "--secs", &secs])?;
                let switches = self.ztunnels_total(proc_context_switches) - switches_before;
                for q in ["p50_us", "p99_us", "p999_us"] {
                    self.record("ping-pong 64 B", q, path, v[q].as_f64().unwrap_or(0.0));
                }
                let exchanges = v["count"].as_f64().unwrap_or(0.0);
                if path == Path::Tunnel && exchanges > 0.0 {
                    // Each one is a sleep and a wakeup: the floor under the added latency.
                    self.record(
                        "ztunnel wakeups",
                        "per exchange",
                        path,
                        switches / exchanges,
                    );
                }
            }
            if self.wanted("rate") {
                let v = self.run(
                    path,
                    8080,
                    &["rate", "--rps", rps, "--conns", "10", "--secs", &secs],
                )?;
                for q in ["p50_us", "p99_us", "p999_us"] {
                    self.record(
                        &format!("fixed rate {rps}/s"),
                        q,
                        path,
                        v[q].as_f64().unwrap_or(0.0),
                    );
                }
            }
            if self.wanted("connrate") {
                let v = self.run(
                    path,
                    8080,
                    &["connrate", "--concurrency", "16", "--secs", &secs],
                )?;
                self.record(
                    "new connections",
                    "per second",
                    path,
                    v["per_sec"].as_f64().unwrap_or(0.0),
                );
                if v["failed"].as_u64().unwrap_or(0) > 0 {
                    eprintln!(
                        "bench: {} connections failed on {}",
                        v["failed"],
                        path.name()
                    );
                }
            }
        }
        Ok(())
    }

    /// A per-process counter (`proc_cpu_secs`, `proc_context_switches`), summed over both
    /// ztunnels; a process it cannot read counts 0.
    fn ztunnels_total(&self, counter: fn(u32) -> Option<f64>) -> f64 {
        [self.w.zt_client.pid, self.w.zt_server.pid]
            .into_iter()
            .map(|pid| counter(pid).unwrap_or(0.0))
            .sum()
    }

    /// Opens `n` idle tunneled connections (each does one echo); returns the generator's pid
    /// once they are all open.
    fn open_idle(&mut self, n: usize) -> anyhow::Result<u32> {
        let (host, target) = self.endpoints(Path::Tunnel, 8080);
        let (out, pid) = self.w.mesh.spawn_app_pid(
            &host,
            "idle",
            &[
                "idle",
                "--connect",
                &target,
                "--count",
                &n.to_string(),
                "--hold-secs",
                "3600",
            ],
        )?;
        wait_for_file(&out, "\"open\"", Duration::from_secs(300))?;
        Ok(pid)
    }

    /// Closes them all by ending the generator.
    fn close_idle(pid: u32) {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }

    fn memory(&mut self) -> anyhow::Result<Value> {
        let pids = [
            ("client ztunnel", self.w.zt_client.pid),
            ("server ztunnel", self.w.zt_server.pid),
        ];
        let rss = || -> Vec<Rss> {
            pids.iter()
                .map(|(_, p)| rss(*p).unwrap_or_default())
                .collect()
        };
        // Warm-up: a tenth as many connections, opened and closed, so the baseline is a
        // ztunnel at rest that has already run this path (its code paged in), as in production.
        let warm = (self.args.idle / 10).max(1);
        eprintln!("bench: warm-up with {warm} idle connections");
        let pid = self.open_idle(warm)?;
        Self::close_idle(pid);
        std::thread::sleep(Duration::from_secs_f64(self.args.settle_secs));
        let base = rss();
        let n = self.args.idle;
        eprintln!("bench: opening {n} idle tunneled connections");
        let pid = self.open_idle(n)?;
        std::thread::sleep(Duration::from_secs(2));
        let open = rss();
        Self::close_idle(pid);
        eprintln!("bench: closed; waiting {} s", self.args.settle_secs);
        std::thread::sleep(Duration::from_secs_f64(self.args.settle_secs));
        let after = rss();
        let mut result = serde_json::Map::new();
        for (i, (name, _)) in pids.iter().enumerate() {
            let per_conn =
                (open[i].total().saturating_sub(base[i].total())) as f64 * 1024.0 / n as f64;
            result.insert(
                name.to_string(),
                json!({
                    "idle_baseline_kib": base[i].total(),
                    "with_idle_kib": open[i].total(),
                    "after_close_kib": after[i].total(),
                    "bytes_per_idle_connection": per_conn.round(),
                    "after_close_vs_baseline": after[i].total() as f64 / base[i].total().max(1) as f64,
                    // Heap and stacks vs mapped files (the binary's code): what grew, if anything.
                    "anon_kib": { "baseline": base[i].anon, "with_idle": open[i].anon, "after_close": after[i].anon },
                    "file_kib": { "baseline": base[i].file, "with_idle": open[i].file, "after_close": after[i].file },
                }),
            );
        }
        result.insert("idle_connections".into(), json!(n));
        result.insert("settle_secs".into(), json!(self.args.settle_secs));
        Ok(Value::Object(result))
    }

    fn report(&self, memory: Value) -> anyhow::Result<()> {
        let mut rows = Vec::new();
        println!(
            "{:<22} {:<13} {:>12} {:>12} {:>8}",
            "scenario", "metric", "direct", "tunnel", "ratio"
        );
        let mut keys: Vec<(&String, &String)> =
            self.samples.keys().map(|(s, m, _)| (s, m)).collect();
        keys.dedup();
        for (scenario, metric) in keys {
            let get = |p: &'static str| {
                self.samples
                    .get(&(scenario.clone(), metric.clone(), p))
                    .map(|v| median(v))
            };
            let (d, t) = (get("direct"), get("tunnel"));
            let ratio = match (d, t) {
                (Some(d), Some(t)) if d > 0.0 => Some(t / d),
                _ => None,
            };
            let show = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
            println!(
                "{:<22} {:<13} {:>12} {:>12} {:>8}",
                scenario,
                metric,
                show(d),
                show(t),
                ratio
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "-".into())
            );
            rows.push(json!({
                "scenario": scenario, "metric": metric, "direct": d, "tunnel": t, "ratio_tunnel_over_direct": ratio,
                "samples": { "direct": self.samples.get(&(scenario.clone(), metric.clone(), "direct")),
                             "tunnel": self.samples.get(&(scenario.clone(), metric.clone(), "tunnel")) },
            }));
        }
        if !memory.is_null() {
            println!(
                "\nmemory with {} idle tunneled connections:",
                self.args.idle
            );
        }
        for side in ["client ztunnel", "server ztunnel"]
            .into_iter()
            .filter(|_| !memory.is_null())
        {
            let m = &memory[side];
            println!(
                "  {side}: baseline {} KiB, with idle {} KiB ({} B/connection), {} s after close {} KiB ({:.2}x baseline; anonymous {} -> {} KiB, file-backed {} -> {} KiB)",
                m["idle_baseline_kib"],
                m["with_idle_kib"],
                m["bytes_per_idle_connection"],
                self.args.settle_secs,
                m["after_close_kib"],
                m["after_close_vs_baseline"].as_f64().unwrap_or(0.0),
                m["anon_kib"]["baseline"],
                m["anon_kib"]["after_close"],
                m["file_kib"]["baseline"],
                m["file_kib"]["after_close"],
            );
        }
        let doc = json!({
            "machine": { "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
            "mode": if self.args.short { "short" } else { "full" },
            "rounds": self.args.rounds,
            "secs_per_run": self.args.secs,
            "results": rows,
            "memory": &memory,
        });
        std::fs::write(&self.args.out, serde_json::to_string_pretty(&doc)?)?;
        println!("\nJSON: {}", self.args.out.display());
        if rows.is_empty() && memory.is_null() {
            bail!("no results: --only named no scenario and --no-memory was given");
        }
        Ok(())
    }
}

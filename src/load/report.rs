//! The result of a run: per phase (the initial connect, then each timeline step) the
//! convergence distribution, what the proxies received, errors, and the server's resource use;
//! printed as a table or serialized as JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// Convergence (or connect) times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; `None` without samples.
    pub fn of(mut values: Vec<f64>) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[i.clamp(1, values.len()) - 1]
        };
        Some(Percentiles {
            samples: values.len(),
            min: values[0],
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: values[values.len() - 1],
            mean: values.iter().sum::<f64>() / values.len() as f64,
        })
    }
}

/// A per-proxy quantity: its mean and maximum over the proxies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PerProxy {
    pub mean: f64,
    pub max: u64,
}

impl PerProxy {
    pub fn of(values: &[u64]) -> PerProxy {
        if values.is_empty() {
            return PerProxy::default();
        }
        PerProxy {
            mean: values.iter().sum::<u64>() as f64 / values.len() as f64,
            max: values.iter().copied().max().unwrap_or(0),
        }
    }
}

/// Convergence of the changes made in one time window of a churn step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub from_s: f64,
    pub to_s: f64,
    pub changes: usize,
    pub convergence_ms: Option<Percentiles>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Phase {
    pub name: String,
    /// Changes made in the phase (1 for a single change, 0 for connect and pauses).
    pub changes: usize,
    /// (proxy, change) pairs that had to converge, and how many did.
    pub expected: usize,
    pub converged: usize,
    /// From the change (file written, or server killed) to each proxy's ACK; for the connect
    /// phase, from a proxy's first connection attempt to holding every type.
    pub convergence_ms: Option<Percentiles>,
    /// Connect phase only: until the ADS stream was open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_open_ms: Option<Percentiles>,
    /// Until the last proxy converged (or the phase ended).
    pub duration_ms: f64,
    pub responses: u64,
    pub bytes: u64,
    pub responses_per_proxy: PerProxy,
    pub bytes_per_proxy: PerProxy,
    /// Proxies that received anything during the phase.
    pub proxies_pushed: usize,
    pub errors: u64,
    pub disconnects: u64,
    pub server_cpu_seconds: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// Why the phase did not fully converge, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_bytes: Option<u64>,
    pub cpu_model: Option<String>,
}

impl Machine {
    pub fn this() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
        let memory_bytes = meminfo.as_deref().and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .map(|kib| kib * 1024)
        });
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        });
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            cpu_model,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub xds_addr: String,
    pub mode: String,
    pub interception: String,
    pub proxies: usize,
    /// Of which stuck (not reading responses once in sync).
    pub stalled: u32,
    pub services: u32,
    pub namespaces: u32,
    pub endpoints_per_service: u32,
    pub sidecar_scoping: bool,
    /// The server command when `bowline load` ran the server.
    pub server: Option<String>,
    pub machine: Machine,
    pub phases: Vec<Phase>,
    pub total_responses: u64,
    pub total_bytes: u64,
    /// Responses with a resource that did not decode, and other protocol errors.
    pub errors: u64,
    /// NACKs sent: always zero (the load generator ACKs everything and counts errors).
    pub nacks: u64,
    pub disconnects: u64,
    pub connect_failures: u64,
    pub server_peak_rss_bytes: Option<u64>,
    pub server_cpu_seconds: Option<f64>,
    pub load_cpu_seconds: Option<f64>,
    pub load_peak_rss_bytes: Option<u64>,
    /// Distinct resource bodies decoded, and bodies received again (shared across proxies).
    pub bodies_decoded: u64,
    pub bodies_reused: u64,
    /// Every phase converged everywhere and nothing failed to decode.
    pub ok: bool,
}

fn ms(p: &Option<Percentiles>, f: impl Fn(&Percentiles) -> f64) -> String {
    p.as_ref()
        .map_or_else(|| "-".to_string(), |p| format!("{:.0}", f(p)))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}: {} proxies{} ({}, {}), {} services x {} endpoints in {} namespaces{}",
            self.scenario,
            self.proxies,
            if self.stalled > 0 {
                format!(", {} of them stalled", self.stalled)
            } else {
                String::new()
            },
            self.mode,
            self.interception,
            self.services,
            self.endpoints_per_service,
            self.namespaces,
            if self.sidecar_scoping {
                ", Sidecar-scoped"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "server {} at {}; machine: {} CPUs, {}",
            self.server.as_deref().unwrap_or("(external)"),
            self.xds_addr,
            self.machine.cpus,
            self.machine
                .memory_bytes
                .map_or("? memory".to_string(), mib)
        );
        let _ = writeln!(
            out,
            "\n{:<44} {:>11} {:>7} {:>7} {:>7} {:>7} {:>9} {:>10} {:>6} {:>8}",
            "phase (times in ms)",
            "converged",
            "p50",
            "p90",
            "p99",
            "max",
            "resp/prx",
            "KiB/prx",
            "errors",
            "srv CPU"
        );
        for p in &self.phases {
            let mut name = p.name.clone();
            if name.len() > 44 {
                name.truncate(41);
                name.push_str("...");
            }
            let c = &p.convergence_ms;
            let _ = writeln!(
                out,
                "{:<44} {:>11} {:>7} {:>7} {:>7} {:>7} {:>9.1} {:>10.1} {:>6} {:>8}",
                name,
                format!("{}/{}", p.converged, p.expected),
                ms(c, |p| p.p50),
                ms(c, |p| p.p90),
                ms(c, |p| p.p99),
                ms(c, |p| p.max),
                p.responses_per_proxy.mean,
                p.bytes_per_proxy.mean / 1024.0,
                p.errors,
                p.server_cpu_seconds
                    .map_or("-".to_string(), |s| format!("{s:.2}s")),
            );
            if let Some(problem) = &p.problem {
                let _ = writeln!(out, "    ! {problem}");
            }
            if let Some(open) = &p.stream_open_ms {
                let _ = writeln!(
                    out,
                    "    stream open: p50 {:.0} p99 {:.0} max {:.0} ms",
                    open.p50, open.p99, open.max
                );
            }
            for w in &p.windows {
                let _ = writeln!(
                    out,
                    "    {:>5.0}-{:<5.0}s {:>4} changes  p50 {:>6} p99 {:>6} max {:>6}",
                    w.from_s,
                    w.to_s,
                    w.changes,
                    ms(&w.convergence_ms, |p| p.p50),
                    ms(&w.convergence_ms, |p| p.p99),
                    ms(&w.convergence_ms, |p| p.max),
                );
            }
        }
        let _ = writeln!(
            out,
            "\nreceived {} responses, {}; errors {}, NACKs {}, disconnects {}, failed connects {}",
            self.total_responses,
            mib(self.total_bytes),
            self.errors,
            self.nacks,
            self.disconnects,
            self.connect_failures
        );
        if let Some(rss) = self.server_peak_rss_bytes {
            let _ = writeln!(
                out,
                "server: peak RSS {} ({:.0} KiB per proxy), CPU {:.1}s",
                mib(rss),
                rss as f64 / 1024.0 / self.proxies.max(1) as f64,
                self.server_cpu_seconds.unwrap_or_default()
            );
        }
        if let (Some(cpu), Some(rss)) = (self.load_cpu_seconds, self.load_peak_rss_bytes) {
            let _ = writeln!(
                out,
                "load generator: CPU {cpu:.1}s, peak RSS {}; {} distinct bodies decoded, {} shared",
                mib(rss),
                self.bodies_decoded,
                self.bodies_reused
            );
        }
        let _ = writeln!(out, "result: {}", if self.ok { "ok" } else { "NOT OK" });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max, p.min),
            (50.0, 90.0, 99.0, 100.0, 1.0)
        );
        let one = Percentiles::of(vec![7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(Percentiles::of(vec![]).is_none());
    }
}

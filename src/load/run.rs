//! The driver: writes the mesh, starts the server (optionally) and the proxies, walks the
//! timeline, and turns what the proxies recorded into a `Report`.
//!
//! Each step is a phase. A single change registers its expectation, writes its file (the
//! change time `t0` is taken just before the write), waits until every proxy it reaches has
//! met the expectation (bounded by the scenario's `timeout`), then waits for the mesh to be
//! quiet (`settle`) so the next phase starts clean. A restart kills the server and starts it
//! again; a proxy has converged when its new stream is open and in sync (delta: every type
//! answered; state of the world: whatever the server chose to resend ACKed), measured from the
//! kill. A churn makes changes on a fixed schedule without waiting in between.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::LoadError;
use super::client::{self, Check, Expectation, Proxy, Shared};
use super::decode::Decoder;
use super::mesh::{self, Change, Condition, Mesh};
use super::report::{Machine, PerProxy, Percentiles, Phase, Report, Window};
use super::scenario::{Churn, Scenario, Step, XdsMode};
use super::server::{self, Server, ServerCommand};
use super::template;

/// How a run reaches (and possibly runs) the server.
#[derive(Debug, Clone)]
pub struct Options {
    pub xds_addr: SocketAddr,
    pub config_dir: PathBuf,
    /// Run the server: started before the proxies, restarted by `restart` steps.
    pub server: Option<ServerCommand>,
    /// An external server's pid, to read its CPU and memory use.
    pub server_pid: Option<u32>,
    /// Overall bound on the run.
    pub max_duration: Duration,
    /// Progress lines on standard error.
    pub progress: bool,
    /// Run after the mesh is written (`{path}` is the config directory) and after each change
    /// (`{path}` is the file written), e.g. `kubectl apply -f {path}` for a server that reads
    /// the Kubernetes API rather than the directory. Split on whitespace; no shell.
    pub apply: Option<String>,
}

/// Longest an `apply` command may run.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the `apply` command for `path`, if there is one.
async fn apply(options: &Options, path: &std::path::Path) -> Result<(), LoadError> {
    let Some(template) = &options.apply else {
        return Ok(());
    };
    let words: Vec<String> = template
        .split_whitespace()
        .map(|w| w.replace("{path}", &path.display().to_string()))
        .collect();
    let Some((program, args)) = words.split_first() else {
        return Err(LoadError::Step("--apply-cmd is empty".into()));
    };
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(APPLY_TIMEOUT, run)
        .await
        .map_err(|_| LoadError::Step(format!("{program}: no exit within 120s")))?
        .map_err(|e| LoadError::Io {
            what: format!("running {program}"),
            source: e,
        })?;
    if !output.status.success() {
        return Err(LoadError::Step(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

const POLL: Duration = Duration::from_millis(10);

struct Run<'a> {
    scenario: &'a Scenario,
    options: &'a Options,
    shared: Arc<Shared>,
    proxies: Vec<Arc<Proxy>>,
    server: Option<Server>,
    started: Instant,
    deadline: Instant,
    next_marker: u32,
}

/// What the proxies and the server had done at one moment.
struct Counters {
    responses: Vec<u64>,
    bytes: Vec<u64>,
    errors: u64,
    disconnects: u64,
    server_cpu: Option<f64>,
}

/// Writes a scenario's whole mesh (the generated services and the expanded istiod benchmark
/// file, if any) into the mesh's directory, which is cleared first; returns the file count.
pub fn write_mesh(scenario: &Scenario, mesh: &Mesh) -> Result<usize, LoadError> {
    mesh.prepare_dir()?;
    let mut files = mesh.write_all()?;
    if let Some(b) = &scenario.mesh.istio_benchmark {
        let text = std::fs::read_to_string(&b.file).map_err(|e| LoadError::Io {
            what: format!("reading {}", b.file.display()),
            source: e,
        })?;
        let fields = BTreeMap::from([
            ("Services".to_string(), i64::from(b.services)),
            ("Instances".to_string(), i64::from(b.instances)),
        ]);
        let expanded = template::expand(&text, &fields).map_err(|e| LoadError::Template {
            file: b.file.display().to_string(),
            source: e,
        })?;
        mesh::write_atomic(&mesh.dir().join("istio-benchmark.yaml"), &expanded)?;
        files += 1;
    }
    Ok(files)
}

/// Runs a scenario to the end (or to `max_duration`).
pub async fn run(scenario: &Scenario, options: &Options) -> Result<Report, LoadError> {
    let started = Instant::now();
    let mut mesh = Mesh::new(&scenario.mesh, &options.config_dir);
    let files = write_mesh(scenario, &mesh)?;
    apply(options, &options.config_dir).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        uri: format!("http://{}", options.xds_addr),
        mode: scenario.proxies.mode,
        decoder: Decoder::default(),
        active: RwLock::new(Arc::new(Vec::new())),
        epoch: started,
        last_response: Default::default(),
        stop: stop_rx,
    });
    let stalled = scenario.proxies.stalled as usize;
    let proxies: Vec<Arc<Proxy>> = mesh::proxies(scenario)
        .into_iter()
        .enumerate()
        .map(|(i, p)| Arc::new(Proxy::new(p, i < stalled)))
        .collect();
    let mut run = Run {
        scenario,
        options,
        shared,
        proxies,
        server: None,
        started,
        deadline: started + options.max_duration,
        next_marker: 0,
    };
    run.progress(&format!(
        "wrote {files} files to {}",
        options.config_dir.display()
    ));
    if let Some(command) = &options.server {
        run.server = Some(Server::start(command.clone(), options.xds_addr).await?);
        run.progress("server accepting connections");
    }
    let mut tasks = JoinSet::new();
    let result = run.drive(&mut mesh, &mut tasks).await;
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    let phases = result?;
    Ok(run.report(phases).await)
}

impl Run<'_> {
    fn progress(&self, message: &str) {
        if self.options.progress {
            eprintln!("[{:7.1}s] {message}", self.started.elapsed().as_secs_f64());
        }
    }

    fn counters(&self) -> Counters {
        let server_cpu = match (&self.server, self.options.server_pid) {
            (Some(s), _) => Some(s.usage().cpu_seconds),
            (None, Some(pid)) => server::usage(pid).map(|u| u.cpu_seconds),
            (None, None) => None,
        };
        Counters {
            responses: self
                .proxies
                .iter()
                .map(|p| p.stats.responses.load(Ordering::Relaxed))
                .collect(),
            bytes: self
                .proxies
                .iter()
                .map(|p| p.stats.bytes.load(Ordering::Relaxed))
                .collect(),
            errors: self
                .proxies
                .iter()
                .map(|p| p.stats.errors.load(Ordering::Relaxed))
                .sum(),
            disconnects: self
                .proxies
                .iter()
                .map(|p| p.stats.disconnects.load(Ordering::Relaxed))
                .sum(),
            server_cpu,
        }
    }

    fn server_rss(&self) -> Option<u64> {
        match (&self.server, self.options.server_pid) {
            (Some(s), _) => Some(s.usage().rss_bytes),
            (None, Some(pid)) => server::usage(pid).map(|u| u.rss_bytes),
            (None, None) => None,
        }
    }

    /// Fills a phase's traffic figures from counters taken before and after it.
    fn traffic(&self, phase: &mut Phase, before: &Counters) {
        let after = self.counters();
        let responses: Vec<u64> = after
            .responses
            .iter()
            .zip(&before.responses)
            .map(|(a, b)| a - b)
            .collect();
        let bytes: Vec<u64> = after
            .bytes
            .iter()
            .zip(&before.bytes)
            .map(|(a, b)| a - b)
            .collect();
        phase.responses = responses.iter().sum();
        phase.bytes = bytes.iter().sum();
        phase.proxies_pushed = responses.iter().filter(|r| **r > 0).count();
        phase.responses_per_proxy = PerProxy::of(&responses);
        phase.bytes_per_proxy = PerProxy::of(&bytes);
        phase.errors = after.errors - before.errors;
        phase.disconnects = after.disconnects - before.disconnects;
        phase.server_cpu_seconds = match (after.server_cpu, before.server_cpu) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        };
        phase.server_rss_bytes = self.server_rss();
    }

    /// Waits until `done` holds, the step times out, or the run's deadline passes.
    async fn wait_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
        let until = (Instant::now() + timeout).min(self.deadline);
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no proxy has received anything for `settle`.
    async fn settle(&self) {
        let settle = self.scenario.settle;
        let shared = self.shared.clone();
        self.wait_until(self.scenario.timeout, || shared.quiet_for() >= settle)
            .await;
    }

    async fn drive(
        &mut self,
        mesh: &mut Mesh,
        tasks: &mut JoinSet<()>,
    ) -> Result<Vec<Phase>, LoadError> {
        let mut phases = vec![self.connect(tasks).await];
        for (i, step) in self.scenario.timeline.iter().enumerate() {
            if Instant::now() >= self.deadline {
                self.progress("run deadline reached; remaining steps skipped");
                break;
            }
            let phase = match step {
                Step::RouteEdit(r) => {
                    let change = mesh.route_edit(r.service)?;
                    self.single(change).await?
                }
                Step::EndpointAdd(c) => {
                    let change = mesh.endpoint_add(c.service, c.count)?;
                    self.single(change).await?
                }
                Step::EndpointRemove(c) => {
                    let change = mesh.endpoint_remove(c.service, c.count)?.ok_or_else(|| {
                        LoadError::Step(format!(
                            "timeline[{i}]: service {} has no endpoint to remove",
                            c.service
                        ))
                    })?;
                    self.single(change).await?
                }
                Step::NewService(n) => {
                    let change = mesh.new_service(n.namespace)?;
                    self.single(change).await?
                }
                Step::Restart(_) => self.restart().await?,
                Step::Pause(d) => {
                    let until = (Instant::now() + *d).min(self.deadline);
                    tokio::time::sleep_until(until.into()).await;
                    continue;
                }
                Step::Churn(c) => self.churn(mesh, c).await?,
            };
            self.progress(&format!(
                "{}: {}/{} converged, p99 {} ms",
                phase.name,
                phase.converged,
                phase.expected,
                phase
                    .convergence_ms
                    .as_ref()
                    .map_or("-".to_string(), |p| format!("{:.0}", p.p99))
            ));
            phases.push(phase);
            self.shared.decoder.prune();
        }
        Ok(phases)
    }

    /// Starts the proxies and waits until every one holds a response of each type.
    async fn connect(&mut self, tasks: &mut JoinSet<()>) -> Phase {
        let before = self.counters();
        let start = Instant::now();
        let rate = self.scenario.proxies.connect_rate;
        for (i, proxy) in self.proxies.iter().enumerate() {
            if let Some(rate) = rate {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(at.min(self.deadline).into()).await;
            }
            tasks.spawn(client::run(self.shared.clone(), proxy.clone()));
        }
        self.progress(&format!("{} proxies started", self.proxies.len()));
        let proxies = self.proxies.clone();
        // Stragglers that make it during the settle wait still count.
        self.wait_until(self.scenario.timeout, || {
            proxies.iter().all(|p| p.status().synced_at.is_some())
        })
        .await;
        let duration = start.elapsed();
        self.settle().await;
        let statuses: Vec<_> = self.proxies.iter().map(|p| p.status()).collect();
        let since = |s: &client::Status, at: Option<Instant>| {
            Some(at?.duration_since(s.started_at?).as_secs_f64() * 1000.0)
        };
        let synced: Vec<f64> = statuses
            .iter()
            .filter_map(|s| since(s, s.synced_at))
            .collect();
        let opened: Vec<f64> = statuses
            .iter()
            .filter_map(|s| since(s, s.connected_at))
            .collect();
        let mut phase = Phase {
            name: format!("connect {} proxies", self.proxies.len()),
            expected: self.proxies.len(),
            converged: synced.len(),
            convergence_ms: Percentiles::of(synced),
            stream_open_ms: Percentiles::of(opened),
            duration_ms: duration.as_secs_f64() * 1000.0,
            ..Default::default()
        };
        if phase.converged < phase.expected {
            phase.problem = Some(self.stragglers("not in sync", |_, s| s.synced_at.is_none()));
        }
        self.traffic(&mut phase, &before);
        self.progress(&format!(
            "connect: {}/{} in sync after {:.0} ms",
            phase.converged, phase.expected, phase.duration_ms
        ));
        phase
    }

    /// A summary of the proxies matching `stuck`: how many, and the first one's last error.
    fn stragglers(&self, what: &str, stuck: impl Fn(&Proxy, &client::Status) -> bool) -> String {
        let mut count = 0;
        let mut example = None;
        for p in &self.proxies {
            let s = p.status();
            if stuck(p, &s) {
                count += 1;
                if example.is_none() {
                    example = Some(format!(
                        "{} (last error: {})",
                        p.identity.node_id,
                        s.last_error.as_deref().unwrap_or("none")
                    ));
                }
            }
        }
        format!(
            "{count} proxies {what}; e.g. {}",
            example.unwrap_or_default()
        )
    }

    /// Registers the expectation of a change; its time starts now.
    fn expect(&mut self, change: &Change) -> (Arc<Expectation>, Vec<u32>) {
        let mut markers = Vec::new();
        let checks = change
            .conditions
            .iter()
            .map(|c| match c {
                Condition::RouteContains(text) => {
                    self.next_marker += 1;
                    self.shared.decoder.add_marker(self.next_marker, text);
                    markers.push(self.next_marker);
                    Check::RouteMarker(self.next_marker)
                }
                Condition::Cluster(name) => Check::Cluster(name.clone()),
                Condition::Endpoint {
                    cluster,
                    address,
                    present,
                } => Check::Endpoint {
                    cluster: cluster.clone(),
                    address: address.clone(),
                    present: *present,
                },
            })
            .collect();
        let expectation = Arc::new(Expectation::new(
            change.description.clone(),
            Instant::now(),
            change.applies.clone(),
            checks,
            self.proxies.len(),
        ));
        let mut active = self
            .shared
            .active
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut list = (**active).clone();
        list.push(expectation.clone());
        *active = Arc::new(list);
        (expectation, markers)
    }

    /// Drops expectations from the active list (all of them, or those every proxy met).
    fn retire(&self, all: bool) {
        let mut active = self
            .shared
            .active
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let list: Vec<Arc<Expectation>> = active
            .iter()
            .filter(|e| !all && (e.met_count.load(Ordering::Relaxed) as usize) < self.reached(e))
            .cloned()
            .collect();
        *active = Arc::new(list);
    }

    /// How many proxies an expectation reaches.
    fn reached(&self, e: &Expectation) -> usize {
        self.proxies
            .iter()
            .filter(|p| !p.stalled && e.applies.includes(&p.identity.namespace))
            .count()
    }

    /// Convergence samples (ms) of an expectation.
    fn samples(&self, e: &Expectation) -> Vec<f64> {
        e.met
            .iter()
            .filter_map(|m| m.get())
            .map(|at| at.saturating_duration_since(e.t0).as_secs_f64() * 1000.0)
            .collect()
    }

    async fn single(&mut self, change: Change) -> Result<Phase, LoadError> {
        let before = self.counters();
        let (expectation, markers) = self.expect(&change);
        mesh::write_atomic(&change.path, &change.content)?;
        apply(self.options, &change.path).await?;
        let expected = self.reached(&expectation);
        let e = expectation.clone();
        let all = self
            .wait_until(self.scenario.timeout, || {
                e.met_count.load(Ordering::Relaxed) as usize >= expected
            })
            .await;
        let duration = expectation.t0.elapsed();
        self.settle().await;
        self.retire(true);
        for m in markers {
            self.shared.decoder.remove_marker(m);
        }
        let samples = self.samples(&expectation);
        let mut phase = Phase {
            name: change.description.clone(),
            changes: 1,
            expected,
            converged: samples.len(),
            duration_ms: samples.iter().copied().fold(0.0, f64::max).max(if all {
                0.0
            } else {
                duration.as_secs_f64() * 1000.0
            }),
            convergence_ms: Percentiles::of(samples),
            ..Default::default()
        };
        if phase.converged < phase.expected {
            let e = &expectation;
            phase.problem = Some(self.stragglers("did not converge", |p, _| {
                e.applies.includes(&p.identity.namespace)
                    && e.met
                        .get(p.identity.index)
                        .is_some_and(|m| m.get().is_none())
            }));
        }
        self.traffic(&mut phase, &before);
        Ok(phase)
    }

    async fn restart(&mut self) -> Result<Phase, LoadError> {
        let before = self.counters();
        let t0 = Instant::now();
        let Some(server) = self.server.as_mut() else {
            return Err(LoadError::Step(
                "restart needs a server run by bowline load (--spawn or --server-cmd)".into(),
            ));
        };
        server.restart().await?;
        let ready = t0.elapsed();
        self.progress(&format!(
            "server restarted; accepting after {:.0} ms",
            ready.as_secs_f64() * 1000.0
        ));
        let delta = self.scenario.proxies.mode == XdsMode::Delta;
        let reconnected = |s: &client::Status| {
            s.stream_opened_at.is_some_and(|at| at > t0) && (!delta || s.stream_in_sync)
        };
        let proxies = self.proxies.clone();
        // A stuck proxy does not notice the restart.
        self.wait_until(self.scenario.timeout, || {
            proxies
                .iter()
                .all(|p| p.stalled || reconnected(&p.status()))
        })
        .await;
        self.settle().await;
        let samples: Vec<f64> = self
            .proxies
            .iter()
            .map(|p| p.status())
            .filter(|s| reconnected(s))
            .filter_map(|s| {
                let opened = s.stream_opened_at?;
                let at = s.stream_last_ack.map_or(opened, |a| a.max(opened));
                Some(at.duration_since(t0).as_secs_f64() * 1000.0)
            })
            .collect();
        let mut phase = Phase {
            name: format!(
                "server restart (accepting after {:.0} ms)",
                ready.as_secs_f64() * 1000.0
            ),
            changes: 1,
            expected: self.proxies.iter().filter(|p| !p.stalled).count(),
            converged: samples.len(),
            duration_ms: samples.iter().copied().fold(0.0, f64::max),
            convergence_ms: Percentiles::of(samples),
            ..Default::default()
        };
        if phase.converged < phase.expected {
            phase.problem =
                Some(self.stragglers("not back in sync", |p, s| !p.stalled && !reconnected(s)));
        }
        self.traffic(&mut phase, &before);
        Ok(phase)
    }

    async fn churn(&mut self, mesh: &mut Mesh, churn: &Churn) -> Result<Phase, LoadError> {
        let before = self.counters();
        let services = mesh.generated();
        // (offset, route edit?, sequence number)
        let mut schedule: Vec<(Duration, bool, u64)> = (0..churn.endpoint_changes())
            .map(|k| {
                (
                    Duration::from_secs_f64(k as f64 / churn.endpoint_changes_per_second),
                    false,
                    k,
                )
            })
            .collect();
        if let Some(every) = churn.route_edit_every {
            let mut m = 1u64;
            while every.saturating_mul(m as u32) < churn.duration
                && m < super::scenario::MAX_CHURN_CHANGES
            {
                schedule.push((every.saturating_mul(m as u32), true, m));
                m += 1;
            }
        }
        schedule.sort_by_key(|(at, route, k)| (*at, *route, *k));
        let start = Instant::now();
        let mut made: Vec<(Arc<Expectation>, Vec<u32>, f64)> = Vec::new();
        let mut last_retire = Instant::now();
        for (at, route, k) in schedule {
            if Instant::now() >= self.deadline {
                break;
            }
            tokio::time::sleep_until((start + at).into()).await;
            // Spread the changes over the services (a stride coprime with most sizes).
            let change = if route {
                mesh.route_edit(((k * 104_729) % u64::from(services)) as u32)?
            } else {
                let s = ((k * 7_919) % u64::from(services)) as u32;
                let removal = if k % 2 == 1 || !mesh.has_free_slot(s) {
                    mesh.endpoint_remove(s, 1)?
                } else {
                    None
                };
                match removal {
                    Some(c) => c,
                    None => mesh.endpoint_add(s, 1)?,
                }
            };
            let (e, markers) = self.expect(&change);
            mesh::write_atomic(&change.path, &change.content)?;
            apply(self.options, &change.path).await?;
            made.push((e, markers, start.elapsed().as_secs_f64()));
            if last_retire.elapsed() > Duration::from_millis(200) {
                self.retire(false);
                last_retire = Instant::now();
            }
        }
        self.progress(&format!("churn: {} changes made; waiting", made.len()));
        let expected: usize = made.iter().map(|(e, _, _)| self.reached(e)).sum();
        {
            let made = made.clone();
            let targets: Vec<usize> = made.iter().map(|(e, _, _)| self.reached(e)).collect();
            self.wait_until(self.scenario.timeout, || {
                made.iter()
                    .zip(&targets)
                    .all(|((e, _, _), t)| e.met_count.load(Ordering::Relaxed) as usize >= *t)
            })
            .await;
        }
        self.settle().await;
        self.retire(true);
        let mut samples = Vec::new();
        let window = (churn.duration.as_secs_f64() / 6.0).max(1.0);
        let mut windows: Vec<(Vec<f64>, usize)> = Vec::new();
        let mut end = 0.0f64;
        for (e, markers, offset) in &made {
            for m in markers {
                self.shared.decoder.remove_marker(*m);
            }
            let s = self.samples(e);
            end = end.max(offset + s.iter().copied().fold(0.0, f64::max) / 1000.0);
            let w = (offset / window) as usize;
            if windows.len() <= w {
                windows.resize_with(w + 1, Default::default);
            }
            windows[w].0.extend(s.iter().copied());
            windows[w].1 += 1;
            samples.extend(s);
        }
        let mut phase = Phase {
            name: format!(
                "churn {:.0}s: {}/s endpoint changes{}",
                churn.duration.as_secs_f64(),
                churn.endpoint_changes_per_second,
                churn.route_edit_every.map_or(String::new(), |d| format!(
                    ", route edit every {}s",
                    d.as_secs_f64()
                ))
            ),
            changes: made.len(),
            expected,
            converged: samples.len(),
            convergence_ms: Percentiles::of(samples),
            duration_ms: end * 1000.0,
            windows: windows
                .into_iter()
                .enumerate()
                .map(|(i, (s, n))| Window {
                    from_s: i as f64 * window,
                    to_s: (i + 1) as f64 * window,
                    changes: n,
                    convergence_ms: Percentiles::of(s),
                })
                .collect(),
            ..Default::default()
        };
        if phase.converged < phase.expected {
            phase.problem = Some(format!(
                "{} of {expected} (change, proxy) pairs did not converge",
                expected - phase.converged
            ));
        }
        self.traffic(&mut phase, &before);
        Ok(phase)
    }

    async fn report(&mut self, phases: Vec<Phase>) -> Report {
        let total = |f: fn(&client::Stats) -> u64| self.proxies.iter().map(|p| f(&p.stats)).sum();
        let (server_peak_rss_bytes, server_cpu_seconds) =
            match (&self.server, self.options.server_pid) {
                (Some(s), _) => {
                    let u = s.usage();
                    (Some(u.peak_rss_bytes), Some(u.cpu_seconds))
                }
                (None, Some(pid)) => {
                    let u = server::usage(pid);
                    (u.map(|u| u.peak_rss_bytes), u.map(|u| u.cpu_seconds))
                }
                (None, None) => (None, None),
            };
        if let Some(s) = self.server.as_mut()
            && let Err(e) = s.kill().await
        {
            self.progress(&format!("stopping the server: {e}"));
        }
        let me = server::usage(std::process::id());
        let errors: u64 = total(|s| s.errors.load(Ordering::Relaxed));
        let ok = errors == 0
            && phases.len()
                == self
                    .scenario
                    .timeline
                    .iter()
                    .filter(|s| !matches!(s, Step::Pause(_)))
                    .count()
                    + 1
            && phases
                .iter()
                .all(|p| p.converged == p.expected && p.problem.is_none());
        let s = self.scenario;
        Report {
            scenario: s.name.clone(),
            xds_addr: self.options.xds_addr.to_string(),
            mode: match s.proxies.mode {
                XdsMode::Sotw => "sotw".into(),
                XdsMode::Delta => "delta".into(),
            },
            interception: s.proxies.interception.as_str().into(),
            proxies: self.proxies.len(),
            stalled: s.proxies.stalled,
            services: s.mesh.services,
            namespaces: s.mesh.namespaces,
            endpoints_per_service: s.mesh.endpoints,
            sidecar_scoping: s.mesh.sidecar_scoping,
            server: self.options.server.as_ref().map(|c| {
                std::iter::once(c.program.display().to_string())
                    .chain(c.args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            machine: Machine::this(),
            phases,
            total_responses: total(|s| s.responses.load(Ordering::Relaxed)),
            total_bytes: total(|s| s.bytes.load(Ordering::Relaxed)),
            errors,
            nacks: 0,
            disconnects: total(|s| s.disconnects.load(Ordering::Relaxed)),
            connect_failures: total(|s| s.connect_failures.load(Ordering::Relaxed)),
            server_peak_rss_bytes,
            server_cpu_seconds,
            load_cpu_seconds: me.map(|u| u.cpu_seconds),
            load_peak_rss_bytes: me.map(|u| u.peak_rss_bytes),
            bodies_decoded: self.shared.decoder.decoded.load(Ordering::Relaxed),
            bodies_reused: self.shared.decoder.reused.load(Ordering::Relaxed),
            ok,
        }
    }
}

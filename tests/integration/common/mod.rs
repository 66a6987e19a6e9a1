//! Test harness for integration tests: real bowline and real Envoy processes, test backends, an
//! HTTP client, and helpers that read bowline's and Envoy's admin APIs.
//!
//! Every test takes its own loopback /24 from [`Net::new`] (127.77.N.0/24; Linux routes all of
//! 127.0.0.0/8 to `lo`), so tests run in parallel, even from concurrent test processes, without
//! port clashes. All traffic stays on
//! loopback. Processes are killed when their handle is dropped; when a test panics, the tail of
//! every process log is printed (set `BOWLINE_TEST_LOGS=1` to always print it) and the temporary
//! directory is kept.
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod cases;
pub mod fixtures;
pub mod http;
pub mod kube;
pub mod netns;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

pub use backend::{Backend, spawn_backend, spawn_tcp_echo};
pub use http::{HttpClient, Response, Tally, tally};

/// The path of the bowline binary under test.
pub const BOWLINE: &str = env!("CARGO_BIN_EXE_bowline");

/// True when running in CI (`CI=true`): missing prerequisites fail instead of skipping.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The Envoy binary: `$ENVOY_BIN`, else `envoy` on `PATH`. When there is none, panics under
/// `CI=true`, otherwise prints "skipping: envoy not found" and returns `None`; use as
/// `let Some(envoy) = common::envoy_bin() else { return };`.
pub fn envoy_bin() -> Option<PathBuf> {
    let from_env = std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty());
    let found = match &from_env {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("envoy"))
                .find(|p| p.is_file())
        }),
    };
    if found.is_none() {
        let why = match &from_env {
            Some(p) => format!("ENVOY_BIN={} is not a file", p.to_string_lossy()),
            None => "no ENVOY_BIN and no envoy on PATH (run hack/install-envoy.sh)".to_string(),
        };
        if ci() {
            panic!("envoy not found: {why}; CI=true makes this fatal");
        }
        eprintln!("skipping: envoy not found ({why})");
    }
    found
}

/// The directory of Istio's own clients, `istioctl` and `pilot-agent`: `$ISTIO_TOOLS_BIN` (set by
/// `make test`, which builds them with hack/istio-tools.sh). Without it, panics under `CI=true`,
/// otherwise prints why and returns `None`.
pub fn istio_tools_bin() -> Option<PathBuf> {
    let bin = std::env::var_os("ISTIO_TOOLS_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    match bin {
        Some(b) if b.join("istioctl").is_file() && b.join("pilot-agent").is_file() => Some(b),
        other => {
            let why = match other {
                Some(b) => format!(
                    "no istioctl and pilot-agent in ISTIO_TOOLS_BIN={}",
                    b.display()
                ),
                None => "ISTIO_TOOLS_BIN is not set (make test builds istioctl and pilot-agent \
                         with hack/istio-tools.sh and sets it)"
                    .to_string(),
            };
            if ci() {
                panic!("{why}; CI=true makes this fatal");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// The Istio corpus (`$ISTIO_CORPUS`, default `../shared/istio` beside the crate). When it is
/// missing, panics under `CI=true`, otherwise prints a skip line and returns `None`.
pub fn istio_corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("ISTIO_CORPUS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/istio"));
    if dir.is_dir() {
        return Some(dir);
    }
    if ci() {
        panic!(
            "istio corpus not found at {}; CI=true makes this fatal",
            dir.display()
        );
    }
    eprintln!("skipping: istio corpus not found at {}", dir.display());
    None
}

// ---------------------------------------------------------------------------------------------
// Addresses

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// Port of the lock socket that marks a /24 as taken (see [`Net::new`]).
const NET_LOCK_PORT: u16 = 47_999;

/// A loopback /24 owned by one test: 127.77.N.0/24.
///
/// N comes from a process-wide counter; the /24 is claimed by binding a lock socket on
/// 127.77.N.254:47999 for as long as the `Net` (or a clone) lives, so concurrent test processes
/// (two `cargo test` runs, nextest) never share one: a taken N is skipped.
#[derive(Debug, Clone)]
pub struct Net {
    third: u8,
    _lock: Arc<TcpListener>,
}

impl Net {
    pub fn new() -> Net {
        for _ in 0..250 {
            let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
            let third = (n % 250 + 1) as u8;
            let lock = SocketAddr::from(([127, 77, third, 254], NET_LOCK_PORT));
            if let Ok(l) = TcpListener::bind(lock) {
                return Net {
                    third,
                    _lock: Arc::new(l),
                };
            }
        }
        panic!("no free loopback /24 under 127.77.0.0/16");
    }

    /// 127.77.N.host
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 77, self.third, host))
    }

    pub fn addr(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(host), port)
    }
}

impl Default for Net {
    fn default() -> Net {
        Net::new()
    }
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port free on 127.0.0.1 right now and never handed out before by this process.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no free port found");
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `cond` every 50 ms until it returns true (→ true) or `timeout` passes (→ false).
pub async fn wait_until(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes (→ the last `Err` message).
pub async fn poll<T>(
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("still not done after {timeout:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary directories and processes

static NEXT_TMP: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under the system temp dir, removed on drop unless the test panicked.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("bowline-{prefix}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn always_print_logs() -> bool {
    std::env::var("BOWLINE_TEST_LOGS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The last `max_bytes` of a file, from a line start.
pub fn tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    let _ = f.seek(SeekFrom::Start(start));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        match text.split_once('\n') {
            Some((_, rest)) => format!("[...]\n{rest}"),
            None => text,
        }
    } else {
        text
    }
}

/// A child process with stdout and stderr appended to a log file; killed when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    print_log: bool,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            print_log: true,
        }
    }

    /// Do not print the log tail on drop (the owner prints it).
    pub fn quiet(mut self) -> Proc {
        self.print_log = false;
        self
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `Err` with the exit status and log tail if the process has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Err(format!("{} was killed", self.name));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); log tail:\n{}",
                self.name,
                tail(&self.log, 4000)
            )),
            Err(e) => Err(format!("{}: wait: {e}", self.name)),
        }
    }

    /// SIGTERM, then the exit status once it exits within `timeout` (`None`: still running).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if self.print_log && (std::thread::panicking() || always_print_logs()) {
            eprintln!(
                "----- {} log ({}), tail -----\n{}\n----- end of {} log -----",
                self.name,
                self.log.display(),
                tail(&self.log, 12_000),
                self.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// bowline

/// A bowline server (`bowline serve`) on a config directory of its own.
pub struct Bowline {
    dir: TempDir,
    pub config_dir: PathBuf,
    staging: PathBuf,
    pub xds_addr: SocketAddr,
    /// The TLS xDS port (callers authenticate).
    pub xds_tls_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `--ca-dir`: bowline's root and token key (created on first start).
    pub ca_dir: PathBuf,
    /// More `bowline serve` arguments.
    pub extra_args: Vec<String>,
    /// Pass `--ca-dir` (true unless a test wants the CA from elsewhere).
    pub pass_ca_dir: bool,
    log: PathBuf,
    proc: Option<Proc>,
    mesh_config: Option<PathBuf>,
}

impl Bowline {
    /// Prepares (does not start) a bowline serving xDS on `<net>.1:15010`, TLS xDS on
    /// `<net>.1:15012` and admin on `<net>.1:15014`, with an empty config directory and a CA
    /// directory of its own.
    pub fn new(net: &Net) -> Bowline {
        let dir = TempDir::new("bowline");
        let config_dir = dir.path().join("config");
        let staging = dir.path().join("staging");
        fs::create_dir_all(&config_dir).expect("create config dir");
        fs::create_dir_all(&staging).expect("create staging dir");
        let log = dir.path().join("bowline.log");
        Bowline {
            config_dir,
            staging,
            xds_addr: net.addr(1, 15010),
            xds_tls_addr: net.addr(1, 15012),
            admin_addr: net.addr(1, 15014),
            ca_dir: dir.path().join("ca"),
            extra_args: Vec::new(),
            pass_ca_dir: true,
            log,
            proc: None,
            mesh_config: None,
            dir,
        }
    }

    /// Gives the next [`Bowline::start`] this mesh config (`--mesh-config`).
    pub fn set_mesh_config(&mut self, yaml: &str) {
        let path = self.dir.path().join("mesh-config.yaml");
        fs::write(&path, yaml).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.mesh_config = Some(path);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `config_dir/name` atomically (write elsewhere, then rename into the directory).
    pub fn write(&self, name: &str, yaml: &str) {
        let staged = self.staging.join(name.replace('/', "_"));
        fs::write(&staged, yaml).unwrap_or_else(|e| panic!("write {}: {e}", staged.display()));
        let target = self.config_dir.join(name);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).expect("create config subdir");
        }
        fs::rename(&staged, &target)
            .unwrap_or_else(|e| panic!("rename to {}: {e}", target.display()));
    }

    /// Rewrites `config_dir/name` in place (truncate and write), as an editor without atomic
    /// saves would.
    pub fn write_in_place(&self, name: &str, yaml: &str) {
        let target = self.config_dir.join(name);
        fs::write(&target, yaml).unwrap_or_else(|e| panic!("write {}: {e}", target.display()));
    }

    pub fn remove(&self, name: &str) {
        let target = self.config_dir.join(name);
        match fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove {}: {e}", target.display()),
        }
    }

    /// Removes every file of the config directory.
    pub fn clear(&self) {
        for entry in fs::read_dir(&self.config_dir)
            .expect("read config dir")
            .flatten()
        {
            let p = entry.path();
            if p.is_dir() {
                let _ = fs::remove_dir_all(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }

    /// Starts `bowline serve` and waits until `/ready` answers 200.
    pub async fn start(&mut self) {
        assert!(self.proc.is_none(), "bowline already running");
        let mut cmd = Command::new(BOWLINE);
        cmd.arg("serve")
            .arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--xds-addr")
            .arg(self.xds_addr.to_string())
            .arg("--admin-addr")
            .arg(self.admin_addr.to_string())
            .arg("--xds-tls-addr")
            .arg(self.xds_tls_addr.to_string())
            .args(&self.extra_args)
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path());
        if let Some(mesh) = &self.mesh_config {
            cmd.arg("--mesh-config").arg(mesh);
        }
        if self.pass_ca_dir {
            cmd.arg("--ca-dir").arg(&self.ca_dir);
        }
        self.proc = Some(Proc::spawn("bowline", &mut cmd, &self.log).quiet());
        let admin = self.admin_addr;
        let ready = poll(Duration::from_secs(30), async || {
            if let Some(p) = self.proc.as_mut() {
                // An exited bowline will not become ready: fail at once with its log.
                if let Err(e) = p.check_running() {
                    return Ok(Err(e));
                }
            }
            match admin_get(admin, "/ready").await {
                Ok(r) if r.status == 200 => Ok(Ok(())),
                Ok(r) => Err(format!("/ready answered {}: {}", r.status, r.text())),
                Err(e) => Err(format!("/ready: {e}")),
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => panic!("bowline did not become ready: {e}"),
        }
    }

    /// SIGTERMs the server; its exit status once it exits within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let status = self.proc.as_mut()?.terminate(timeout);
        if status.is_some() {
            self.proc = None;
        }
        status
    }

    /// SIGKILLs the server (its addresses stay reserved for [`Bowline::start`]).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.start().await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(|p| p.pid())
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 8000)
    }

    /// A bowline token (`bowline token`, 1 h) for `namespace/service_account`, signed with
    /// this bowline's CA.
    pub fn token(&self, namespace: &str, service_account: &str) -> String {
        let out = Command::new(BOWLINE)
            .args(["token", "--namespace", namespace])
            .args(["--service-account", service_account, "--ttl", "1h"])
            .arg("--ca-dir")
            .arg(&self.ca_dir)
            .output()
            .expect("bowline token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("token is text")
            .trim()
            .to_string()
    }

    pub async fn syncz(&self) -> Result<Vec<ProxySync>, String> {
        syncz(self.admin_addr).await
    }

    pub async fn wait_synced(
        &self,
        proxy_id: &str,
        timeout: Duration,
    ) -> Result<ProxySync, String> {
        wait_synced(self.admin_addr, proxy_id, timeout).await
    }

    /// `/debug/diagnosticz` as JSON (loaded resources, diagnostics, translation problems).
    pub async fn diagnosticz(&self) -> Result<Value, String> {
        admin_json(self.admin_addr, "/debug/diagnosticz").await
    }

    /// `/debug/config_dump?proxyID=<pod>.<ns>` as JSON.
    pub async fn config_dump(&self, proxy_id: &str) -> Result<Value, String> {
        admin_json(
            self.admin_addr,
            &format!("/debug/config_dump?proxyID={proxy_id}"),
        )
        .await
    }
}

impl Drop for Bowline {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        if std::thread::panicking() || always_print_logs() {
            eprintln!(
                "----- bowline log ({}), tail -----\n{}\n----- end of bowline log -----",
                self.log.display(),
                tail(&self.log, 12_000)
            );
        }
    }
}

/// GET on an admin HTTP server (bowline's or Envoy's).
pub async fn admin_get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    HttpClient::new(addr)
        .with_timeout(Duration::from_secs(10))
        .get(&addr.to_string(), path, &[("connection", "close")])
        .await
}

pub async fn admin_json(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let r = admin_get(addr, path)
        .await
        .map_err(|e| format!("GET {addr}{path}: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "GET {addr}{path}: status {}: {}",
            r.status,
            r.text()
        ));
    }
    serde_json::from_slice(&r.body).map_err(|e| format!("GET {addr}{path}: bad JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// /debug/syncz

/// One connected proxy as `/debug/syncz` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct ProxySync {
    pub proxy: String,
    pub node_id: String,
    #[serde(default)]
    pub connection: Option<u64>,
    pub delta: bool,
    #[serde(default)]
    pub types: BTreeMap<String, TypeSync>,
    /// Whether the proxy holds a workload certificate.
    #[serde(default)]
    pub workload_certificate: Option<bool>,
    /// What translation reported for the proxy's configuration.
    #[serde(default)]
    pub diagnostics: Vec<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TypeSync {
    pub sent: Option<String>,
    pub acked: Option<String>,
    pub nack: Option<Nack>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Nack {
    pub message: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub version: String,
}

impl ProxySync {
    /// The NACKs currently recorded, as `(type, nack)`.
    pub fn nacks(&self) -> Vec<(&str, &Nack)> {
        self.types
            .iter()
            .filter_map(|(t, s)| s.nack.as_ref().map(|n| (t.as_str(), n)))
            .collect()
    }

    /// Something was sent, every subscribed type has `sent == acked`, and nothing is NACKed.
    pub fn synced(&self) -> bool {
        !self.types.is_empty()
            && self.types.values().any(|s| s.sent.is_some())
            && self
                .types
                .values()
                .all(|s| s.nack.is_none() && s.sent == s.acked)
    }
}

/// Fetches bowline's `/debug/syncz`.
pub async fn syncz(admin: SocketAddr) -> Result<Vec<ProxySync>, String> {
    let v = admin_json(admin, "/debug/syncz").await?;
    serde_json::from_value(v.clone())
        .map_err(|e| format!("unexpected /debug/syncz shape: {e}: {v}"))
}

/// The newest connection of `proxy_id` (`<pod>.<ns>`) in a syncz answer.
pub fn find_proxy<'a>(all: &'a [ProxySync], proxy_id: &str) -> Option<&'a ProxySync> {
    all.iter()
        .filter(|p| p.proxy == proxy_id)
        .max_by_key(|p| p.connection.unwrap_or(0))
}

/// Waits until `proxy_id` is connected and synced ([`ProxySync::synced`]). Fails at once when a
/// NACK is recorded for it, and after `timeout` otherwise; the error names what was seen.
pub async fn wait_synced(
    admin: SocketAddr,
    proxy_id: &str,
    timeout: Duration,
) -> Result<ProxySync, String> {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match syncz(admin).await {
            Ok(all) => match find_proxy(&all, proxy_id) {
                Some(p) => {
                    if let Some((t, n)) = p.nacks().first() {
                        return Err(format!(
                            "{proxy_id} NACKed {t} version {}: {} (resources {:?})",
                            n.version, n.message, n.resources
                        ));
                    }
                    if p.synced() {
                        return Ok(p.clone());
                    }
                    last = format!("not synced: {:?}", p.types);
                }
                None => {
                    let ids: Vec<&str> = all.iter().map(|p| p.proxy.as_str()).collect();
                    last = format!("{proxy_id} not connected (connected: {ids:?})");
                }
            },
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(format!("{proxy_id} not synced after {timeout:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy

/// Who an Envoy sidecar claims to be, turned into `bowline bootstrap` flags.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// `sidecar` or `router` (`bowline bootstrap --type`).
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub ip: IpAddr,
    pub labels: Vec<(String, String)>,
    pub service_account: String,
    pub delta: bool,
    pub interception: String,
    /// Run Envoy with this group id (the capture rules exclude the proxy's group).
    pub gid: Option<u32>,
    /// The Envoy node's locality, `region/zone/subzone` (`bowline bootstrap --locality`).
    pub locality: Option<String>,
    /// Prove the identity with a bowline token over the TLS port.
    pub token: bool,
    /// Connect here instead of the bowline's own address (a TLS address when `token`).
    pub xds_addr: Option<String>,
    /// More `bowline bootstrap` arguments.
    pub bootstrap_args: Vec<String>,
    /// Files written into Envoy's working directory before it starts (relative path,
    /// contents): what an operator mounts for DestinationRule `MUTUAL` certificates.
    pub files: Vec<(String, String)>,
    /// `virtualOutbound` and `virtualInbound` ports (default: free ones), fixed when capture
    /// rules must exist before Envoy starts, as istio-init's do.
    pub listen_ports: Option<(u16, u16)>,
}

impl ProxySpec {
    /// A delta-ADS sidecar without traffic capture (interception mode NONE).
    pub fn sidecar(name: &str, namespace: &str, ip: IpAddr) -> ProxySpec {
        ProxySpec {
            kind: "sidecar".to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
            ip,
            labels: Vec::new(),
            service_account: "default".to_string(),
            delta: true,
            interception: "NONE".to_string(),
            gid: None,
            locality: None,
            token: false,
            xds_addr: None,
            bootstrap_args: Vec::new(),
            files: Vec::new(),
            listen_ports: None,
        }
    }

    /// A delta-ADS gateway (`router`): its listeners bind the ports of its Gateways' servers.
    pub fn router(name: &str, namespace: &str, ip: IpAddr) -> ProxySpec {
        ProxySpec {
            kind: "router".to_string(),
            ..ProxySpec::sidecar(name, namespace, ip)
        }
    }

    pub fn listen_ports(mut self, outbound: u16, inbound: u16) -> ProxySpec {
        self.listen_ports = Some((outbound, inbound));
        self
    }

    /// Authenticate with a token over the TLS port (the proxy then gets certificates and
    /// mutual TLS).
    pub fn with_token(mut self) -> ProxySpec {
        self.token = true;
        self
    }

    pub fn xds_addr(mut self, addr: &str) -> ProxySpec {
        self.xds_addr = Some(addr.to_string());
        self
    }

    pub fn bootstrap_arg(mut self, arg: &str) -> ProxySpec {
        self.bootstrap_args.push(arg.to_string());
        self
    }

    pub fn file(mut self, relative: &str, contents: &str) -> ProxySpec {
        self.files
            .push((relative.to_string(), contents.to_string()));
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> ProxySpec {
        self.labels.push((k.to_string(), v.to_string()));
        self
    }

    pub fn delta(mut self, delta: bool) -> ProxySpec {
        self.delta = delta;
        self
    }

    pub fn interception(mut self, mode: &str) -> ProxySpec {
        self.interception = mode.to_string();
        self
    }

    pub fn run_as_group(mut self, gid: u32) -> ProxySpec {
        self.gid = Some(gid);
        self
    }

    /// Sets the node's locality (`region/zone/subzone`; trailing parts may be left out).
    pub fn locality(mut self, locality: &str) -> ProxySpec {
        self.locality = Some(locality.to_string());
        self
    }

    pub fn service_account(mut self, sa: &str) -> ProxySpec {
        self.service_account = sa.to_string();
        self
    }

    /// `<pod>.<ns>`, as syncz and config_dump name the proxy.
    pub fn id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// A real Envoy started from `bowline bootstrap`; killed when dropped.
pub struct Envoy {
    pub spec: ProxySpec,
    pub admin_port: u16,
    /// Ports given to `--proxy-listen-port` / `--proxy-inbound-listen-port`.
    pub listen_port: u16,
    pub inbound_listen_port: u16,
    pub bootstrap: Value,
    dir: TempDir,
    proc: Proc,
}

impl Envoy {
    /// Makes a bootstrap with `bowline bootstrap` for `spec` pointing at `bowline`, starts Envoy
    /// on it, and waits until Envoy's admin `/ready` says LIVE (initial xDS fetch done).
    pub async fn start(bin: &Path, bowline: &Bowline, spec: ProxySpec) -> Envoy {
        let dir = TempDir::new(&format!("envoy-{}", spec.name));
        let admin_port = free_port();
        let (listen_port, inbound_listen_port) = spec
            .listen_ports
            .unwrap_or_else(|| (free_port(), free_port()));
        let labels = spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(BOWLINE);
        let xds_addr = spec.xds_addr.clone().unwrap_or_else(|| {
            if spec.token {
                bowline.xds_tls_addr.to_string()
            } else {
                bowline.xds_addr.to_string()
            }
        });
        cmd.args(["bootstrap", "--type", &spec.kind])
            .args(["--name", &spec.name])
            .args(["--namespace", &spec.namespace])
            .args(["--ip", &spec.ip.to_string()])
            .args(["--service-account", &spec.service_account])
            .args(["--xds-addr", &xds_addr])
            .args(["--admin-port", &admin_port.to_string()])
            .arg(if spec.delta { "--delta" } else { "--sotw" })
            .args(["--interception-mode", &spec.interception])
            .args(["--proxy-listen-port", &listen_port.to_string()])
            .args([
                "--proxy-inbound-listen-port",
                &inbound_listen_port.to_string(),
            ]);
        if !labels.is_empty() {
            cmd.args(["--labels", &labels]);
        }
        if let Some(locality) = &spec.locality {
            cmd.args(["--locality", locality]);
        }
        if spec.token {
            cmd.arg("--token").arg("--ca-dir").arg(&bowline.ca_dir);
        }
        cmd.args(&spec.bootstrap_args);
        let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut bootstrap: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bowline bootstrap printed no JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        confine_dns(&mut bootstrap, spec.ip);
        let path = dir.path().join("bootstrap.json");
        fs::write(
            &path,
            serde_json::to_vec_pretty(&bootstrap).expect("serialize bootstrap"),
        )
        .expect("write bootstrap");

        for (relative, contents) in &spec.files {
            let target = dir.path().join(relative);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).expect("create file dir");
            }
            fs::write(&target, contents).expect("write proxy file");
        }
        let log = dir.path().join("envoy.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "--log-level", "warning"])
            .args(["--concurrency", "1"])
            .current_dir(dir.path());
        if let Some(gid) = spec.gid {
            use std::os::unix::process::CommandExt;
            cmd.gid(gid);
        }
        let proc = Proc::spawn(&format!("envoy {}", spec.id()), &mut cmd, &log);
        let mut envoy = Envoy {
            spec,
            admin_port,
            listen_port,
            inbound_listen_port,
            bootstrap,
            dir,
            proc,
        };
        envoy.wait_live(Duration::from_secs(60)).await;
        envoy
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    pub fn proxy_id(&self) -> String {
        self.spec.id()
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    /// `Err` with the log tail if Envoy has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        self.proc.check_running()
    }

    /// Waits until Envoy's `/ready` answers `LIVE`; panics (with Envoy's log) if it exits or
    /// `timeout` passes.
    pub async fn wait_live(&mut self, timeout: Duration) {
        let admin = self.admin_addr();
        let proc = &mut self.proc;
        let live = poll(timeout, async || {
            if let Err(e) = proc.check_running() {
                return Ok(Err(e));
            }
            match admin_get(admin, "/ready").await {
                Ok(r) if r.status == 200 => Ok(Ok(())),
                Ok(r) => Err(format!("/ready: {} {}", r.status, r.text().trim())),
                Err(e) => Err(format!("/ready: {e}")),
            }
        })
        .await;
        match live {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => panic!("envoy {} not live: {e}", self.spec.id()),
        }
    }

    /// GET on Envoy's admin API; the body as text.
    pub async fn admin(&self, path: &str) -> Result<String, String> {
        envoy_admin_get(self.admin_port, path).await
    }

    /// Envoy's `/config_dump` (without EDS).
    pub async fn config_dump(&self) -> Result<Value, String> {
        let text = self.admin("/config_dump").await?;
        serde_json::from_str(&text).map_err(|e| format!("config_dump: bad JSON: {e}"))
    }

    /// What Envoy has accepted, from its own config dump.
    pub async fn loaded(&self) -> Result<EnvoyLoaded, String> {
        Ok(EnvoyLoaded::from_dump(&self.config_dump().await?))
    }

    /// Envoy's counters and gauges whose name matches `filter` (a regex, as `/stats?filter=`;
    /// keep it to letters, digits, `_` and `.`), by full name. Histograms are left out.
    pub async fn stats(&self, filter: &str) -> Result<BTreeMap<String, u64>, String> {
        let text = self.admin(&format!("/stats?filter={filter}")).await?;
        Ok(text
            .lines()
            .filter_map(|l| l.rsplit_once(": "))
            .filter_map(|(k, v)| Some((k.trim().to_string(), v.trim().parse::<u64>().ok()?)))
            .collect())
    }

    /// One counter or gauge by its full name, e.g.
    /// `cluster.outbound|80||a.ns.svc.cluster.local.upstream_rq_pending_overflow`; `Err` when
    /// Envoy has no such statistic (a misspelt name, a cluster not loaded).
    pub async fn stat(&self, name: &str) -> Result<u64, String> {
        // Filter by the last part of the name (safe in a URL), then pick the exact name.
        let last = name.rsplit('.').next().unwrap_or(name);
        self.stats(last)
            .await?
            .get(name)
            .copied()
            .ok_or_else(|| format!("envoy {} has no statistic {name}", self.spec.id()))
    }

    /// Sum of every `*.update_rejected` counter (CDS, LDS, RDS, EDS): Envoy's own NACK count.
    pub async fn rejections(&self) -> Result<u64, String> {
        let text = self.admin("/stats?filter=update_rejected").await?;
        Ok(text
            .lines()
            .filter_map(|l| l.rsplit_once(": "))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum())
    }
}

/// GET `path` on the Envoy admin API at 127.0.0.1:`port`; the body as text.
pub async fn envoy_admin_get(port: u16, path: &str) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let r = admin_get(addr, path)
        .await
        .map_err(|e| format!("GET envoy admin {addr}{path}: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "GET envoy admin {addr}{path}: status {}: {}",
            r.status,
            r.text()
        ));
    }
    Ok(r.text())
}

/// Points Envoy's DNS resolver at a loopback address where nothing answers, so that clusters
/// with DNS resolution (ServiceEntries for external hosts) never send a query off the machine.
/// Leaves a bootstrap that already chooses a resolver alone.
fn confine_dns(bootstrap: &mut Value, ip: IpAddr) {
    let Some(obj) = bootstrap.as_object_mut() else {
        return;
    };
    if obj.contains_key("typed_dns_resolver_config")
        || obj.contains_key("typedDnsResolverConfig")
        || obj.contains_key("dns_resolution_config")
        || obj.contains_key("dnsResolutionConfig")
    {
        return;
    }
    let resolver = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Ipv4Addr::new(o[0], o[1], o[2], 53).to_string()
        }
        IpAddr::V6(_) => "127.0.0.1".to_string(),
    };
    obj.insert(
        "typed_dns_resolver_config".to_string(),
        serde_json::json!({
            "name": "envoy.network.dns_resolver.cares",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
                "resolvers": [{"socket_address": {"address": resolver, "port_value": 53}}],
                "use_resolvers_as_fallback": false,
                "dns_resolver_options": {"no_default_search_domain": true}
            }
        }),
    );
}

/// Resource names Envoy has active, read from its `/config_dump`.
#[derive(Debug, Clone, Default)]
pub struct EnvoyLoaded {
    /// Dynamic clusters that finished warming.
    pub clusters: BTreeSet<String>,
    pub warming_clusters: BTreeSet<String>,
    /// Dynamic listeners in their active state.
    pub listeners: BTreeSet<String>,
    pub warming_listeners: BTreeSet<String>,
    /// Listeners with an error state: `(name, details)`.
    pub listener_errors: Vec<(String, String)>,
    pub routes: BTreeSet<String>,
}

impl EnvoyLoaded {
    pub fn from_dump(dump: &Value) -> EnvoyLoaded {
        let mut out = EnvoyLoaded::default();
        let name =
            |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_str).map(str::to_string);
        for config in dump["configs"].as_array().into_iter().flatten() {
            let ty = config["@type"].as_str().unwrap_or_default();
            if ty.ends_with("ClustersConfigDump") {
                for c in config["dynamic_active_clusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.clusters.extend(name(c, "/cluster/name"));
                }
                for c in config["dynamic_warming_clusters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.warming_clusters.extend(name(c, "/cluster/name"));
                }
            } else if ty.ends_with("ListenersConfigDump") {
                for l in config["dynamic_listeners"].as_array().into_iter().flatten() {
                    let n = name(l, "/name").unwrap_or_default();
                    if l.get("active_state").is_some() {
                        out.listeners.insert(n.clone());
                    }
                    if l.get("warming_state").is_some() {
                        out.warming_listeners.insert(n.clone());
                    }
                    if let Some(err) = l.get("error_state") {
                        out.listener_errors.push((n, err.to_string()));
                    }
                }
            } else if ty.ends_with("RoutesConfigDump") {
                for r in config["dynamic_route_configs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.routes.extend(name(r, "/route_config/name"));
                }
            }
        }
        out
    }
}

/// Names of the resources in a config dump, found by their `@type` anywhere in the JSON (works
/// for any layout of bowline's `/debug/config_dump`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DumpNames {
    pub clusters: BTreeSet<String>,
    pub listeners: BTreeSet<String>,
    pub routes: BTreeSet<String>,
}

impl DumpNames {
    pub fn from_dump(dump: &Value) -> DumpNames {
        let mut out = DumpNames::default();
        collect_names(dump, &mut out);
        out
    }
}

fn collect_names(v: &Value, out: &mut DumpNames) {
    match v {
        Value::Object(map) => {
            if let (Some(ty), Some(name)) = (
                map.get("@type").and_then(Value::as_str),
                map.get("name").and_then(Value::as_str),
            ) {
                let set = match ty.rsplit('/').next().unwrap_or_default() {
                    "envoy.config.cluster.v3.Cluster" => Some(&mut out.clusters),
                    "envoy.config.listener.v3.Listener" => Some(&mut out.listeners),
                    "envoy.config.route.v3.RouteConfiguration" => Some(&mut out.routes),
                    _ => None,
                };
                if let Some(set) = set {
                    set.insert(name.to_string());
                }
            }
            for child in map.values() {
                collect_names(child, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                collect_names(child, out);
            }
        }
        _ => {}
    }
}

//! `bowline load`: run a load scenario against an xDS server and print the report (a table,
//! or JSON with `--json`). Exits 1 when the run did not converge everywhere or saw errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::load::scenario::{RegistryKind, XdsMode};
use crate::load::server::ServerCommand;
use crate::load::{self, Options, Scenario};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Sotw,
    Delta,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Registry {
    Kubernetes,
    ServiceEntry,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The scenario (YAML; see testdata/load/).
    pub scenario: PathBuf,
    /// The xDS (ADS) server to load. With --spawn the default is a free loopback port;
    /// otherwise 127.0.0.1:15010.
    #[arg(long = "xds-addr")]
    pub xds_addr: Option<SocketAddr>,
    /// Where the generated mesh is written; the server must watch this directory. Default:
    /// `bowline-load-<scenario>` in the temporary directory. A non-empty directory not written
    /// by `bowline load` is refused.
    #[arg(long = "config-dir")]
    pub config_dir: Option<PathBuf>,
    /// Run this bowline binary as the server (`bowline serve` on --config-dir and --xds-addr,
    /// with the scenario's server settings), so restarts and server CPU/RSS are measured.
    #[arg(long, conflicts_with = "server_cmd")]
    pub spawn: bool,
    /// Run this command as the server. Split on whitespace (no shell); `{config_dir}` and
    /// `{xds_addr}` are replaced. Needs --xds-addr.
    #[arg(long = "server-cmd")]
    pub server_cmd: Option<String>,
    /// Append the server's standard output and error (its log) to this file.
    #[arg(long = "server-log")]
    pub server_log: Option<PathBuf>,
    /// Run after the mesh is written (`{path}`: the config directory) and after each change
    /// (`{path}`: the file), e.g. `kubectl apply -f {path}` for a server that reads the
    /// Kubernetes API. Split on whitespace (no shell). Its time counts in convergence.
    #[arg(long = "apply-cmd")]
    pub apply_cmd: Option<String>,
    /// Override the scenario's registry: `service-entry` writes ServiceEntries (what istiod
    /// reads from a config directory) instead of Services and EndpointSlices.
    #[arg(long, value_enum)]
    pub registry: Option<Registry>,
    /// Pid of an external server, to report its CPU time and memory.
    #[arg(long = "server-pid")]
    pub server_pid: Option<u32>,
    /// Override the scenario's proxy count.
    #[arg(long)]
    pub proxies: Option<u32>,
    /// Override the scenario's number of stuck proxies (the first N stop reading responses
    /// once in sync and are not expected to converge).
    #[arg(long)]
    pub stalled: Option<u32>,
    /// Override the scenario's xDS variant.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Only write the mesh into --config-dir and exit (to start another server on it first).
    #[arg(long = "write-only")]
    pub write_only: bool,
    /// Upper bound on the whole run.
    #[arg(long = "max-duration", default_value = "30m", value_parser = parse_duration)]
    pub max_duration: Duration,
    /// Worker threads of the load generator (default: the number of CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Allow an --xds-addr that is not a loopback address.
    #[arg(long = "allow-remote")]
    pub allow_remote: bool,
    /// No progress lines on standard error.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::model::networking::parse_duration(s)
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    listener
        .local_addr()
        .context("finding a free loopback port")
}

pub fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(n) = args.proxies {
        scenario.proxies.count = n;
    }
    if let Some(n) = args.stalled {
        scenario.proxies.stalled = n;
    }
    if let Some(mode) = args.mode {
        scenario.proxies.mode = match mode {
            Mode::Sotw => XdsMode::Sotw,
            Mode::Delta => XdsMode::Delta,
        };
    }
    if let Some(registry) = args.registry {
        scenario.mesh.registry = match registry {
            Registry::Kubernetes => RegistryKind::Kubernetes,
            Registry::ServiceEntry => RegistryKind::ServiceEntry,
        };
    }
    scenario
        .check()
        .map_err(|m| anyhow::anyhow!("scenario {}: {m}", args.scenario.display()))?;
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("bowline-load-{}", scenario.name)));
    if args.write_only {
        let mesh = load::mesh::Mesh::new(&scenario.mesh, &config_dir);
        let files = load::run::write_mesh(&scenario, &mesh)?;
        println!("wrote {files} files to {}", config_dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let xds_addr = match (args.xds_addr, args.spawn, &args.server_cmd) {
        (Some(a), _, _) => a,
        (None, true, _) => free_loopback_port()?,
        (None, false, Some(_)) => bail!("--server-cmd needs --xds-addr"),
        (None, false, None) => SocketAddr::from(([127, 0, 0, 1], 15010)),
    };
    if !xds_addr.ip().is_loopback() && !args.allow_remote {
        bail!(
            "--xds-addr {xds_addr}: not a loopback address (pass --allow-remote to load a remote server)"
        );
    }
    let dir = config_dir.display().to_string();
    let server = if args.spawn {
        let program = std::env::current_exe().context("locating the bowline binary")?;
        Some(ServerCommand {
            program,
            args: vec![
                "serve".into(),
                "--config-dir".into(),
                dir.clone(),
                "--xds-addr".into(),
                xds_addr.to_string(),
                "--admin-addr".into(),
                "127.0.0.1:0".into(),
                // The simulated proxies use the plaintext port; a fixed TLS port would keep two
                // runs from sharing the machine.
                "--xds-tls-addr".into(),
                "off".into(),
                "--debounce-after".into(),
                format!("{}ms", scenario.server.debounce_after.as_millis()),
                "--log-level".into(),
                "warn".into(),
            ],
            log: args.server_log.clone(),
        })
    } else if let Some(cmd) = &args.server_cmd {
        let mut words = cmd.split_whitespace().map(|w| {
            w.replace("{config_dir}", &dir)
                .replace("{xds_addr}", &xds_addr.to_string())
        });
        let program = words.next().context("--server-cmd is empty")?;
        Some(ServerCommand {
            program: program.into(),
            args: words.collect(),
            log: args.server_log.clone(),
        })
    } else {
        None
    };
    let options = Options {
        xds_addr,
        config_dir,
        server,
        server_pid: args.server_pid,
        max_duration: args.max_duration,
        progress: !args.quiet,
        apply: args.apply_cmd.clone(),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(load::run(&scenario, &options))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

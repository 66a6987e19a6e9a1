//! `bowline serve`: file source → push loop → cache → ADS, plus the admin HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::{mpsc, watch};

use crate::admin::{self, Admin};
use crate::cache::{Cache, ResourceType};
use crate::model::MeshConfig;
use crate::source::{Store, file::FileSource};
use crate::xds::{Ads, Shared, push};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory of Istio and Kubernetes YAML (`*.yaml`, `*.yml`, recursive), watched for
    /// changes.
    #[arg(long = "config-dir", env = "BOWLINE_CONFIG_DIR")]
    pub config_dir: PathBuf,
    /// Address of the plaintext xDS (ADS) gRPC server.
    #[arg(
        long = "xds-addr",
        env = "BOWLINE_XDS_ADDR",
        default_value = "127.0.0.1:15010"
    )]
    pub xds_addr: SocketAddr,
    /// Address of the admin HTTP server (/ready, /debug/*, /metrics).
    #[arg(
        long = "admin-addr",
        env = "BOWLINE_ADMIN_ADDR",
        default_value = "127.0.0.1:15014"
    )]
    pub admin_addr: SocketAddr,
    /// Quiet time after a change before it is pushed (istiod's PILOT_DEBOUNCE_AFTER).
    #[arg(long = "debounce-after", env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    pub debounce_after: Duration,
    /// Longest a change waits for quiet before it is pushed anyway (PILOT_DEBOUNCE_MAX).
    #[arg(long = "debounce-max", env = "PILOT_DEBOUNCE_MAX", default_value = "10s", value_parser = parse_duration)]
    pub debounce_max: Duration,
    /// Mesh-wide settings: the YAML of istiod's `mesh` ConfigMap key (rootNamespace,
    /// trustDomain, trustDomainAliases, connectTimeout, outboundTrafficPolicy and the
    /// envoyExtAuthzHttp/envoyExtAuthzGrpc extensionProviders are honoured). Read at start-up.
    #[arg(long = "mesh-config", env = "BOWLINE_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Log filter (tracing-subscriber syntax); `RUST_LOG` overrides it.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
}

/// How long the config directory must be quiet before it is re-read.
const FILE_SETTLE: Duration = Duration::from_millis(30);

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::model::networking::parse_duration(s)
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Bad start-up configuration is reported before anything is bound.
    if !args.config_dir.is_dir() {
        bail!(
            "--config-dir {}: not a directory",
            args.config_dir.display()
        );
    }
    let mesh = match &args.mesh_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--mesh-config {}", path.display()))?;
            MeshConfig::from_yaml(&text)
                .with_context(|| format!("--mesh-config {}", path.display()))?
        }
        None => MeshConfig::default(),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .with_context(|| format!("--log-level {:?}", args.log_level))?;
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args, mesh))?;
    Ok(ExitCode::SUCCESS)
}

fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("pilot_proxy_convergence_time".to_string()),
            &[0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0],
        )
        .context("metrics buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
        .inspect(|_| {
            // Counters dashboards expect to exist before the first event.
            for t in ResourceType::ALL {
                metrics::counter!("pilot_xds_pushes", "type" => t.as_str()).absolute(0);
                metrics::counter!("pilot_total_xds_rejects", "type" => t.as_str()).absolute(0);
            }
            metrics::gauge!("pilot_xds").set(0.0);
        })
}

async fn serve(args: ServeArgs, mesh: MeshConfig) -> anyhow::Result<()> {
    let metrics = install_metrics()?;
    let (events_tx, events_rx) = mpsc::channel(64);
    // The file watcher only coalesces the events of one write (editors save in several steps);
    // the push loop's debounce decides when a change is pushed.
    let (source, initial) =
        FileSource::start(&args.config_dir, FILE_SETTLE, events_tx).context("file source")?;
    let mut store = Store::default();
    store.apply(initial);
    let first = push::initial(&store, &mesh);
    tracing::info!(
        dir = %args.config_dir.display(),
        resources = first.model.resources.len(),
        services = first.model.registry.services.len(),
        rejected = first.model.diagnostics.iter().filter(|d| d.is_error()).count(),
        "configuration loaded"
    );
    let cache = Arc::new(Cache::new());
    cache.observe(&first);
    let (snapshots_tx, snapshots_rx) = watch::channel(first);
    let shared = Shared::new(cache.clone(), snapshots_rx);

    let xds_listener = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("--xds-addr {}", args.xds_addr))?;
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("--admin-addr {}", args.admin_addr))?;
    tracing::info!(xds = %args.xds_addr, admin = %args.admin_addr, "serving");

    let debounce = push::Debounce {
        quiet: args.debounce_after,
        max: args.debounce_max,
    };
    let pusher = tokio::spawn(push::run(
        events_rx,
        store,
        mesh,
        cache,
        snapshots_tx,
        debounce,
    ));
    let ads = Ads::new(shared.clone()).into_service();
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ads)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(xds_listener),
            shutdown_signal(),
        );
    let admin_app = admin::router(Admin {
        shared: shared.clone(),
        metrics,
    });
    let http = axum::serve(admin_listener, admin_app).with_graceful_shutdown(shutdown_signal());
    let result = tokio::select! {
        r = grpc => r.context("xds server"),
        r = http => r.context("admin server"),
    };
    pusher.abort();
    drop(source);
    result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

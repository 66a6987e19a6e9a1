//! `bowline serve`: file source → push loop → cache → ADS on the plaintext and TLS ports, the
//! CA (IstioCertificateService on both ports, SDS over ADS), plus the admin HTTP server.
//!
//! What each port allows: the plaintext port (15010) serves configuration to anyone, as
//! istiod's does, and signs CSRs for callers that authenticate (the private key stays with the
//! caller); it never serves the `default` secret, which carries a private key. The TLS port
//! (15012) requires a bowline token or a client certificate bowline issued, and serves
//! configuration, certificates and both secrets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::{mpsc, watch};

use crate::admin::{self, Admin};
use crate::ca::authn::{
    Authenticator, Authenticators, ClientCertAuthenticator, TokenAuthenticator,
};
use crate::ca::service::CertificateService;
use crate::ca::serving::TlsPort;
use crate::ca::tokenreview::{ISTIO_CA_AUDIENCE, TokenReviewAuthenticator};
use crate::ca::{Ca, CaOptions};
use crate::cache::Cache;
use crate::model::MeshConfig;
use crate::push;
use crate::source::{Store, file::FileSource, kube};
use crate::xds::{Ads, Security, Shared};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory of Istio and Kubernetes YAML (`*.yaml`, `*.yml`, recursive), watched for
    /// changes (file mode). Can be combined with a Kubernetes source.
    #[arg(long = "config-dir", env = "BOWLINE_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Watch this cluster (Kubernetes mode): Istio resources, Services, EndpointSlices, Pods,
    /// Namespaces and the mesh ConfigMap. Inside a pod the in-cluster configuration is used
    /// without this flag.
    #[arg(long = "kubeconfig", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace bowline's own configuration lives in (the mesh ConfigMap `istio`).
    #[arg(
        long = "system-namespace",
        env = "POD_NAMESPACE",
        default_value = "istio-system"
    )]
    pub system_namespace: String,
    /// Address of the admission webhooks (HTTPS, istiod's 15017: /validate, /inject); `off`
    /// disables them.
    #[arg(
        long = "webhook-addr",
        env = "BOWLINE_WEBHOOK_ADDR",
        default_value = "off",
        value_parser = parse_optional_addr
    )]
    pub webhook_addr: MaybeAddr,
    /// The ValidatingWebhookConfiguration whose `caBundle` bowline keeps set to its root (and
    /// whose failure policy it sets to Fail), in Kubernetes mode with --webhook-addr. Default:
    /// istiod's `istio-validator-<system namespace>`.
    #[arg(long = "webhook-config", env = "BOWLINE_WEBHOOK_CONFIG")]
    pub webhook_config: Option<String>,
    /// The sidecar injector's MutatingWebhookConfiguration whose `caBundle` bowline keeps set
    /// to its root, in Kubernetes mode with --webhook-addr; `off` leaves it alone.
    #[arg(
        long = "injector-webhook-config",
        env = "BOWLINE_INJECTOR_WEBHOOK_CONFIG",
        default_value = "istio-sidecar-injector"
    )]
    pub injector_webhook_config: String,
    #[command(flatten)]
    pub injector: crate::cli::inject::InjectorArgs,
    /// Address of the plaintext xDS (ADS) gRPC server.
    #[arg(
        long = "xds-addr",
        env = "BOWLINE_XDS_ADDR",
        default_value = "127.0.0.1:15010"
    )]
    pub xds_addr: SocketAddr,
    /// Address of the TLS xDS and CA gRPC server (istiod's 15012); callers authenticate with a
    /// bowline token or client certificate. `off` disables it.
    #[arg(
        long = "xds-tls-addr",
        env = "BOWLINE_XDS_TLS_ADDR",
        default_value = "127.0.0.1:15012",
        value_parser = parse_optional_addr
    )]
    pub xds_tls_addr: MaybeAddr,
    /// DNS names in the TLS port's serving certificate (comma-separated), besides istiod's
    /// service names and `localhost`.
    #[arg(
        long = "xds-tls-name",
        env = "BOWLINE_XDS_TLS_NAMES",
        value_delimiter = ','
    )]
    pub xds_tls_names: Vec<String>,
    /// The CA directory in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem): an operator's plugged-in CA, or where bowline creates and keeps its
    /// self-signed root (and its token signing key) on first start. Without it the root lives
    /// in memory and tokens cannot be issued.
    #[arg(long = "ca-dir", env = "BOWLINE_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Lifetime of workload certificates; they are renewed at half-life.
    #[arg(long = "workload-cert-ttl", env = "DEFAULT_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub workload_cert_ttl: Duration,
    /// Address of the admin HTTP server (/ready, /version, /metrics: Prometheus series under
    /// istiod's names, see docs/metrics.md; and istiod's /debug/* views: for loopback callers,
    /// or others with a bearer token bowline accepts).
    #[arg(
        long = "admin-addr",
        env = "BOWLINE_ADMIN_ADDR",
        default_value = "127.0.0.1:15014"
    )]
    pub admin_addr: SocketAddr,
    /// How long a new connection to any port may stay silent: one that sends nothing in that
    /// time is closed (so are new ones beyond a sixteenth of the open-file limit waiting on the
    /// port, at most 4096, or a 256th from one address, 8 to 256; see
    /// bowline_connections_refused_total). The soft open-file limit is raised to the hard one.
    #[arg(long = "first-byte-timeout", env = "BOWLINE_FIRST_BYTE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub first_byte_timeout: Duration,
    /// Quiet time after a change before it is pushed (istiod's PILOT_DEBOUNCE_AFTER).
    #[arg(long = "debounce-after", env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    pub debounce_after: Duration,
    /// Longest a change waits for quiet before it is pushed anyway (PILOT_DEBOUNCE_MAX).
    #[arg(long = "debounce-max", env = "PILOT_DEBOUNCE_MAX", default_value = "10s", value_parser = parse_duration)]
    pub debounce_max: Duration,
    /// Mesh-wide settings: the YAML of istiod's `mesh` ConfigMap key (rootNamespace,
    /// trustDomain, trustDomainAliases, connectTimeout, outboundTrafficPolicy and the
    /// envoyExtAuthzHttp/envoyExtAuthzGrpc extensionProviders are honoured). Read at start-up;
    /// in Kubernetes mode the cluster's mesh ConfigMap replaces it while it exists.
    #[arg(long = "mesh-config", env = "BOWLINE_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Log filter (tracing-subscriber syntax); `RUST_LOG` overrides it.
    #[arg(long = "log-level", default_value = "info")]
    pub log_level: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::model::networking::parse_duration(s)
}

/// An address or `off` (an alias, so clap parses the whole value instead of treating the
/// argument as optional).
pub type MaybeAddr = Option<SocketAddr>;

fn parse_optional_addr(s: &str) -> Result<MaybeAddr, String> {
    if s == "off" || s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{s:?} is not host:port or `off`: {e}"))
}

/// How long start-up waits for the first list of every watched Kubernetes kind before it
/// serves what it has.
const KUBE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// The names and addresses a serving certificate for `addr` carries: istiod's service names,
/// `--xds-tls-name`, and the address itself unless it is a wildcard.
fn serving_names(args: &ServeArgs, addr: SocketAddr) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut names = crate::ca::serving::default_server_names();
    names.extend(args.xds_tls_names.iter().filter(|n| !n.is_empty()).cloned());
    let ips = if addr.ip().is_unspecified() {
        Vec::new()
    } else {
        vec![addr.ip()]
    };
    (names, ips)
}

/// Kubernetes mode: a kubeconfig was given, or bowline runs in a pod.
fn kube_mode(args: &ServeArgs) -> bool {
    args.kubeconfig.is_some() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Bad start-up configuration is reported before anything is bound.
    if let Some(dir) = &args.config_dir
        && !dir.is_dir()
    {
        bail!("--config-dir {}: not a directory", dir.display());
    }
    if args.config_dir.is_none() && !kube_mode(&args) {
        bail!("nothing to serve: give --config-dir (file mode) or --kubeconfig (Kubernetes mode)");
    }
    let configured = match &args.mesh_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--mesh-config {}", path.display()))?;
            MeshConfig::from_yaml(&text)
                .with_context(|| format!("--mesh-config {}", path.display()))?
        }
        None => MeshConfig::default(),
    };
    let inject = Arc::new(
        args.injector
            .options(&args.system_namespace)
            .context("sidecar injection")?,
    );
    if args.workload_cert_ttl < Duration::from_secs(10) {
        bail!(
            "--workload-cert-ttl {:?}: at least 10s",
            args.workload_cert_ttl
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .with_context(|| format!("--log-level {:?}", args.log_level))?;
    tracing_subscriber::fmt().with_env_filter(filter).init();
    if let Some(path) = &args.mesh_config {
        for problem in &configured.provider_problems {
            tracing::warn!(mesh_config = %path.display(), "{problem}");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // As istiod, the mesh configuration is read before the CA is made: in Kubernetes mode the
    // cluster's ConfigMap replaces --mesh-config, trust domain included.
    let cluster_mesh = if kube_mode(&args) {
        runtime
            .block_on(read_cluster_mesh(&args))
            .context("the mesh configuration from the cluster")?
    } else {
        None
    };
    let trust_domain = cluster_mesh
        .as_ref()
        .unwrap_or(&configured)
        .trust_domain
        .clone();
    let options = CaOptions {
        dir: args.ca_dir.clone(),
        trust_domain,
        workload_ttl: args.workload_cert_ttl,
    };
    // In a cluster without --ca-dir the root lives in a Secret, shared by replicas and
    // restarts (istiod's `cacerts`, else `istio-ca-secret`).
    let ca = if args.ca_dir.is_none() && kube_mode(&args) {
        runtime
            .block_on(async {
                let client = kube::client(args.kubeconfig.as_deref()).await?;
                crate::ca::secret::load(client, &args.system_namespace, &options)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .context("the CA from the cluster")?
    } else {
        Ca::load(&options).context("--ca-dir")?
    };
    tracing::info!(
        source = ?ca.source(),
        trust_domain = %ca.trust_domain(),
        workload_cert_ttl = ?ca.workload_ttl(),
        "certificate authority ready"
    );
    if args.ca_dir.is_none() && !kube_mode(&args) {
        tracing::warn!(
            "no --ca-dir: the root CA lives in memory only; certificates do not survive a restart and tokens cannot be issued"
        );
    }
    runtime.block_on(serve(args, configured, cluster_mesh, Arc::new(ca), inject))?;
    Ok(ExitCode::SUCCESS)
}

/// The mesh ConfigMap's configuration at start-up (`None`: none, or invalid, which is logged;
/// `--mesh-config` then applies). The API server is asked until it answers, for at most
/// `KUBE_SYNC_TIMEOUT`: starting on another trust domain than the cluster's would issue
/// certificates its own configuration refuses.
async fn read_cluster_mesh(args: &ServeArgs) -> anyhow::Result<Option<MeshConfig>> {
    let client = kube::client(args.kubeconfig.as_deref()).await?;
    let at = kube::MeshConfigMap {
        namespace: args.system_namespace.clone(),
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + KUBE_SYNC_TIMEOUT;
    loop {
        match kube::read_mesh(client.clone(), &at).await {
            Ok(mesh) => return Ok(mesh),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(configmap = %format!("{}/{}", at.namespace, at.name), error = %e, "reading the mesh ConfigMap; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "ConfigMap {}/{} (key `mesh`)",
                    at.namespace, at.name
                )));
            }
        }
    }
}

async fn serve(
    args: ServeArgs,
    mesh: MeshConfig,
    cluster_mesh: Option<MeshConfig>,
    ca: Arc<Ca>,
    inject: Arc<crate::webhook::inject::Options>,
) -> anyhow::Result<()> {
    let metrics = crate::monitoring::install(env!("CARGO_PKG_VERSION"))
        .context("installing the metrics recorder")?;
    ca.record_expiry();
    let (events_tx, mut events_rx) = mpsc::channel(64);
    let mut store = Store::default();
    // What start-up read from the cluster, until the watcher reports the ConfigMap itself.
    if let Some(m) = cluster_mesh {
        store.apply(crate::source::Event::Mesh(Some(Box::new(m))));
    }
    // The file source sends each change as soon as it has read it; the push loop's debounce
    // (--debounce-after) is the only one on the way to a push.
    let file_source = match &args.config_dir {
        Some(dir) => {
            let (source, initial) =
                FileSource::start(dir, events_tx.clone()).context("file source")?;
            store.apply(initial);
            Some(source)
        }
        None => None,
    };
    let kube_client = if kube_mode(&args) {
        Some(
            kube::client(args.kubeconfig.as_deref())
                .await
                .context("Kubernetes")?,
        )
    } else {
        None
    };
    let kube_tasks = if let Some(client) = kube_client.clone() {
        let webhooks = crate::webhook::publish::WebhookConfigs {
            validator: args.webhook_addr.map(|_| {
                args.webhook_config
                    .clone()
                    .unwrap_or_else(|| format!("istio-validator-{}", args.system_namespace))
            }),
            injector: args
                .webhook_addr
                .and(Some(args.injector_webhook_config.clone()))
                .filter(|n| !n.is_empty() && n != "off"),
        };
        let mut tasks = vec![tokio::spawn(crate::webhook::publish::lead(
            client.clone(),
            args.system_namespace.clone(),
            webhooks,
            ca.root_pem().to_string(),
        ))];
        tasks.extend(kube::start(
            client,
            kube::MeshConfigMap {
                namespace: args.system_namespace.clone(),
                ..Default::default()
            },
            events_tx.clone(),
        ));
        // Serve once every kind is listed, so no proxy is handed a half-known mesh.
        let deadline = tokio::time::Instant::now() + KUBE_SYNC_TIMEOUT;
        let synced = |store: &Store| {
            kube::KINDS
                .iter()
                .all(|k| store.has(crate::source::SourceId::Kube(*k)))
        };
        while !synced(&store) {
            match tokio::time::timeout_at(deadline, events_rx.recv()).await {
                Ok(Some(event)) => store.apply(event),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        "Kubernetes: not every kind was listed within {KUBE_SYNC_TIMEOUT:?}; serving what is known"
                    );
                    break;
                }
            }
        }
        tasks
    } else {
        Vec::new()
    };
    drop(events_tx);
    // The one trust domain: set from the mesh configuration in force by the push loop, read by
    // the CA, the authenticators and the TLS ports.
    let trust_domain = ca.trust_domain_source().clone();
    let cache = Arc::new(Cache::new());
    let first = push::initial(&store, &mesh, &trust_domain, &cache)
        .await
        .context("building the first model")?;
    tracing::info!(
        dir = %args.config_dir.as_deref().map(|d| d.display().to_string()).unwrap_or_else(|| "-".into()),
        kubernetes = kube_mode(&args),
        resources = first.model.resources.len(),
        services = first.model.registry.services.len(),
        rejected = first.model.diagnostics.iter().filter(|d| d.is_error()).count(),
        "configuration loaded"
    );
    let (snapshots_tx, snapshots_rx) = watch::channel(first);
    let mut authenticators: Vec<Arc<dyn Authenticator>> = Vec::new();
    if let Some(key) = ca.token_key() {
        authenticators.push(Arc::new(TokenAuthenticator::new(
            key.clone(),
            trust_domain.clone(),
        )));
    }
    // Kubernetes service-account tokens (audience istio-ca), as istiod checks them.
    if let Some(client) = kube_client {
        authenticators.push(Arc::new(TokenReviewAuthenticator::new(
            client,
            vec![ISTIO_CA_AUDIENCE.to_string()],
            trust_domain.clone(),
        )));
    }
    authenticators.push(Arc::new(ClientCertAuthenticator));
    let authn = Authenticators::new(authenticators);
    let shared = Shared::with_security(
        cache.clone(),
        snapshots_rx,
        Some(Security {
            ca: ca.clone(),
            authn: authn.clone(),
        }),
    );
    // Every port admits connections within the open-file limit (see `net`).
    let open_files = crate::net::raise_open_file_limit();
    tracing::debug!(open_files, "open-file limit");
    let admission = |port| crate::net::Admission::new(port, args.first_byte_timeout, open_files);
    // The serving certificate is made before any port is bound: a CA that cannot sign fails
    // the start.
    let tls_port = match args.xds_tls_addr {
        Some(addr) => {
            let (names, ips) = serving_names(&args, addr);
            Some(Arc::new(
                TlsPort::new(&ca, names, ips).context("--xds-tls-addr")?,
            ))
        }
        None => None,
    };

    let xds_listener = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("--xds-addr {}", args.xds_addr))?;
    let tls_listener = match args.xds_tls_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--xds-tls-addr {addr}"))?,
        ),
        None => None,
    };
    let webhook = match args.webhook_addr {
        Some(addr) => {
            let (names, ips) = serving_names(&args, addr);
            let port = Arc::new(
                TlsPort::with_alpn(&ca, names, ips, &[b"http/1.1"]).context("--webhook-addr")?,
            );
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--webhook-addr {addr}"))?;
            let tls =
                crate::webhook::TlsListener::new(listener, admission("webhook"), &port, ca.clone())
                    .with_context(|| format!("--webhook-addr {addr}"))?;
            Some((port, tls))
        }
        None => None,
    };
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("--admin-addr {}", args.admin_addr))?;
    tracing::info!(
        xds = %args.xds_addr,
        xds_tls = args.xds_tls_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        webhooks = args.webhook_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        admin = %args.admin_addr,
        "serving"
    );

    let debounce = push::Debounce {
        quiet: args.debounce_after,
        max: args.debounce_max,
    };
    let pusher = tokio::spawn(push::run(
        events_rx,
        store,
        mesh,
        trust_domain,
        cache,
        snapshots_tx,
        debounce,
    ));
    let certificates = CertificateService::new(ca.clone(), authn);
    // One signal stops every server: the xDS streams first end with status OK (proxies
    // reconnect at once), then the servers finish what is in flight; after a grace period the
    // process exits anyway.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            shared.close_streams();
            let _ = stop_tx.send(true);
        });
    }
    let stopped = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let plaintext_certificates = certificates.clone();
    let grpc = async {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(Ads::new(shared.clone()).into_service())
            .add_service(plaintext_certificates.into_service())
            .serve_with_incoming_shutdown(
                crate::net::incoming(xds_listener, admission("xds")),
                stopped(),
            )
            .await
            .context("xds server")
    };
    let grpc_tls = async {
        let (Some(port), Some(listener)) = (tls_port, tls_listener) else {
            stopped().await;
            return Ok(());
        };
        let renewer = tokio::spawn(port.clone().renew(ca.clone()));
        let incoming = crate::ca::serving::incoming(
            listener,
            admission("xds-tls"),
            port.acceptor.clone(),
            ca.clone(),
        );
        let result = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(Ads::tls(shared.clone()).into_service())
            .add_service(certificates.into_service())
            .serve_with_incoming_shutdown(incoming, stopped())
            .await;
        renewer.abort();
        result.context("TLS xds server")
    };
    let views = Arc::new(admin::debug::Views {
        inject: webhook.is_some().then(|| inject.clone()),
    });
    // ADS `istio.io/debug` requests are answered by the admin port's views.
    let _ = shared.debug_views.set(views.clone());
    let admin_app = admin::router(Admin {
        shared: shared.clone(),
        metrics,
        views,
    });
    let admin_listener = crate::net::AdmittedListener::new(admin_listener, admission("admin"))
        .context("--admin-addr")?;
    let http = async {
        axum::serve(
            admin_listener,
            admin_app.into_make_service_with_connect_info::<crate::net::ClientAddr>(),
        )
        .with_graceful_shutdown(stopped())
        .await
        .context("admin server")
    };
    let webhooks = async {
        let Some((port, listener)) = webhook else {
            stopped().await;
            return Ok(());
        };
        let renewer = tokio::spawn(port.renew(ca.clone()));
        let result = axum::serve(listener, crate::webhook::router(inject.clone()))
            .with_graceful_shutdown(stopped())
            .await;
        renewer.abort();
        result.context("webhook server")
    };
    let grace = async {
        stopped().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "servers still busy after the grace period; exiting");
    };
    let result = tokio::select! {
        r = async { tokio::try_join!(webhooks, grpc, grpc_tls, http) } => r.map(|_| ()),
        () = grace => Ok(()),
    };
    pusher.abort();
    for task in kube_tasks {
        task.abort();
    }
    drop(file_source);
    result
}

/// How long, after the signal to stop, the servers may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

//! `bowline bootstrap`: an Envoy bootstrap for a stock Envoy sidecar or gateway. ADS over gRPC
//! to bowline (delta by default), the node id and metadata istiod expects, admin on loopback,
//! and LDS/CDS from ADS. `envoy -c <file>` runs it as is.
//!
//! With `--token` the proxy proves its identity: bowline's TLS port (`--xds-addr` points at
//! it), its serving certificate verified against the mesh root (from `--ca-dir`, or
//! `--root-cert`) and name, and a token signed with the key in `--ca-dir`, bound to
//! `--namespace` and `--service-account`, sent as gRPC initial metadata
//! `authorization: Bearer <token>`. Envoy sends it whenever the xDS stream (re)connects, so the
//! bootstrap must be made anew (and Envoy restarted) before the token expires (`--token-ttl`).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;

/// The Istio release whose APIs and node metadata bowline follows (reported to proxies as
/// ISTIO_VERSION, as istiod's agents do).
pub const ISTIO_COMPAT_VERSION: &str = "1.28.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyKind {
    Sidecar,
    Router,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[clap(rename_all = "UPPER")]
pub enum Interception {
    Redirect,
    Tproxy,
    None,
}

#[derive(Debug, clap::Args)]
pub struct BootstrapArgs {
    /// Proxy type: `sidecar` or `router` (gateway).
    #[arg(long = "type", value_enum, default_value = "sidecar")]
    pub kind: ProxyKind,
    /// Pod (workload) name.
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The workload's IP address (the node id's second part and INSTANCE_IPS).
    #[arg(long)]
    pub ip: String,
    /// Workload labels, `k=v,k2=v2` (they win over `--labels-file`).
    #[arg(long, default_value = "")]
    pub labels: String,
    /// Workload labels from a file in the Kubernetes downward API format (one `key="value"`
    /// per line), e.g. a `metadata.labels` downwardAPI volume item.
    #[arg(long = "labels-file")]
    pub labels_file: Option<std::path::PathBuf>,
    #[arg(long = "service-account", default_value = "default")]
    pub service_account: String,
    /// bowline's xDS address.
    #[arg(long = "xds-addr", default_value = "127.0.0.1:15010")]
    pub xds_addr: String,
    /// Envoy admin port, on 127.0.0.1.
    #[arg(long = "admin-port", default_value_t = 15000)]
    pub admin_port: u16,
    /// Incremental (delta) xDS; the default.
    #[arg(long, conflicts_with = "sotw")]
    pub delta: bool,
    /// State-of-the-world xDS.
    #[arg(long)]
    pub sotw: bool,
    /// How traffic reaches the proxy: REDIRECT or TPROXY (iptables capture), NONE (listeners
    /// bind their own addresses). A `router` is always NONE.
    #[arg(long = "interception-mode", value_enum, default_value = "REDIRECT")]
    pub interception_mode: Interception,
    /// Port of the `virtualOutbound` listener (ProxyConfig proxyListenPort).
    #[arg(long = "proxy-listen-port", default_value_t = 15001)]
    pub proxy_listen_port: u16,
    /// Port of the `virtualInbound` listener (ProxyConfig proxyInboundListenPort).
    #[arg(long = "proxy-inbound-listen-port", default_value_t = 15006)]
    pub proxy_inbound_listen_port: u16,
    /// The node's locality, `region/zone/subzone` (used when the labels carry none).
    #[arg(long, default_value = "")]
    pub locality: String,
    /// Connect to bowline's TLS port (verify its certificate against the mesh root).
    #[arg(long)]
    pub tls: bool,
    /// Embed a token that proves `--namespace`/`--service-account` (implies `--tls`); signed
    /// with the key in `--ca-dir`.
    #[arg(long)]
    pub token: bool,
    /// Embed this token (a file's contents, e.g. a projected Kubernetes service-account token
    /// with audience `istio-ca`) instead of signing one (implies `--tls`). Envoy sends it on
    /// every (re)connection, so the bootstrap must be renewed before the token expires.
    #[arg(long = "token-file", conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// How long the token is valid.
    #[arg(long = "token-ttl", default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: std::time::Duration,
    /// bowline's CA directory: the mesh root (root-cert.pem) and the token signing key.
    #[arg(long = "ca-dir")]
    pub ca_dir: Option<std::path::PathBuf>,
    /// The mesh root certificate (PEM), when not read from `--ca-dir`.
    #[arg(long = "root-cert")]
    pub root_cert: Option<std::path::PathBuf>,
    /// The name bowline's serving certificate is checked for (SNI and SAN); an IP address is
    /// checked as an IP SAN.
    #[arg(long = "xds-server-name", default_value = "istiod.istio-system.svc")]
    pub xds_server_name: String,
    /// The mesh's trust domain (MeshConfig trustDomain).
    #[arg(long = "trust-domain", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Serve Envoy's Prometheus stats (`/stats/prometheus` of the admin API, nothing else) on
    /// 0.0.0.0:PORT (istio's 15090).
    #[arg(long = "prometheus-port")]
    pub prometheus_port: Option<u16>,
    /// Serve `/healthz/ready` (Envoy's admin `/ready`: 200 once the first configuration is
    /// applied) on 0.0.0.0:PORT (istio's 15021), for a readiness probe.
    #[arg(long = "readiness-port")]
    pub readiness_port: Option<u16>,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<std::path::PathBuf>,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::model::networking::parse_duration(s)
}

/// A token for an identity, signed with the key in `ca_dir`.
pub fn sign_token(
    ca_dir: &std::path::Path,
    trust_domain: &str,
    namespace: &str,
    service_account: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let identity = crate::model::Identity::new(trust_domain, namespace, service_account)
        .with_context(|| {
            format!("{trust_domain:?}/{namespace:?}/{service_account:?} is not a usable identity")
        })?;
    let path = ca_dir.join(crate::ca::TOKEN_KEY);
    if !path.exists() {
        bail!(
            "{}: no token signing key (bowline serve --ca-dir {} creates it on first start)",
            path.display(),
            ca_dir.display()
        );
    }
    let key = crate::ca::token::TokenKey::load_or_create(&path)?;
    Ok(key.sign(&identity, ttl)?)
}

fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--labels: {pair:?} is not key=value");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Labels in the downward API file format: `key="value"` lines, values quoted as Go's `%q`
/// (label values never need more than JSON's escapes).
pub fn parse_labels_file(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, quoted)) = line.split_once('=') else {
            bail!("line {}: {line:?} is not key=\"value\"", i + 1);
        };
        let value: String = serde_json::from_str(quoted.trim())
            .with_context(|| format!("line {}: {quoted:?} is not a quoted value", i + 1))?;
        out.insert(key.trim().to_string(), value);
    }
    Ok(out)
}

/// A static listener on 0.0.0.0:`port` that forwards `path` (rewritten to `admin_path`) to
/// Envoy's own admin API and answers 404 to everything else.
fn admin_path_listener(name: &str, port: u16, path: &str, admin_path: &str) -> serde_json::Value {
    let mut route = json!({"cluster": ADMIN_CLUSTER});
    if path != admin_path {
        route["prefix_rewrite"] = json!(admin_path);
    }
    json!({
        "name": name,
        "address": {"socket_address": {"protocol": "TCP", "address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "codec_type": "AUTO",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{
                    "name": name,
                    "domains": ["*"],
                    "routes": [{"match": {"path": path}, "route": route}]
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                }]
            }
        }]}]
    })
}

/// The static cluster of Envoy's own admin API (for the stats and readiness listeners).
const ADMIN_CLUSTER: &str = "envoy_admin";

/// Builds the bootstrap document.
pub fn bootstrap(args: &BootstrapArgs) -> anyhow::Result<serde_json::Value> {
    if args.ip.parse::<std::net::IpAddr>().is_err() {
        bail!("--ip: {:?} is not an IP address", args.ip);
    }
    let (host, port) = args
        .xds_addr
        .rsplit_once(':')
        .with_context(|| format!("--xds-addr: {:?} is not host:port", args.xds_addr))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--xds-addr: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut labels = match &args.labels_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--labels-file {}", path.display()))?;
            parse_labels_file(&text).with_context(|| format!("--labels-file {}", path.display()))?
        }
        None => BTreeMap::new(),
    };
    labels.extend(parse_labels(&args.labels)?);
    let kind = match args.kind {
        ProxyKind::Sidecar => "sidecar",
        ProxyKind::Router => "router",
    };
    // A gateway intercepts nothing: its listeners bind their own ports.
    let mode = match (args.kind, args.interception_mode) {
        (ProxyKind::Router, _) | (_, Interception::None) => "NONE",
        (_, Interception::Redirect) => "REDIRECT",
        (_, Interception::Tproxy) => "TPROXY",
    };
    let node_id = format!(
        "{kind}~{}~{}.{}~{}.svc.cluster.local",
        args.ip, args.name, args.namespace, args.namespace
    );
    let app = labels
        .get("app")
        .or_else(|| labels.get("app.kubernetes.io/name"))
        .cloned()
        .unwrap_or_else(|| args.name.clone());
    let api_type = if args.sotw { "GRPC" } else { "DELTA_GRPC" };
    let resolver = if host.parse::<std::net::IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let mut parts = args.locality.splitn(3, '/');
    let locality = json!({
        "region": parts.next().unwrap_or_default(),
        "zone": parts.next().unwrap_or_default(),
        "sub_zone": parts.next().unwrap_or_default(),
    });
    let mut doc = json!({
        "node": {
            "id": node_id,
            "cluster": format!("{app}.{}", args.namespace),
            "metadata": {
                "NAME": args.name,
                "NAMESPACE": args.namespace,
                "LABELS": labels,
                "SERVICE_ACCOUNT": args.service_account,
                "INSTANCE_IPS": args.ip,
                "ISTIO_VERSION": ISTIO_COMPAT_VERSION,
                "INTERCEPTION_MODE": mode,
                "CLUSTER_ID": "Kubernetes",
                "WORKLOAD_NAME": app,
                "PROXY_CONFIG": {
                    "discoveryAddress": args.xds_addr,
                    "proxyAdminPort": args.admin_port,
                    "proxyListenPort": args.proxy_listen_port,
                    "proxyInboundListenPort": args.proxy_inbound_listen_port,
                }
            }
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": args.admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{
                    "envoy_grpc": {
                        "cluster_name": "xds-grpc",
                        "retry_policy": {
                            "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"}
                        }
                    }
                }]
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"}
        },
        "static_resources": {
            "clusters": [{
                "name": "xds-grpc",
                "type": resolver,
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": "xds-grpc",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": host, "port_value": port}
                    }}}]}]
                },
                "circuit_breakers": {"thresholds": [
                    {"priority": "DEFAULT", "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000},
                    {"priority": "HIGH", "max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}
                ]},
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {
                            "connection_keepalive": {"interval": "30s", "timeout": "10s"}
                        }}
                    }
                }
            }]
        }
    });
    if !args.locality.is_empty() {
        doc["node"]["locality"] = locality;
    }
    let mut listeners = Vec::new();
    if let Some(port) = args.prometheus_port {
        listeners.push(admin_path_listener(
            "prometheus_stats",
            port,
            "/stats/prometheus",
            "/stats/prometheus",
        ));
    }
    if let Some(port) = args.readiness_port {
        listeners.push(admin_path_listener(
            "readiness",
            port,
            "/healthz/ready",
            "/ready",
        ));
    }
    if !listeners.is_empty() {
        doc["static_resources"]["listeners"] = json!(listeners);
        if let Some(clusters) = doc["static_resources"]["clusters"].as_array_mut() {
            clusters.push(json!({
                "name": ADMIN_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "0.25s",
                "load_assignment": {
                    "cluster_name": ADMIN_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": args.admin_port}
                    }}}]}]
                }
            }));
        }
    }
    if args.tls || args.token || args.token_file.is_some() {
        let root_path = match (&args.root_cert, &args.ca_dir) {
            (Some(p), _) => p.clone(),
            (None, Some(dir)) => dir.join(crate::ca::ROOT_CERT),
            (None, None) => {
                bail!("--tls, --token and --token-file need the mesh root: --ca-dir or --root-cert")
            }
        };
        let root = std::fs::read_to_string(&root_path)
            .with_context(|| format!("reading {}", root_path.display()))?;
        if !root.contains("-----BEGIN CERTIFICATE-----") {
            bail!("{}: no PEM certificate", root_path.display());
        }
        // A server name that is an IP address is checked as an IP SAN, and sent as no SNI.
        let by_ip = args.xds_server_name.parse::<std::net::IpAddr>().is_ok();
        let cluster = &mut doc["static_resources"]["clusters"][0];
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": args.xds_server_name,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {
                        "trusted_ca": {"inline_string": root},
                        "match_typed_subject_alt_names": [{
                            "san_type": if by_ip { "IP_ADDRESS" } else { "DNS" },
                            "matcher": {"exact": args.xds_server_name}
                        }]
                    }
                }
            }
        });
        if by_ip && let Some(tls) = cluster["transport_socket"]["typed_config"].as_object_mut() {
            tls.remove("sni");
        }
    }
    if args.token {
        let Some(dir) = &args.ca_dir else {
            bail!("--token needs --ca-dir (the token signing key)");
        };
        let token = sign_token(
            dir,
            &args.trust_domain,
            &args.namespace,
            &args.service_account,
            args.token_ttl,
        )?;
        doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"] =
            json!([{"key": "authorization", "value": format!("Bearer {token}")}]);
    }
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("--token-file {}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            bail!("--token-file {}: empty", path.display());
        }
        doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"] =
            json!([{"key": "authorization", "value": format!("Bearer {token}")}]);
    }
    Ok(doc)
}

pub fn run(args: BootstrapArgs) -> anyhow::Result<ExitCode> {
    let doc = bootstrap(&args)?;
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_file() {
        let got = parse_labels_file(
            "app=\"web\"\nservice.istio.io/canonical-name=\"web\"\n\npod-template-hash=\"7d4b9c\"\n",
        )
        .expect("parses");
        assert_eq!(got.len(), 3);
        assert_eq!(got["service.istio.io/canonical-name"], "web");
        assert!(parse_labels_file("app=web\n").is_err());
        assert!(parse_labels_file("no-equals\n").is_err());
    }
}

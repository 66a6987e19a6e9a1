//! `bowline proxy-status` and `bowline proxy-config`: istioctl's views of the mesh's proxies
//! for users without istioctl, in istioctl's table layouts.
//!
//! - `proxy-status` asks bowline's ADS port for `istio.io/debug/syncz` (as istioctl does, with
//!   a client certificate of the mesh's CA, or a token) and prints each proxy's sync state;
//!   with a proxy,
//!   it asks for `istio.io/debug/config_dump` of that proxy and compares it with the dump of
//!   the proxy's Envoy (its admin API, or a saved file).
//! - `proxy-config` reads an Envoy config dump (the admin API, or a saved file) and prints its
//!   clusters, listeners, routes, endpoints, secrets or bootstrap.
//!
//! Contract: read-only; every network wait is bounded by `--timeout`; bad input (a file that is
//! no config dump, an unreachable admin, a refused debug request) is a one-line error naming
//! what was read.

pub mod compare;
pub mod dump;
pub mod fetch;
pub mod status;
pub mod table;
pub mod views;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use dump::{Dump, Output, message_json, print_value};
use fetch::XdsArgs;

use crate::xds::debug::{CONFIG_DUMP, SYNCZ};

const DEFAULT_ADMIN: &str = "http://127.0.0.1:15000";

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Reads a config dump file (`-` for standard input).
fn read_file(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the config dump from standard input")?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn now() -> i64 {
    crate::xds::status::unix_now() as i64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct ProxyStatusArgs {
    /// A proxy (`<pod>.<namespace>`, or `<pod>` with --namespace): compare what bowline sent it
    /// with what its Envoy holds.
    pub proxy: Option<String>,
    #[command(flatten)]
    pub xds: XdsArgs,
    /// Only the proxies of this namespace; with a proxy named `<pod>`, its namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Output format of the status.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: StatusOutput,
    /// 0: the types each proxy subscribes to; 1: one column per xDS type.
    #[arg(short = 'v', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub verbosity: u8,
    /// With a proxy: the Envoy's admin API, whose /config_dump is compared (without -f:
    /// http://127.0.0.1:15000, the sidecar's own).
    #[arg(long = "envoy-admin", conflicts_with = "file")]
    pub envoy_admin: Option<String>,
    /// With a proxy: a file holding the Envoy's /config_dump (`-`: standard input).
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
}

pub fn run_status(args: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    if let Some(proxy) = &args.proxy {
        let proxy = proxy.strip_prefix("pod/").unwrap_or(proxy);
        let proxy_id = if proxy.contains('.') {
            proxy.to_string()
        } else {
            format!("{proxy}.{}", args.namespace.as_deref().unwrap_or("default"))
        };
        let envoy_bytes = match &args.file {
            Some(path) => read_file(path)?,
            None => {
                let admin = args.envoy_admin.as_deref().unwrap_or(DEFAULT_ADMIN);
                rt.block_on(fetch::admin_get(admin, "/config_dump", args.xds.timeout))
                    .context("could not read the Envoy's config dump")?
            }
        };
        let envoy = Dump::from_json(&envoy_bytes).context("the Envoy's config dump")?;
        let response = rt.block_on(fetch::ask(&args.xds, CONFIG_DUMP, vec![proxy_id.clone()]))?;
        if response.resources.is_empty() {
            bail!(
                "bowline has no configuration for {proxy_id}: it is not connected, or not visible to the identity of --cert-dir (a namespace sees only its own proxies)"
            );
        }
        let ours = Dump {
            configs: response.resources,
        };
        print!("{}", compare::compare(&ours, &envoy)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut response = rt.block_on(fetch::ask(&args.xds, SYNCZ, Vec::new()))?;
    let rows = status::rows(&response, args.namespace.as_deref(), now())?;
    match args.output {
        StatusOutput::Table => print!(
            "{}",
            status::status_table(&rows, args.verbosity > 0).render()
        ),
        format => {
            // The answer as it came, without the proxies of other namespaces.
            let listed: std::collections::HashSet<&str> =
                rows.iter().map(|r| r.proxy.as_str()).collect();
            response.resources.retain(|any| {
                use prost::Message;
                envoy_types::pb::envoy::service::status::v3::ClientConfig::decode(
                    any.value.as_slice(),
                )
                .is_ok_and(|c| c.node.is_some_and(|n| listed.contains(n.id.as_str())))
            });
            let json = message_json(&response)?;
            let output = if format == StatusOutput::Yaml {
                Output::Yaml
            } else {
                Output::Json
            };
            print!("{}", print_value(&json, output)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKind {
    #[value(alias = "clusters", alias = "c")]
    Cluster,
    #[value(alias = "listeners", alias = "l")]
    Listener,
    #[value(alias = "routes", alias = "r")]
    Route,
    /// The endpoints Envoy received over EDS (istioctl's `eds`).
    #[value(alias = "endpoints", alias = "ep", alias = "eds")]
    Endpoint,
    #[value(alias = "secrets", alias = "s")]
    Secret,
    All,
    #[value(alias = "b")]
    Bootstrap,
}

fn parse_bool(s: &str) -> Result<bool, String> {
    s.parse::<bool>()
        .map_err(|_| format!("{s:?}: expected true or false"))
}

#[derive(Debug, clap::Args)]
pub struct ProxyConfigArgs {
    /// What to show.
    #[arg(value_enum)]
    pub kind: ConfigKind,
    /// A file holding Envoy's /config_dump (`-`: standard input); for endpoints, saved from
    /// /config_dump?include_eds.
    #[arg(short = 'f', long, conflicts_with = "admin")]
    pub file: Option<PathBuf>,
    /// Envoy's admin API to read the config dump from.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: String,
    /// Output format: the table (`short`; bootstrap: json), or the resources as JSON or YAML.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
    /// Clusters: a substring of the name (the service's FQDN).
    #[arg(long)]
    pub fqdn: Option<String>,
    /// Clusters, listeners and endpoints: the port.
    #[arg(long)]
    pub port: Option<u32>,
    /// Clusters: a substring of the name (the subset).
    #[arg(long)]
    pub subset: Option<String>,
    /// Clusters: a substring of the name (`inbound` or `outbound`).
    #[arg(long)]
    pub direction: Option<String>,
    /// Listeners: the address; endpoints: `<ip>:<port>`.
    #[arg(long)]
    pub address: Option<String>,
    /// Listeners: HTTP, TCP, HTTP+TCP or UNKNOWN.
    #[arg(long = "type")]
    pub listener_type: Option<String>,
    /// Routes: the route configuration's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Endpoints: the cluster's name.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Endpoints: the health status (HEALTHY, UNHEALTHY, ...).
    #[arg(long)]
    pub status: Option<String>,
    /// Listeners and routes: one row per filter chain or route (`--verbose=false`: one per
    /// listener or route configuration).
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub verbose: bool,
    /// all: a title before each section.
    #[arg(long = "with-headers")]
    pub with_headers: bool,
    /// Upper bound on reading Envoy's admin API.
    #[arg(long, default_value = "30s", value_parser = |s: &str| crate::model::networking::parse_duration(s))]
    pub timeout: Duration,
}

impl ProxyConfigArgs {
    fn cluster_filter(&self) -> views::ClusterFilter {
        views::ClusterFilter {
            fqdn: self.fqdn.clone(),
            port: self.port,
            subset: self.subset.clone(),
            direction: self.direction.clone(),
        }
    }

    fn listener_filter(&self) -> views::ListenerFilter {
        views::ListenerFilter {
            address: self.address.clone(),
            port: self.port,
            kind: self.listener_type.clone(),
        }
    }

    fn endpoint_filter(&self) -> views::EndpointFilter {
        views::EndpointFilter {
            address: self.address.clone(),
            port: self.port,
            cluster: self.cluster.clone(),
            status: self.status.clone(),
        }
    }
}

/// Resources as a JSON array (Envoy's form).
fn resources_json<T: prost::Message + prost::Name>(
    items: &[T],
) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::Value::Array(
        items
            .iter()
            .map(message_json)
            .collect::<anyhow::Result<_>>()?,
    ))
}

/// The view of `args.kind` of a config dump.
pub fn render_config(dump: &Dump, args: &ProxyConfigArgs, now: i64) -> anyhow::Result<String> {
    let output = args
        .output
        .unwrap_or(if args.kind == ConfigKind::Bootstrap {
            Output::Json
        } else {
            Output::Short
        });
    let short = output == Output::Short;
    // The `all` view names each row's resource by its type, as istioctl's does.
    let typed = args.kind == ConfigKind::All;
    match args.kind {
        ConfigKind::Cluster => {
            let clusters = views::sorted_clusters(
                nonempty(dump.clusters()?, "clusters")?,
                &args.cluster_filter(),
            );
            if short {
                Ok(views::cluster_table(&clusters, typed).render())
            } else {
                print_value(&resources_json(&clusters)?, output)
            }
        }
        ConfigKind::Listener => {
            let listeners = views::sorted_listeners(
                nonempty(dump.listeners()?, "listeners")?,
                &args.listener_filter(),
            );
            if short {
                Ok(views::listener_table(&listeners, args.verbose, typed).render())
            } else {
                print_value(&resources_json(&listeners)?, output)
            }
        }
        ConfigKind::Route => {
            let routes =
                views::sorted_routes(nonempty(dump.routes()?, "routes")?, args.name.as_deref());
            if short {
                Ok(views::route_table(&routes, args.verbose, typed).render())
            } else {
                print_value(&resources_json(&routes)?, output)
            }
        }
        ConfigKind::Endpoint => {
            let endpoints = views::sorted_endpoints(dump.endpoints()?, &args.endpoint_filter());
            if short {
                Ok(views::endpoint_table(&endpoints, typed).render())
            } else {
                print_value(&resources_json(&endpoints)?, output)
            }
        }
        ConfigKind::Secret => {
            let secrets = dump.secrets_section()?;
            if !short {
                return print_value(&message_json(&secrets)?, output);
            }
            if secrets.dynamic_active_secrets.is_empty()
                && secrets.dynamic_warming_secrets.is_empty()
            {
                return Ok("No active or warming secrets found.\n".into());
            }
            Ok(views::secret_table(&views::secret_items(&secrets, now)?, typed).render())
        }
        ConfigKind::Bootstrap => {
            let bootstrap = dump.bootstrap()?;
            if short {
                Ok(views::bootstrap_table(&bootstrap).render())
            } else {
                print_value(&message_json(&bootstrap)?, output)
            }
        }
        ConfigKind::All => {
            if !short {
                let mut json = message_json(&envoy_types::pb::envoy::admin::v3::ConfigDump {
                    configs: dump.configs.clone(),
                })?;
                if let Some(o) = json.as_object_mut() {
                    o.remove("@type");
                }
                return print_value(&json, output);
            }
            let mut out = String::new();
            let mut section = |title: &str, body: String, last: bool| {
                if args.with_headers {
                    out.push_str(&format!("------ {title} ------\n\n"));
                }
                out.push_str(&body);
                if !last {
                    out.push('\n');
                }
            };
            section(
                "BOOTSTRAP INFO",
                views::bootstrap_table(&dump.bootstrap()?).render(),
                false,
            );
            let clusters = views::sorted_clusters(
                nonempty(dump.clusters()?, "clusters")?,
                &args.cluster_filter(),
            );
            section(
                "CLUSTER INFO",
                views::cluster_table(&clusters, typed).render(),
                false,
            );
            let listeners = views::sorted_listeners(
                nonempty(dump.listeners()?, "listeners")?,
                &args.listener_filter(),
            );
            section(
                "LISTENER INFO",
                views::listener_table(&listeners, args.verbose, typed).render(),
                false,
            );
            let routes =
                views::sorted_routes(nonempty(dump.routes()?, "routes")?, args.name.as_deref());
            section(
                "ROUTE INFO",
                views::route_table(&routes, args.verbose, typed).render(),
                false,
            );
            let secrets = dump.secrets_section()?;
            let secret_text = if secrets.dynamic_active_secrets.is_empty()
                && secrets.dynamic_warming_secrets.is_empty()
            {
                "No active or warming secrets found.\n".to_string()
            } else {
                views::secret_table(&views::secret_items(&secrets, now)?, typed).render()
            };
            section("SECRET INFO", secret_text, false);
            let endpoints = match dump.endpoints() {
                Ok(e) => views::sorted_endpoints(e, &args.endpoint_filter()),
                Err(_) => Vec::new(),
            };
            section(
                "ENDPOINTS INFO",
                views::endpoint_table(&endpoints, typed).render(),
                true,
            );
            Ok(out)
        }
    }
}

fn nonempty<T>(items: Vec<T>, what: &str) -> anyhow::Result<Vec<T>> {
    if items.is_empty() {
        Err(anyhow!("no {what} found"))
    } else {
        Ok(items)
    }
}

pub fn run_config(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let bytes = match &args.file {
        Some(path) => read_file(path)?,
        None => {
            let path = match args.kind {
                ConfigKind::Endpoint | ConfigKind::All => "/config_dump?include_eds",
                _ => "/config_dump",
            };
            runtime()?
                .block_on(fetch::admin_get(&args.admin, path, args.timeout))
                .context("could not read Envoy's config dump")?
        }
    };
    let source = args
        .file
        .as_ref()
        .map_or_else(|| args.admin.clone(), |p| p.display().to_string());
    let dump = Dump::from_json(&bytes).with_context(|| source.clone())?;
    print!("{}", render_config(&dump, &args, now())?);
    Ok(ExitCode::SUCCESS)
}

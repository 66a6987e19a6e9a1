//! istioctl's `proxy-config` tables of an Envoy config dump: clusters, listeners, route
//! configurations, endpoints and secrets, with istioctl's columns, filters, sort orders and
//! descriptions of matches and destinations. istiod's `filter_metadata["istio"].config` (which
//! bowline sets) gives the DESTINATION RULE and VIRTUAL SERVICE columns as `<name>.<namespace>`.

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::core::v3 as xds_core;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::table::Table;

const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
use crate::translate::naming::{
    BLACKHOLE_CLUSTER as BLACK_HOLE, PASSTHROUGH_CLUSTER as PASSTHROUGH,
};

/// A cluster name's parts, `<direction>|<port>|<subset>|<host>` (or the DNS SRV form
/// `outbound_.<port>_.<subset>_.<host>`): (direction, subset, host, port). A name of another
/// form is all host.
pub fn subset_key(name: &str) -> (&str, &str, &str, u32) {
    let sep = if name.starts_with("outbound_.") || name.starts_with("inbound_.") {
        "_."
    } else {
        "|"
    };
    let parts: Vec<&str> = name.splitn(4, sep).collect();
    match parts.as_slice() {
        [dir, port, subset, host] => (dir, subset, host, port.parse().unwrap_or(0)),
        _ => ("", "", name, 0),
    }
}

/// istioctl's order of clusters (and endpoint assignments): host, subset, port, direction.
fn cluster_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (ad, asub, ah, ap) = subset_key(a);
    let (bd, bsub, bh, bp) = subset_key(b);
    (ah, asub, ap, ad).cmp(&(bh, bsub, bp, bd))
}

/// The Istio resource that shaped a resource, from istiod's `filter_metadata["istio"].config`
/// (`/apis/networking.istio.io/<version>/namespaces/<ns>/<kind>/<name>`) as `<name>.<ns>`.
pub fn management(metadata: Option<&xds_core::Metadata>) -> String {
    let Some(istio) = metadata.and_then(|m| m.filter_metadata.get("istio")) else {
        return String::new();
    };
    let json = crate::envoy::struct_to_json(istio);
    let Some(path) = json.get("config").map(|c| c.as_str().unwrap_or_default()) else {
        return String::new();
    };
    if !path.starts_with("/apis/networking.istio.io/") {
        return "<unknown>".into();
    }
    let pieces: Vec<&str> = path.split('/').collect();
    if pieces.len() != 8 {
        return String::new();
    }
    format!("{}.{}", pieces[7], pieces[5])
}

#[derive(Debug, Default, Clone)]
pub struct ClusterFilter {
    pub fqdn: Option<String>,
    pub port: Option<u32>,
    pub subset: Option<String>,
    pub direction: Option<String>,
}

impl ClusterFilter {
    /// istioctl's filter: substrings of the whole name.
    fn keeps(&self, name: &str) -> bool {
        self.fqdn.as_deref().is_none_or(|f| name.contains(f))
            && self.direction.as_deref().is_none_or(|d| name.contains(d))
            && self.subset.as_deref().is_none_or(|s| name.contains(s))
            && self.port.is_none_or(|p| name.contains(&format!("|{p}|")))
    }
}

fn cluster_type(c: &xds_cluster::Cluster) -> &'static str {
    match &c.cluster_discovery_type {
        Some(xds_cluster::cluster::ClusterDiscoveryType::Type(t)) => {
            xds_cluster::cluster::DiscoveryType::try_from(*t)
                .map(|t| t.as_str_name())
                .unwrap_or("STATIC")
        }
        // A custom cluster type reads as the enum's zero value.
        _ => "STATIC",
    }
}

/// The clusters the filter keeps, in istioctl's order.
pub fn sorted_clusters(
    mut clusters: Vec<xds_cluster::Cluster>,
    filter: &ClusterFilter,
) -> Vec<xds_cluster::Cluster> {
    clusters.retain(|c| filter.keeps(&c.name));
    clusters.sort_by(|a, b| cluster_order(&a.name, &b.name));
    clusters
}

/// `SERVICE FQDN  PORT  SUBSET  DIRECTION  TYPE  DESTINATION RULE`; with `typed` (the `all`
/// view) a first column `NAME`, `cluster/<name>`, which a name of another form than
/// `<direction>|<port>|<subset>|<host>` also shows as its FQDN, as istioctl prints it.
pub fn cluster_table(clusters: &[xds_cluster::Cluster], typed: bool) -> Table {
    let mut t = Table::new(5);
    let mut header = vec![
        "SERVICE FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "TYPE",
        "DESTINATION RULE",
    ];
    if typed {
        header.insert(0, "NAME");
    }
    t.row(header);
    for c in clusters {
        let rule = management(c.metadata.as_ref());
        let kind = cluster_type(c).to_string();
        let typed_name = format!("cluster/{}", c.name);
        let mut row = if c.name.split('|').count() > 3 {
            let (direction, subset, host, port) = subset_key(&c.name);
            let subset = if subset.is_empty() { "-" } else { subset };
            vec![
                host.to_string(),
                port.to_string(),
                subset.to_string(),
                direction.to_string(),
                kind,
                rule,
            ]
        } else {
            let name = if typed && !c.name.is_empty() {
                typed_name.clone()
            } else {
                c.name.clone()
            };
            vec![name, "-".into(), "-".into(), "-".into(), kind, rule]
        };
        if typed {
            row.insert(0, typed_name);
        }
        t.row(row);
    }
    t
}

#[derive(Debug, Default, Clone)]
pub struct ListenerFilter {
    pub address: Option<String>,
    pub port: Option<u32>,
    pub kind: Option<String>,
}

fn socket_address(a: Option<&xds_core::Address>) -> Option<&xds_core::SocketAddress> {
    match a?.address.as_ref()? {
        xds_core::address::Address::SocketAddress(s) => Some(s),
        _ => None,
    }
}

fn port_value(s: &xds_core::SocketAddress) -> u32 {
    match s.port_specifier {
        Some(xds_core::socket_address::PortSpecifier::PortValue(p)) => p,
        _ => 0,
    }
}

fn listener_address(l: &xds_listener::Listener) -> String {
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(xds_core::address::Address::SocketAddress(s)) => s.address.clone(),
        Some(xds_core::address::Address::Pipe(p)) => p.path.clone(),
        _ => String::new(),
    }
}

fn listener_addresses(l: &xds_listener::Listener) -> Vec<String> {
    let mut out = vec![listener_address(l)];
    out.extend(l.additional_addresses.iter().map(|a| {
        socket_address(a.address.as_ref())
            .map(|s| s.address.clone())
            .unwrap_or_default()
    }));
    out
}

fn listener_port(l: &xds_listener::Listener) -> u32 {
    socket_address(l.address.as_ref()).map_or(0, port_value)
}

fn filter_chains(l: &xds_listener::Listener) -> Vec<&xds_listener::FilterChain> {
    l.filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref())
        .collect()
}

fn typed_config(f: &xds_listener::Filter) -> Option<&Any> {
    match f.config_type.as_ref()? {
        xds_listener::filter::ConfigType::TypedConfig(any) => Some(any),
        _ => None,
    }
}

/// A TCP proxy filter that does not send to the black hole.
fn forwards_tcp(f: &xds_listener::Filter) -> bool {
    f.name == TCP_PROXY
        && typed_config(f)
            .is_none_or(|a| memchr::memmem::find(&a.value, BLACK_HOLE.as_bytes()).is_none())
}

fn listener_type(l: &xds_listener::Listener) -> &'static str {
    let filters = filter_chains(l).into_iter().flat_map(|c| c.filters.iter());
    let (mut http, mut tcp) = (0, 0);
    for f in filters {
        if f.name == HTTP_CONNECTION_MANAGER {
            http += 1;
        } else if forwards_tcp(f) {
            tcp += 1;
        }
    }
    match (http > 0, tcp > 0) {
        (true, false) => "HTTP",
        (true, true) => "HTTP+TCP",
        (false, true) => "TCP",
        (false, false) => "UNKNOWN",
    }
}

impl ListenerFilter {
    fn keeps(&self, l: &xds_listener::Listener) -> bool {
        self.address.as_deref().is_none_or(|want| {
            listener_addresses(l)
                .iter()
                .any(|a| a.eq_ignore_ascii_case(want))
        }) && self.port.is_none_or(|p| listener_port(l) == p)
            && self
                .kind
                .as_deref()
                .is_none_or(|k| listener_type(l).eq_ignore_ascii_case(k))
    }
}

/// The listeners the filter keeps, in istioctl's order: port, address, type.
pub fn sorted_listeners(
    mut listeners: Vec<xds_listener::Listener>,
    filter: &ListenerFilter,
) -> Vec<xds_listener::Listener> {
    listeners.retain(|l| filter.keeps(l));
    listeners.sort_by(|a, b| {
        (listener_port(a), listener_address(a), listener_type(a)).cmp(&(
            listener_port(b),
            listener_address(b),
            listener_type(b),
        ))
    });
    listeners
}

/// Application protocols istioctl names.
const PROTOCOL_NAMES: &[(&str, &[&str])] = &[
    (
        "App: HTTP TLS",
        &[
            "http/1.0",
            "http/1.1",
            "h2c",
            "istio-http/1.0",
            "istio-http/1.1",
            "istio-h2",
        ],
    ),
    (
        "App: Istio HTTP Plain",
        &["istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
    ),
    ("App: TCP TLS", &["istio-peer-exchange", "istio"]),
    ("App: HTTP", &["http/1.0", "http/1.1", "h2c"]),
];

/// A filter chain match as istioctl describes it (`SNI: ..; Trans: ..; App: ..; Addr: ..`).
fn describe_chain_match(m: Option<&xds_listener::FilterChainMatch>) -> String {
    let default = xds_listener::FilterChainMatch::default();
    let m = m.unwrap_or(&default);
    let mut parts = Vec::new();
    if !m.server_names.is_empty() {
        parts.push(format!("SNI: {}", m.server_names.join(",")));
    }
    if !m.transport_protocol.is_empty() {
        parts.push(format!("Trans: {}", m.transport_protocol));
    }
    if !m.application_protocols.is_empty() {
        let named = PROTOCOL_NAMES
            .iter()
            .find(|(_, p)| m.application_protocols.iter().eq(p.iter()))
            .map(|(n, _)| n.to_string());
        parts.push(named.unwrap_or_else(|| format!("App: {}", m.application_protocols.join(","))));
    }
    let port = m
        .destination_port
        .map(|p| format!(":{}", p.value))
        .unwrap_or_default();
    if !m.prefix_ranges.is_empty() {
        let ranges: Vec<String> = m
            .prefix_ranges
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.address_prefix,
                    r.prefix_len.map(|p| p.value).unwrap_or(0)
                )
            })
            .collect();
        parts.push(format!("Addr: {}{port}", ranges.join(",")));
    } else if !port.is_empty() {
        parts.push(format!("Addr: *{port}"));
    }
    if parts.is_empty() {
        "ALL".into()
    } else {
        parts.join("; ")
    }
}

/// Where a chain's filters send traffic, as istioctl describes it.
fn describe_destination(filters: &[xds_listener::Filter]) -> String {
    for f in filters {
        if f.name == HTTP_CONNECTION_MANAGER {
            let manager = match typed_config(f)
                .map(|a| hcm::HttpConnectionManager::decode(a.value.as_slice()))
            {
                Some(Ok(m)) => m,
                Some(Err(e)) => return e.to_string(),
                None => hcm::HttpConnectionManager::default(),
            };
            return match manager.route_specifier {
                Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(r)) => {
                    describe_inline_routes(&r)
                }
                Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds))
                    if !rds.route_config_name.is_empty() =>
                {
                    format!("Route: {}", rds.route_config_name)
                }
                _ => "HTTP".into(),
            };
        } else if forwards_tcp(f) {
            let proxy = match typed_config(f).map(|a| tcp::TcpProxy::decode(a.value.as_slice())) {
                Some(Ok(p)) => p,
                Some(Err(e)) => return e.to_string(),
                None => tcp::TcpProxy::default(),
            };
            let cluster = match proxy.cluster_specifier {
                Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(c)) => c,
                _ => String::new(),
            };
            return if cluster.contains("Cluster") {
                cluster
            } else {
                format!("Cluster: {cluster}")
            };
        }
    }
    "Non-HTTP/Non-TCP".into()
}

fn route_cluster(r: &xds_route::Route) -> Option<&str> {
    match r.action.as_ref()? {
        xds_route::route::Action::Route(a) => match a.cluster_specifier.as_ref()? {
            xds_route::route_action::ClusterSpecifier::Cluster(c) => Some(c),
            _ => None,
        },
        _ => None,
    }
}

fn describe_inline_routes(r: &xds_route::RouteConfiguration) -> String {
    // One virtual host for every domain with one prefix-`/` route to a cluster: the cluster.
    if let [vh] = r.virtual_hosts.as_slice()
        && vh.domains == ["*"]
        && let [route] = vh.routes.as_slice()
        && matches!(
            route.r#match.as_ref().and_then(|m| m.path_specifier.as_ref()),
            Some(xds_route::route_match::PathSpecifier::Prefix(p)) if p == "/"
        )
        && let Some(cluster) = route_cluster(route)
    {
        return if cluster.contains("Cluster") {
            cluster.to_string()
        } else {
            format!("Cluster: {cluster}")
        };
    }
    let hosts: Vec<String> = r
        .virtual_hosts
        .iter()
        .map(|vh| {
            let routes: Vec<String> = vh
                .routes
                .iter()
                .map(|r| describe_match(r.r#match.as_ref()))
                .collect();
            let routes = routes.join(", ");
            if vh.domains == ["*"] {
                routes
            } else {
                format!("{} {routes}", vh.domains.join("/"))
            }
        })
        .collect();
    format!("Inline Route: {}", hosts.join("; "))
}

/// A route's match as istioctl describes it (`/prefix*`, the path, `regex ...`).
fn describe_match(m: Option<&xds_route::RouteMatch>) -> String {
    use xds_route::route_match::PathSpecifier;
    match m.and_then(|m| m.path_specifier.as_ref()) {
        Some(PathSpecifier::Prefix(p)) if !p.is_empty() => format!("{p}*"),
        Some(PathSpecifier::PathSeparatedPrefix(p)) if !p.is_empty() => {
            format!("PathPrefix:{p}")
        }
        Some(PathSpecifier::Path(p)) => p.clone(),
        Some(PathSpecifier::SafeRegex(r)) => format!("regex {}", r.regex),
        _ => String::new(),
    }
}

/// `ADDRESSES  PORT  MATCH  DESTINATION` (one row per filter chain), or with `verbose` off
/// `ADDRESSES  PORT  TYPE`; with `typed` (the `all` view) a first column `NAME`,
/// `listener/<name>`.
pub fn listener_table(listeners: &[xds_listener::Listener], verbose: bool, typed: bool) -> Table {
    let mut t = Table::new(1);
    let mut header = if verbose {
        vec!["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    } else {
        vec!["ADDRESSES", "PORT", "TYPE"]
    };
    if typed {
        header.insert(0, "NAME");
    }
    t.row(header);
    for l in listeners {
        let name = typed.then(|| format!("listener/{}", l.name));
        let mut row = |cells: Vec<String>| t.row(name.iter().cloned().chain(cells));
        let addresses = listener_addresses(l).join(",");
        let port = listener_port(l).to_string();
        if verbose {
            let mut chains: Vec<(String, String)> = filter_chains(l)
                .into_iter()
                .map(|c| {
                    (
                        describe_chain_match(c.filter_chain_match.as_ref()),
                        describe_destination(&c.filters),
                    )
                })
                .collect();
            // Destinations in reverse order, as istioctl sorts them.
            chains.sort_by(|a, b| b.1.cmp(&a.1));
            for (m, d) in chains {
                row(vec![addresses.clone(), port.clone(), m, d]);
            }
        } else {
            row(vec![addresses, port, listener_type(l).to_string()]);
        }
    }
    t
}

/// The route configurations named `name` (all without), numeric names first in numeric
/// order, then the others in the dump's order.
pub fn sorted_routes(
    mut routes: Vec<xds_route::RouteConfiguration>,
    name: Option<&str>,
) -> Vec<xds_route::RouteConfiguration> {
    routes.retain(|r| name.is_none_or(|n| r.name == n));
    routes.sort_by_key(|r| match r.name.parse::<i64>() {
        Ok(n) => (false, n),
        Err(_) => (true, 0),
    });
    routes
}

/// A virtual host's domains as istioctl shortens them: the one domain; else the domains
/// without a port, with `<host>.svc.cluster.local` and `<host>.svc` dropped when the shorter
/// form is listed, the first two and `+ N more...`.
pub fn describe_domains(domains: &[String]) -> String {
    match domains {
        [] => return String::new(),
        [one] => return one.clone(),
        _ => {}
    }
    let without_port: Vec<&str> = domains
        .iter()
        .map(String::as_str)
        .filter(|d| !d.contains(':') || (d.matches(':').count() > 2 && d.ends_with(']')))
        .collect();
    let listed: std::collections::HashSet<&str> = without_port.iter().copied().collect();
    let kept: Vec<&str> = without_port
        .iter()
        .copied()
        .filter(|d| {
            let full = d.strip_suffix(".svc.cluster.local");
            let partial = d.strip_suffix(".svc");
            !(full.is_some_and(|s| listed.contains(s))
                || partial.is_some_and(|s| listed.contains(s)))
        })
        .collect();
    if kept.len() > 2 {
        format!("{} + {} more...", kept[..2].join(", "), kept.len() - 2)
    } else {
        kept.join(", ")
    }
}

/// `NAME  VHOST NAME  DOMAINS  MATCH  VIRTUAL SERVICE` (one row per route; routes to the
/// passthrough cluster left out; a virtual host without routes answers 404), or with `verbose`
/// off `NAME  VIRTUAL HOSTS`; with `typed` (the `all` view) names are `route/<name>`.
pub fn route_table(routes: &[xds_route::RouteConfiguration], verbose: bool, typed: bool) -> Table {
    let mut t = Table::new(5);
    if verbose {
        t.row(["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]);
    } else {
        t.row(["NAME", "VIRTUAL HOSTS"]);
    }
    for r in routes {
        let name = if typed {
            format!("route/{}", r.name)
        } else {
            r.name.clone()
        };
        if !verbose {
            t.row([name, r.virtual_hosts.len().to_string()]);
            continue;
        }
        for vh in &r.virtual_hosts {
            let domains = describe_domains(&vh.domains);
            for route in &vh.routes {
                if route_cluster(route) == Some(PASSTHROUGH) {
                    continue;
                }
                t.row([
                    name.clone(),
                    vh.name.clone(),
                    domains.clone(),
                    describe_match(route.r#match.as_ref()),
                    management(route.metadata.as_ref()),
                ]);
            }
            if vh.routes.is_empty() {
                t.row([
                    name.clone(),
                    vh.name.clone(),
                    domains.clone(),
                    "/*".into(),
                    "404".into(),
                ]);
            }
        }
    }
    t
}

#[derive(Debug, Default, Clone)]
pub struct EndpointFilter {
    pub address: Option<String>,
    pub port: Option<u32>,
    pub cluster: Option<String>,
    pub status: Option<String>,
}

/// An endpoint's addresses as istioctl prints them (`ip:port`, a pipe's path, or
/// `envoy://<listener>/<id>`).
fn endpoint_addresses(ep: &xds_endpoint::LbEndpoint) -> Vec<String> {
    let Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) = &ep.host_identifier else {
        return vec!["unknown".into()];
    };
    let mut addresses = vec![e.address.as_ref()];
    addresses.extend(e.additional_addresses.iter().map(|a| a.address.as_ref()));
    addresses
        .into_iter()
        .map(|a| match a.and_then(|a| a.address.as_ref()) {
            Some(xds_core::address::Address::SocketAddress(s)) => {
                format!("{}:{}", s.address, port_value(s))
            }
            Some(xds_core::address::Address::Pipe(p)) => p.path.clone(),
            Some(xds_core::address::Address::EnvoyInternalAddress(i)) => {
                match &i.address_name_specifier {
                    Some(
                        xds_core::envoy_internal_address::AddressNameSpecifier::ServerListenerName(
                            n,
                        ),
                    ) => format!("envoy://{n}/{}", i.endpoint_id),
                    None => "unknown".into(),
                }
            }
            None => "unknown".into(),
        })
        .collect()
}

fn endpoint_port(ep: &xds_endpoint::LbEndpoint) -> u32 {
    match &ep.host_identifier {
        Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) => {
            socket_address(e.address.as_ref()).map_or(0, port_value)
        }
        _ => 0,
    }
}

fn health(ep: &xds_endpoint::LbEndpoint) -> String {
    xds_core::HealthStatus::try_from(ep.health_status)
        .map(|h| h.as_str_name().to_string())
        .unwrap_or_else(|_| ep.health_status.to_string())
}

impl EndpointFilter {
    fn keeps(&self, ep: &xds_endpoint::LbEndpoint, cluster: &str) -> bool {
        self.address.as_deref().is_none_or(|want| {
            endpoint_addresses(ep)
                .iter()
                .any(|a| a.eq_ignore_ascii_case(want))
        }) && self.port.is_none_or(|p| endpoint_port(ep) == p)
            && self
                .cluster
                .as_deref()
                .is_none_or(|c| c.eq_ignore_ascii_case(cluster))
            && self
                .status
                .as_deref()
                .is_none_or(|s| health(ep).eq_ignore_ascii_case(s))
    }
}

/// The assignments with the endpoints the filter keeps (assignments left empty dropped), in
/// istioctl's cluster order.
pub fn sorted_endpoints(
    assignments: Vec<xds_endpoint::ClusterLoadAssignment>,
    filter: &EndpointFilter,
) -> Vec<xds_endpoint::ClusterLoadAssignment> {
    let mut kept: Vec<_> = assignments
        .into_iter()
        .filter_map(|mut cla| {
            let name = cla.cluster_name.clone();
            for l in &mut cla.endpoints {
                l.lb_endpoints.retain(|ep| filter.keeps(ep, &name));
            }
            let any = cla.endpoints.iter().any(|l| !l.lb_endpoints.is_empty());
            any.then_some(cla)
        })
        .collect();
    kept.sort_by(|a, b| cluster_order(&a.cluster_name, &b.cluster_name));
    kept
}

fn locality(l: Option<&xds_core::Locality>) -> String {
    let Some(l) = l else {
        return String::new();
    };
    let mut out = l.region.clone();
    if l.zone.is_empty() {
        return out;
    }
    out.push('/');
    out.push_str(&l.zone);
    if l.sub_zone.is_empty() {
        return out;
    }
    out.push('/');
    out.push_str(&l.sub_zone);
    out
}

/// `NAME  STATUS  LOCALITY  CLUSTER`, one row per endpoint; with `typed` (the `all` view) names
/// are `endpoint/<address>`.
pub fn endpoint_table(assignments: &[xds_endpoint::ClusterLoadAssignment], typed: bool) -> Table {
    let mut t = Table::new(5);
    t.row(["NAME", "STATUS", "LOCALITY", "CLUSTER"]);
    for cla in assignments {
        for l in &cla.endpoints {
            for ep in &l.lb_endpoints {
                let address = endpoint_addresses(ep).join(",");
                t.row([
                    if typed {
                        format!("endpoint/{address}")
                    } else {
                        address
                    },
                    health(ep),
                    locality(l.locality.as_ref()),
                    cla.cluster_name.clone(),
                ]);
            }
        }
    }
    t
}

/// One secret as the secret table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretItem {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub valid: bool,
    pub serial: String,
    pub not_after: String,
    pub not_before: String,
    pub trust_domain: String,
}

/// The first certificate of a PEM text: its type (`CA` or `Cert Chain`), serial number (32
/// hex digits at least), validity (RFC 3339) and whether it is valid at `now`, and the trust
/// domain of its SPIFFE ID.
fn certificate_item(pem: &[u8], now: i64, item: &mut SecretItem) -> bool {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok(text) = std::str::from_utf8(pem) else {
        return false;
    };
    let Some(block) = crate::ca::pem::parse(text)
        .ok()
        .and_then(|b| b.into_iter().next())
    else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(&block.der) else {
        return false;
    };
    let serial: String = {
        let raw = cert.raw_serial();
        let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
        let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
        let hex = hex.trim_start_matches('0');
        format!("{hex:0>32}")
    };
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::URI(u) = n
                && let Some(rest) = u.strip_prefix("spiffe://")
            {
                item.trust_domain = rest.split('/').next().unwrap_or_default().to_string();
            }
        }
    }
    item.kind = if cert.is_ca() { "CA" } else { "Cert Chain" }.into();
    item.serial = serial;
    item.not_after = super::dump::rfc3339(not_after);
    item.not_before = super::dump::rfc3339(not_before);
    item.valid = now > not_before && now < not_after;
    true
}

fn inline_bytes(source: Option<&xds_core::DataSource>) -> Option<&[u8]> {
    match source?.specifier.as_ref()? {
        xds_core::data_source::Specifier::InlineBytes(b) if !b.is_empty() => Some(b),
        _ => None,
    }
}

/// The secrets of a dump (warming, then active), with what their certificates say.
pub fn secret_items(
    dump: &envoy_types::pb::envoy::admin::v3::SecretsConfigDump,
    now: i64,
) -> anyhow::Result<Vec<SecretItem>> {
    let warming = dump.dynamic_warming_secrets.iter().map(|s| (s, "WARMING"));
    let active = dump.dynamic_active_secrets.iter().map(|s| (s, "ACTIVE"));
    warming
        .chain(active)
        .map(|(s, state)| {
            let mut item = SecretItem {
                name: s.name.clone(),
                kind: String::new(),
                state: if state == "ACTIVE" && s.version_info == "uninitialized" {
                    "UNINITIALIZED".into()
                } else {
                    state.into()
                },
                valid: false,
                serial: String::new(),
                not_after: String::new(),
                not_before: String::new(),
                trust_domain: String::new(),
            };
            let secret: tls::Secret = match &s.secret {
                Some(any) => super::dump::unpack(any, &format!("secret {}", s.name))?,
                None => tls::Secret::default(),
            };
            let data = match &secret.r#type {
                Some(tls::secret::Type::TlsCertificate(c)) => {
                    inline_bytes(c.certificate_chain.as_ref())
                }
                Some(tls::secret::Type::ValidationContext(v)) => {
                    inline_bytes(v.trusted_ca.as_ref())
                }
                _ => None,
            };
            if let Some(pem) = data {
                certificate_item(pem, now, &mut item);
            }
            Ok(item)
        })
        .collect()
}

/// `RESOURCE NAME  TYPE  STATUS  VALID CERT  SERIAL NUMBER  NOT AFTER  NOT BEFORE`, and
/// `TRUST DOMAIN` when every secret names one; with `typed` (the `all` view) names are
/// `secret/<name>`.
pub fn secret_table(items: &[SecretItem], typed: bool) -> Table {
    let with_domain = items.iter().all(|s| !s.trust_domain.is_empty());
    let mut t = Table::new(5);
    let mut header = vec![
        "RESOURCE NAME",
        "TYPE",
        "STATUS",
        "VALID CERT",
        "SERIAL NUMBER",
        "NOT AFTER",
        "NOT BEFORE",
    ];
    if with_domain {
        header.push("TRUST DOMAIN");
    }
    t.row(header);
    for s in items {
        let mut row = vec![
            if typed {
                format!("secret/{}", s.name)
            } else {
                s.name.clone()
            },
            s.kind.clone(),
            s.state.clone(),
            s.valid.to_string(),
            s.serial.clone(),
            s.not_after.clone(),
            s.not_before.clone(),
        ];
        if with_domain {
            row.push(s.trust_domain.clone());
        }
        t.row(row);
    }
    t
}

/// The bootstrap's summary: `Istio Version`, `Istio Proxy Version` and `Envoy Version`, each
/// when known.
pub fn bootstrap_table(b: &envoy_types::pb::envoy::admin::v3::BootstrapConfigDump) -> Table {
    let node = b.bootstrap.as_ref().and_then(|b| b.node.as_ref());
    let meta = node
        .and_then(|n| n.metadata.as_ref())
        .map(crate::envoy::struct_to_json)
        .unwrap_or_default();
    let mut t = Table::new(1);
    if let Some(v) = meta.get("ISTIO_VERSION").and_then(|v| v.as_str())
        && !v.is_empty()
    {
        t.row(["Istio Version:", v]);
    }
    if let Some(sha) = meta.get("ISTIO_PROXY_SHA").and_then(|v| v.as_str())
        && !sha.is_empty()
    {
        let sha = sha.split_once(':').map_or(sha, |(_, s)| s);
        t.row(["Istio Proxy Version:", sha]);
    }
    if let Some(version) = node.and_then(envoy_version) {
        t.row(["Envoy Version:", version.as_str()]);
    }
    t
}

/// `<major>.<minor>.<patch>[-<label>]/<status>/<build type>/<ssl>` from the node's build
/// version, as istioctl prints it.
fn envoy_version(node: &xds_core::Node) -> Option<String> {
    let build = match node.user_agent_version_type.as_ref()? {
        xds_core::node::UserAgentVersionType::UserAgentBuildVersion(b) => b,
        _ => return None,
    };
    let v = build.version.as_ref()?;
    let meta = build
        .metadata
        .as_ref()
        .map(crate::envoy::struct_to_json)
        .unwrap_or_default();
    let text = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let mut out = format!("{}.{}.{}", v.major_number, v.minor_number, v.patch);
    let label = text("build.label");
    if !label.is_empty() {
        out.push_str(&format!("-{label}"));
    }
    out.push_str(&format!(
        "/{}/{}/{}",
        text("revision.status"),
        text("build.type"),
        text("ssl.version")
    ));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::UInt32Value;

    fn istio_metadata(path: &str) -> Option<xds_core::Metadata> {
        let mut m = serde_json::Map::new();
        m.insert("config".into(), path.into());
        let mut md = xds_core::Metadata::default();
        md.filter_metadata
            .insert("istio".into(), crate::envoy::json_to_struct(&m));
        Some(md)
    }

    fn cluster(name: &str, kind: xds_cluster::cluster::DiscoveryType) -> xds_cluster::Cluster {
        xds_cluster::Cluster {
            name: name.into(),
            cluster_discovery_type: Some(xds_cluster::cluster::ClusterDiscoveryType::Type(
                kind as i32,
            )),
            ..Default::default()
        }
    }

    #[test]
    fn cluster_rows_order_and_rules() {
        use xds_cluster::cluster::DiscoveryType;
        let mut v1 = cluster(
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            DiscoveryType::Eds,
        );
        v1.metadata = istio_metadata(
            "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews-dr",
        );
        let clusters = vec![
            cluster("PassthroughCluster", DiscoveryType::OriginalDst),
            v1,
            cluster(
                "outbound|9080||reviews.default.svc.cluster.local",
                DiscoveryType::Eds,
            ),
            cluster("inbound|8080||", DiscoveryType::Static),
            cluster("BlackHoleCluster", DiscoveryType::Static),
        ];
        let sorted = sorted_clusters(clusters.clone(), &ClusterFilter::default());
        assert_eq!(
            cluster_table(&sorted, false).render(),
            "\
SERVICE FQDN                          PORT     SUBSET     DIRECTION     TYPE             DESTINATION RULE
                                      8080     -          inbound       STATIC           
BlackHoleCluster                      -        -          -             STATIC           
PassthroughCluster                    -        -          -             ORIGINAL_DST     
reviews.default.svc.cluster.local     9080     -          outbound      EDS              
reviews.default.svc.cluster.local     9080     v1         outbound      EDS              reviews-dr.default
"
        );
        let only = ClusterFilter {
            subset: Some("v1".into()),
            port: Some(9080),
            ..Default::default()
        };
        assert_eq!(sorted_clusters(clusters, &only).len(), 1);
    }

    #[test]
    fn management_paths() {
        assert_eq!(management(None), "");
        assert_eq!(
            management(
                istio_metadata("/apis/networking.istio.io/v1/namespaces/shop/virtual-service/cart")
                    .as_ref()
            ),
            "cart.shop"
        );
        assert_eq!(
            management(istio_metadata("/apis/security.istio.io/v1/namespaces/a/x/y").as_ref()),
            "<unknown>"
        );
        assert_eq!(
            management(istio_metadata("/apis/networking.istio.io/v1/x").as_ref()),
            ""
        );
    }

    fn http_chain(m: xds_listener::FilterChainMatch, route: &str) -> xds_listener::FilterChain {
        let manager = hcm::HttpConnectionManager {
            route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                hcm::Rds {
                    route_config_name: route.into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        xds_listener::FilterChain {
            filter_chain_match: Some(m),
            filters: vec![xds_listener::Filter {
                name: HTTP_CONNECTION_MANAGER.into(),
                config_type: Some(xds_listener::filter::ConfigType::TypedConfig(
                    crate::envoy::pack(&manager),
                )),
            }],
            ..Default::default()
        }
    }

    fn tcp_chain(cluster: &str) -> xds_listener::FilterChain {
        let proxy = tcp::TcpProxy {
            stat_prefix: cluster.into(),
            cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        };
        xds_listener::FilterChain {
            filters: vec![xds_listener::Filter {
                name: TCP_PROXY.into(),
                config_type: Some(xds_listener::filter::ConfigType::TypedConfig(
                    crate::envoy::pack(&proxy),
                )),
            }],
            ..Default::default()
        }
    }

    fn listener(
        address: &str,
        port: u32,
        chains: Vec<xds_listener::FilterChain>,
    ) -> xds_listener::Listener {
        xds_listener::Listener {
            name: format!("{address}_{port}"),
            address: Some(xds_core::Address {
                address: Some(xds_core::address::Address::SocketAddress(
                    xds_core::SocketAddress {
                        address: address.into(),
                        port_specifier: Some(xds_core::socket_address::PortSpecifier::PortValue(
                            port,
                        )),
                        ..Default::default()
                    },
                )),
            }),
            filter_chains: chains,
            ..Default::default()
        }
    }

    #[test]
    fn listener_rows_describe_matches_and_destinations() {
        let virtual_inbound = listener(
            "0.0.0.0",
            15006,
            vec![
                tcp_chain("BlackHoleCluster"),
                http_chain(
                    xds_listener::FilterChainMatch {
                        destination_port: Some(UInt32Value { value: 8080 }),
                        transport_protocol: "raw_buffer".into(),
                        application_protocols: vec![
                            "http/1.0".into(),
                            "http/1.1".into(),
                            "h2c".into(),
                        ],
                        ..Default::default()
                    },
                    "inbound|8080||",
                ),
            ],
        );
        let outbound = listener(
            "0.0.0.0",
            9080,
            vec![
                http_chain(Default::default(), "9080"),
                tcp_chain("outbound|9080||db"),
            ],
        );
        let sorted = sorted_listeners(vec![virtual_inbound, outbound], &ListenerFilter::default());
        assert_eq!(
            listener_table(&sorted, true, false).render(),
            "\
ADDRESSES PORT  MATCH                                      DESTINATION
0.0.0.0   9080  ALL                                        Route: 9080
0.0.0.0   9080  ALL                                        Cluster: outbound|9080||db
0.0.0.0   15006 Trans: raw_buffer; App: HTTP; Addr: *:8080 Route: inbound|8080||
0.0.0.0   15006 ALL                                        Non-HTTP/Non-TCP
"
        );
        assert_eq!(
            listener_table(&sorted, false, false).render(),
            "ADDRESSES PORT  TYPE\n0.0.0.0   9080  HTTP+TCP\n0.0.0.0   15006 HTTP\n"
        );
        let tcp_only = ListenerFilter {
            kind: Some("http".into()),
            port: Some(15006),
            ..Default::default()
        };
        assert_eq!(sorted_listeners(sorted, &tcp_only).len(), 1);
    }

    #[test]
    fn domains_are_shortened_as_istioctl_does() {
        let d = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(describe_domains(&d(&["*"])), "*");
        assert_eq!(
            describe_domains(&d(&[
                "reviews.default.svc.cluster.local",
                "reviews.default.svc.cluster.local:9080",
                "reviews",
                "reviews:9080",
                "reviews.default.svc",
                "reviews.default",
                "10.0.0.1",
            ])),
            // The long forms of a listed short name go; three remain.
            "reviews, reviews.default + 1 more..."
        );
        assert_eq!(
            describe_domains(&d(&["a.b.svc.cluster.local", "a.b", "a.b:80"])),
            "a.b"
        );
    }

    #[test]
    fn route_rows() {
        let route = |prefix: &str, cluster: &str, vs: Option<&str>| xds_route::Route {
            r#match: Some(xds_route::RouteMatch {
                path_specifier: Some(xds_route::route_match::PathSpecifier::Prefix(prefix.into())),
                ..Default::default()
            }),
            action: Some(xds_route::route::Action::Route(xds_route::RouteAction {
                cluster_specifier: Some(xds_route::route_action::ClusterSpecifier::Cluster(
                    cluster.into(),
                )),
                ..Default::default()
            })),
            metadata: vs.and_then(istio_metadata),
            ..Default::default()
        };
        let routes = vec![
            xds_route::RouteConfiguration {
                name: "9080".into(),
                virtual_hosts: vec![
                    xds_route::VirtualHost {
                        name: "reviews.default.svc.cluster.local:9080".into(),
                        domains: vec!["reviews.default.svc.cluster.local".into(), "reviews".into()],
                        routes: vec![route(
                            "/",
                            "outbound|9080|v1|reviews.default.svc.cluster.local",
                            Some(
                                "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews-vs",
                            ),
                        )],
                        ..Default::default()
                    },
                    xds_route::VirtualHost {
                        name: "allow_any".into(),
                        domains: vec!["*".into()],
                        routes: vec![route("/", PASSTHROUGH, None)],
                        ..Default::default()
                    },
                    xds_route::VirtualHost {
                        name: "block_all".into(),
                        domains: vec!["*".into()],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            xds_route::RouteConfiguration {
                name: "80".into(),
                ..Default::default()
            },
        ];
        let sorted = sorted_routes(routes, None);
        assert_eq!(sorted[0].name, "80");
        assert_eq!(
            route_table(&sorted, true, false).render(),
            "\
NAME     VHOST NAME                                 DOMAINS                                        MATCH     VIRTUAL SERVICE
9080     reviews.default.svc.cluster.local:9080     reviews.default.svc.cluster.local, reviews     /*        reviews-vs.default
9080     block_all                                  *                                              /*        404
"
        );
        assert_eq!(
            route_table(&sorted, false, false).render(),
            "NAME     VIRTUAL HOSTS\n80       0\n9080     3\n"
        );
    }

    #[test]
    fn endpoint_rows_and_filters() {
        let ep = |ip: &str, port: u32, health: xds_core::HealthStatus| xds_endpoint::LbEndpoint {
            host_identifier: Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(
                xds_endpoint::Endpoint {
                    address: listener(ip, port, vec![]).address,
                    ..Default::default()
                },
            )),
            health_status: health as i32,
            ..Default::default()
        };
        let cla = |name: &str, eps| xds_endpoint::ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![xds_endpoint::LocalityLbEndpoints {
                locality: Some(xds_core::Locality {
                    region: "eu".into(),
                    zone: "a".into(),
                    ..Default::default()
                }),
                lb_endpoints: eps,
                ..Default::default()
            }],
            ..Default::default()
        };
        let all = vec![
            cla(
                "outbound|80||web.default.svc.cluster.local",
                vec![
                    ep("10.0.0.2", 8080, xds_core::HealthStatus::Healthy),
                    ep("10.0.0.3", 8080, xds_core::HealthStatus::Unhealthy),
                ],
            ),
            cla(
                "outbound|80||api.default.svc.cluster.local",
                vec![ep("10.0.0.4", 80, xds_core::HealthStatus::Healthy)],
            ),
        ];
        let sorted = sorted_endpoints(all.clone(), &EndpointFilter::default());
        assert_eq!(
            endpoint_table(&sorted, false).render(),
            "\
NAME              STATUS        LOCALITY     CLUSTER
10.0.0.4:80       HEALTHY       eu/a         outbound|80||api.default.svc.cluster.local
10.0.0.2:8080     HEALTHY       eu/a         outbound|80||web.default.svc.cluster.local
10.0.0.3:8080     UNHEALTHY     eu/a         outbound|80||web.default.svc.cluster.local
"
        );
        let unhealthy = EndpointFilter {
            status: Some("unhealthy".into()),
            ..Default::default()
        };
        let kept = sorted_endpoints(all, &unhealthy);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].endpoints[0].lb_endpoints.len(), 1);
    }

    #[test]
    fn secret_rows_read_the_certificates() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/default/sa/web"
                .try_into()
                .unwrap(),
        )];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x2a]));
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_000_000_000).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(4_000_000_000).unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let secret = tls::Secret {
            name: "default".into(),
            r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
                certificate_chain: Some(xds_core::DataSource {
                    specifier: Some(xds_core::data_source::Specifier::InlineBytes(
                        pem.into_bytes(),
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        let dump = envoy_types::pb::envoy::admin::v3::SecretsConfigDump {
            dynamic_active_secrets: vec![
                envoy_types::pb::envoy::admin::v3::secrets_config_dump::DynamicSecret {
                    name: "default".into(),
                    version_info: "v1".into(),
                    secret: Some(crate::envoy::pack(&secret)),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let items = secret_items(&dump, 2_000_000_000).unwrap();
        assert_eq!(
            secret_table(&items, false).render(),
            "\
RESOURCE NAME     TYPE           STATUS     VALID CERT     SERIAL NUMBER                        NOT AFTER                NOT BEFORE               TRUST DOMAIN
default           Cert Chain     ACTIVE     true           0000000000000000000000000000002a     2096-10-02T07:06:40Z     2001-09-09T01:46:40Z     cluster.local
"
        );
        let expired = secret_items(&dump, 4_000_000_001).unwrap();
        assert!(!expired[0].valid);
    }
}

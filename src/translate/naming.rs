//! Every Envoy name bowline generates, in istiod's forms, so `istioctl proxy-config` habits
//! carry over.

pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
pub const PASSTHROUGH_FILTER_CHAIN: &str = "PassthroughFilterChain";
pub const ALLOW_ANY_VHOST: &str = "allow_any";
pub const BLOCK_ALL_VHOST: &str = "block_all";
/// SDS secret with the proxy's own certificate chain and key (istiod's name).
pub const SDS_DEFAULT: &str = "default";
/// SDS secret with the mesh's trust bundle (istiod's name).
pub const SDS_ROOTCA: &str = "ROOTCA";
/// Source address of connections from the sidecar to its own workload, excluded from capture.
pub const INBOUND_PASSTHROUGH_BIND_V4: &str = "127.0.0.6";

/// `outbound|<port>|<subset>|<host>`.
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// The port, subset and host of an `outbound|<port>|<subset>|<host>` name.
pub fn parse_outbound_cluster(name: &str) -> Option<(u16, &str, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some((port, subset, host))
}

/// istiod's SNI for mTLS to a cluster: `outbound_.<port>_.<subset>_.<host>`.
pub fn outbound_sni(port: u16, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// istiod's DNS cache of a dynamic forward proxy service: its cluster and the listener filters
/// that resolve for it name the same cache, so Envoy shares it.
pub fn dns_cache(host: &str) -> String {
    format!("{host}_dfp_dns_cache")
}

/// `inbound|<port>||`.
pub fn inbound_cluster(port: u16) -> String {
    format!("inbound|{port}||")
}

/// `<ip>_<port>`.
pub fn listener(address: &str, port: u16) -> String {
    format!("{address}_{port}")
}

/// Route configurations are named by port.
pub fn route_config(port: u16) -> String {
    port.to_string()
}

/// Virtual hosts are `<host>:<port>`.
pub fn virtual_host(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// The inbound route configuration of a port.
pub fn inbound_route_config(port: u16) -> String {
    format!("inbound|{port}||")
}

/// Statistics prefix of an outbound TCP proxy or connection manager: the cluster name.
pub fn stat_prefix(cluster: &str) -> String {
    cluster.to_string()
}

/// Names of the filters authorization and request authentication insert (Envoy's own names, as
/// istiod uses them).
pub const RBAC_HTTP_FILTER: &str = "envoy.filters.http.rbac";
pub const RBAC_NETWORK_FILTER: &str = "envoy.filters.network.rbac";
pub const EXT_AUTHZ_HTTP_FILTER: &str = "envoy.filters.http.ext_authz";
pub const EXT_AUTHZ_NETWORK_FILTER: &str = "envoy.filters.network.ext_authz";
pub const JWT_AUTHN_FILTER: &str = "envoy.filters.http.jwt_authn";
/// Stat prefix of network RBAC and ext_authz filters.
pub const RBAC_TCP_STAT_PREFIX: &str = "tcp.";
/// Shadow-rule stat prefixes: dry-run ALLOW and DENY policies, and CUSTOM policies (whose RBAC
/// filter only marks the requests ext_authz must check).
pub const RBAC_DRY_RUN_ALLOW_PREFIX: &str = "istio_dry_run_allow_";
pub const RBAC_DRY_RUN_DENY_PREFIX: &str = "istio_dry_run_deny_";
pub const RBAC_EXT_AUTHZ_PREFIX: &str = "istio_ext_authz_";
/// Dynamic metadata key the RBAC filter sets to the matching shadow policy's name.
pub const RBAC_SHADOW_EFFECTIVE_POLICY_ID: &str = "shadow_effective_policy_id";
/// Prefix of the RBAC policy names of CUSTOM policies.
pub const EXT_AUTHZ_POLICY_PREFIX: &str = "istio-ext-authz";
/// Suffix of the deny-everything policies standing in for a CUSTOM policy that cannot be built.
pub const BAD_CUSTOM_ACTION_SUFFIX: &str = "-deny-due-to-bad-CUSTOM-action";

/// RBAC policy name of one rule of an AuthorizationPolicy:
/// `[istio-ext-authz-<provider>-]ns[<namespace>]-policy[<name>]-rule[<index>]`.
pub fn rbac_policy(namespace: &str, name: &str, rule: usize, provider: Option<&str>) -> String {
    let prefix = match provider {
        Some(p) => format!("{EXT_AUTHZ_POLICY_PREFIX}-{p}-"),
        None => String::new(),
    };
    format!("{prefix}ns[{namespace}]-policy[{name}]-rule[{rule}]")
}

/// jwt_authn provider name of the `index`-th JWT rule (rules sorted by issuer).
pub fn jwt_provider(index: usize) -> String {
    format!("origins-{index}")
}

/// Workload identities are SPIFFE IDs: `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`.
pub const SPIFFE_PREFIX: &str = "spiffe://";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_cluster_round_trip() {
        let name = outbound_cluster(9080, "v1", "reviews.default.svc.cluster.local");
        assert_eq!(
            parse_outbound_cluster(&name),
            Some((9080, "v1", "reviews.default.svc.cluster.local"))
        );
        assert_eq!(parse_outbound_cluster("inbound|80||"), None);
        assert_eq!(parse_outbound_cluster("outbound|x||a"), None);
        assert_eq!(parse_outbound_cluster(PASSTHROUGH_CLUSTER), None);
    }
}

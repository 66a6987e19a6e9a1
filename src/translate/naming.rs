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

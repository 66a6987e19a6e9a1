//! `bowline proxy-status`: istioctl's table of the proxies' sync state, from bowline's answer
//! to `istio.io/debug/syncz` (one `ClientConfig` per proxy): sorted by proxy, the control
//! plane and the proxy's Istio version, and per type SYNCED, STALE, ERROR (after a NACK) or
//! NOT SENT, with how long ago it was sent (`SYNCED (5m2s)`); IGNORED for a type the proxy
//! does not use.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::envoy::service::status::v3 as csds;
use prost::Message;

use super::table::Table;
use crate::envoy::ResourceType;

const CDS: &str = ResourceType::Cds.type_url();
const LDS: &str = ResourceType::Lds.type_url();
const EDS: &str = ResourceType::Eds.type_url();
const RDS: &str = ResourceType::Rds.type_url();
/// Extension configs (ECDS), which bowline does not serve but istioctl lists.
const ECDS: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
const IGNORED: &str = "IGNORED";

/// The short name of a type (`CDS`, ...), or its URL.
fn short_type(url: &str) -> String {
    match ResourceType::from_type_url(url) {
        Some(t) => t.as_str().to_ascii_uppercase(),
        None if url == ECDS => "ECDS".to_string(),
        None => url.to_string(),
    }
}

/// One proxy's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRow {
    pub proxy: String,
    pub cluster: String,
    pub istiod: String,
    pub version: String,
    /// Type URL → status text.
    pub types: BTreeMap<String, String>,
}

/// How long ago, as Kubernetes prints ages (`45s`, `5m2s`, `3h10m`, `2d4h`, ...).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn status_text(c: &csds::client_config::GenericXdsConfig, now: i64) -> String {
    match csds::ConfigStatus::try_from(c.config_status) {
        Ok(csds::ConfigStatus::Unknown) => IGNORED.into(),
        Ok(csds::ConfigStatus::NotSent) => "NOT SENT".into(),
        status => {
            let name = status.map_or_else(
                |_| c.config_status.to_string(),
                |s| s.as_str_name().to_string(),
            );
            match &c.last_updated {
                Some(t) => format!("{name} ({})", human_duration(now - t.seconds)),
                None => name,
            }
        }
    }
}

/// The control plane's instance, from istiod's identifier JSON (`{"ID": ...}`).
fn istiod_id(response: &xds_discovery::DiscoveryResponse) -> String {
    let identifier = response
        .control_plane
        .as_ref()
        .map(|c| c.identifier.as_str())
        .unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(identifier)
        .ok()
        .and_then(|v| v.get("ID")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The proxies of a syncz answer (those of `namespace` only, when given), sorted by id.
pub fn rows(
    response: &xds_discovery::DiscoveryResponse,
    namespace: Option<&str>,
    now: i64,
) -> anyhow::Result<Vec<ProxyRow>> {
    let istiod = istiod_id(response);
    let mut out = Vec::new();
    for any in &response.resources {
        let c = csds::ClientConfig::decode(any.value.as_slice()).with_context(|| {
            format!("a syncz resource ({}) is not a ClientConfig", any.type_url)
        })?;
        let node = c.node.clone().unwrap_or_default();
        let meta = node
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
        if namespace.is_some_and(|ns| text("NAMESPACE") != ns) {
            continue;
        }
        out.push(ProxyRow {
            proxy: node.id,
            cluster: text("CLUSTER_ID"),
            istiod: istiod.clone(),
            version: text("ISTIO_VERSION"),
            types: c
                .generic_xds_configs
                .iter()
                .map(|g| (g.type_url.clone(), status_text(g, now)))
                .collect(),
        });
    }
    out.sort_by(|a, b| a.proxy.cmp(&b.proxy));
    Ok(out)
}

/// The table: `NAME  CLUSTER  ISTIOD  VERSION  SUBSCRIBED TYPES` (`4 (CDS,LDS,EDS,RDS)`), or
/// with `verbose` one column per type (every type seen and CDS, ECDS, EDS, LDS, RDS, by type
/// URL) between CLUSTER and ISTIOD.
pub fn status_table(rows: &[ProxyRow], verbose: bool) -> Table {
    let seen: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.types.keys().map(String::as_str))
        .collect();
    let mut t = Table::new(5);
    if verbose {
        let mut all = seen.clone();
        all.extend([CDS, LDS, EDS, RDS, ECDS]);
        let mut header = vec!["NAME".to_string(), "CLUSTER".to_string()];
        header.extend(all.iter().map(|u| short_type(u)));
        header.extend(["ISTIOD".to_string(), "VERSION".to_string()]);
        t.row(header);
        for r in rows {
            let mut row = vec![r.proxy.clone(), r.cluster.clone()];
            row.extend(
                all.iter()
                    .map(|u| r.types.get(*u).cloned().unwrap_or_else(|| IGNORED.into())),
            );
            row.extend([r.istiod.clone(), r.version.clone()]);
            t.row(row);
        }
        return t;
    }
    // The core types in their usual order, then the others by URL.
    let core = [CDS, LDS, EDS, RDS];
    let order: Vec<&str> = core
        .iter()
        .copied()
        .filter(|u| seen.contains(u))
        .chain(seen.iter().copied().filter(|u| !core.contains(u)))
        .collect();
    t.row(["NAME", "CLUSTER", "ISTIOD", "VERSION", "SUBSCRIBED TYPES"]);
    for r in rows {
        let subscribed: Vec<String> = order
            .iter()
            .filter(|u| r.types.get(**u).is_some_and(|s| s != IGNORED))
            .map(|u| short_type(u))
            .collect();
        let types = if subscribed.is_empty() {
            "0".to_string()
        } else {
            format!("{} ({})", subscribed.len(), subscribed.join(","))
        };
        t.row([
            r.proxy.clone(),
            r.cluster.clone(),
            r.istiod.clone(),
            r.version.clone(),
            types,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3 as xds_core;
    use envoy_types::pb::google::protobuf::Timestamp;

    #[test]
    fn durations_as_kubernetes_prints_them() {
        for (s, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (302, "5m2s"),
            (300, "5m"),
            (4000, "66m"),
            (3 * 3600 + 600, "3h10m"),
            (20 * 3600, "20h"),
            (52 * 3600, "2d4h"),
            (30 * 86_400, "30d"),
            (3 * 365 * 86_400 + 86_400, "3y1d"),
            (10 * 365 * 86_400, "10y"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    fn client(
        id: &str,
        ns: &str,
        types: &[(&str, csds::ConfigStatus, Option<i64>)],
    ) -> csds::ClientConfig {
        let mut meta = serde_json::Map::new();
        meta.insert("CLUSTER_ID".into(), "Kubernetes".into());
        meta.insert("NAMESPACE".into(), ns.into());
        meta.insert("ISTIO_VERSION".into(), "1.31.0".into());
        csds::ClientConfig {
            node: Some(xds_core::Node {
                id: id.into(),
                metadata: Some(crate::envoy::json_to_struct(&meta)),
                ..Default::default()
            }),
            generic_xds_configs: types
                .iter()
                .map(|(t, s, at)| csds::client_config::GenericXdsConfig {
                    type_url: t.to_string(),
                    config_status: *s as i32,
                    last_updated: at.map(|seconds| Timestamp { seconds, nanos: 0 }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn response() -> xds_discovery::DiscoveryResponse {
        use csds::ConfigStatus::*;
        xds_discovery::DiscoveryResponse {
            resources: vec![
                crate::envoy::pack(&client(
                    "web-0.shop",
                    "shop",
                    &[(CDS, Error, Some(990)), (LDS, NotSent, None)],
                )),
                crate::envoy::pack(&client(
                    "client-0.default",
                    "default",
                    &[
                        (CDS, Synced, Some(995)),
                        (EDS, Synced, Some(995)),
                        (LDS, Synced, Some(700)),
                        (RDS, Stale, Some(1000)),
                    ],
                )),
            ],
            control_plane: Some(xds_core::ControlPlane {
                identifier: r#"{"Component":"istiod","ID":"bowline-0","Info":{}}"#.into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn default_table_lists_subscribed_types() {
        let rows = rows(&response(), None, 1000).unwrap();
        assert_eq!(
            status_table(&rows, false).render(),
            "\
NAME                 CLUSTER        ISTIOD        VERSION     SUBSCRIBED TYPES
client-0.default     Kubernetes     bowline-0     1.31.0      4 (CDS,LDS,EDS,RDS)
web-0.shop           Kubernetes     bowline-0     1.31.0      2 (CDS,LDS)
"
        );
    }

    #[test]
    fn verbose_table_has_a_column_per_type() {
        let rows = rows(&response(), None, 1000).unwrap();
        assert_eq!(
            status_table(&rows, true).render(),
            "\
NAME                 CLUSTER        CDS             ECDS        EDS             LDS             RDS            ISTIOD        VERSION
client-0.default     Kubernetes     SYNCED (5s)     IGNORED     SYNCED (5s)     SYNCED (5m)     STALE (0s)     bowline-0     1.31.0
web-0.shop           Kubernetes     ERROR (10s)     IGNORED     IGNORED         NOT SENT        IGNORED        bowline-0     1.31.0
"
        );
        let shop = super::rows(&response(), Some("shop"), 1000).unwrap();
        assert_eq!(shop.len(), 1);
        assert_eq!(shop[0].proxy, "web-0.shop");
    }
}

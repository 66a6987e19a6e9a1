//! The proxy's own workload: the WorkloadEntry or Pod a proxy runs as, found as istiod finds it,
//! and the ports of that workload its services deliver to (its inbound ports).

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::Model;
use super::kube;
use super::networking;
use super::proxy::{PodPort, Proxy};
use super::registry::{Port, to_port};
use super::resource::{Resource, Spec};

/// The ports of a proxy's own workload that its service ports are delivered to, found as
/// istiod finds them: the WorkloadEntry with the proxy's address, else the proxy's Pod (named by
/// the node id), else the container ports the proxy reports (`POD_PORTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum WorkloadPorts {
    /// The workload is not known.
    #[default]
    Unknown,
    /// A WorkloadEntry's `ports`.
    WorkloadEntry(BTreeMap<String, u32>),
    /// A pod's named container ports.
    Pod(Vec<PodPort>),
}

impl WorkloadPorts {
    /// The ports of `proxy`'s workload in `model`.
    pub fn of(model: &Model, proxy: &Proxy) -> WorkloadPorts {
        if let Some(we) = workload_entry_for(model, proxy) {
            return WorkloadPorts::WorkloadEntry(we.ports.clone());
        }
        let pod = proxy
            .pod_key()
            .and_then(|(namespace, name)| model.index().pod(namespace, name))
            .and_then(|p| model.resources.get(p))
            .and_then(|r| match &r.spec {
                Spec::Pod(pod) => Some(pod),
                _ => None,
            });
        match pod {
            Some(pod) => WorkloadPorts::Pod(
                pod.spec
                    .ports()
                    .filter_map(|p| {
                        Some(PodPort {
                            name: p.name.clone().filter(|n| !n.is_empty())?,
                            protocol: kube::l4_protocol(p.protocol.as_deref()),
                            number: to_port(p.container_port?)?,
                        })
                    })
                    .collect(),
            ),
            None if !proxy.pod_ports.is_empty() => WorkloadPorts::Pod(proxy.pod_ports.clone()),
            None => WorkloadPorts::Unknown,
        }
    }

    /// The workload port `port` of a service selecting the workload delivers to; `None` when
    /// the workload does not serve it: a named target port the workload has no port of that
    /// name (and L4 protocol) for, or the workload is unknown.
    pub fn target(&self, port: &Port) -> Option<u16> {
        match (self, &port.target_port_name) {
            (WorkloadPorts::WorkloadEntry(ports), _) => port.workload_entry_target(ports),
            (WorkloadPorts::Pod(ports), Some(target)) => ports
                .iter()
                .find(|p| p.name == target.name && p.protocol == target.protocol)
                .map(|p| p.number),
            (WorkloadPorts::Unknown, Some(_)) => None,
            (_, None) => Some(port.target_port.unwrap_or(port.number)),
        }
    }
}

/// The WorkloadEntry a proxy runs as, as istiod picks it: those with (labels and) the proxy's
/// first address; of several, the one named like the proxy, else one in its namespace, else the
/// first by namespace and name.
fn workload_entry_for<'a>(
    model: &'a Model,
    proxy: &Proxy,
) -> Option<&'a networking::WorkloadEntry> {
    let ip = proxy.ip_addresses.first()?;
    let mut found: Vec<(&Resource, &networking::WorkloadEntry)> = model
        .index()
        .workload_entries_at(ip)
        .iter()
        .filter_map(|p| model.resources.get(*p))
        .filter_map(|r| match &r.spec {
            Spec::WorkloadEntry(we) if !we.labels.is_empty() => Some((r.as_ref(), we.as_ref())),
            _ => None,
        })
        .collect();
    found.sort_by(|(a, _), (b, _)| {
        (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name))
    });
    if found.len() > 1 {
        let named = proxy.pod_key().and_then(|(namespace, name)| {
            found
                .iter()
                .find(|(r, _)| r.meta.namespace == namespace && r.meta.name == name)
        });
        let same_namespace = || {
            found
                .iter()
                .find(|(r, _)| r.meta.namespace == proxy.namespace)
        };
        if let Some((_, we)) = named.or_else(same_namespace) {
            return Some(we);
        }
    }
    found.first().map(|(_, we)| *we)
}

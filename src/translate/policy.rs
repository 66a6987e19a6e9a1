//! The traffic policy in force for one cluster, resolved from a DestinationRule as istiod
//! resolves it: the rule-wide `trafficPolicy`, replaced wholesale by its `portLevelSettings`
//! entry for the cluster's port; for a subset cluster, the subset's `trafficPolicy` (again
//! narrowed to its port-level entry) overrides that field by field — or wholesale, when the
//! subset has a port-level entry for the port.
//!
//! Every part remembers the rule and field path it came from, so translation can report
//! problems against the right resource.

use envoy_types::pb::google::protobuf as pb;

use super::scope::{Rule, RuleSubset, Scope};
use crate::model::networking::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
    ProxyProtocol, RetryBudget, TrafficPolicy, TunnelSettings,
};
use crate::model::{Diagnostic, Resource};

/// A policy part with the resource and field it was read from.
#[derive(Debug, Clone)]
pub struct At<'a, T> {
    pub value: &'a T,
    pub resource: &'a Resource,
    /// Field path of `value`, e.g. `spec.subsets[0].trafficPolicy.loadBalancer`.
    pub path: String,
}

impl<T> At<'_, T> {
    /// An error about a field below this part.
    pub fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        self.resource.diagnostic(self.field(field), message)
    }

    /// A warning about a field below this part.
    pub fn warning(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        let mut d = self.error(field, message);
        d.severity = crate::model::Severity::Warning;
        d
    }

    /// Parses a duration field below this part; a bad value is reported and treated as unset.
    pub fn duration(
        &self,
        scope: &Scope,
        field: &str,
        value: Option<&String>,
    ) -> Option<pb::Duration> {
        match crate::model::networking::parse_duration(value?) {
            Ok(d) => Some(super::values::proto_duration(d)),
            Err(e) => {
                scope.report(self.error(field, e));
                None
            }
        }
    }

    fn field(&self, field: &str) -> String {
        if field.is_empty() {
            self.path.clone()
        } else {
            format!("{}.{field}", self.path)
        }
    }
}

/// The effective traffic policy of one cluster; every part optional.
#[derive(Debug, Clone, Default)]
pub struct Policy<'a> {
    pub connection_pool: Option<At<'a, ConnectionPoolSettings>>,
    pub outlier_detection: Option<At<'a, OutlierDetection>>,
    pub load_balancer: Option<At<'a, LoadBalancerSettings>>,
    pub tls: Option<At<'a, ClientTlsSettings>>,
    pub tunnel: Option<At<'a, TunnelSettings>>,
    pub proxy_protocol: Option<At<'a, ProxyProtocol>>,
    pub retry_budget: Option<At<'a, RetryBudget>>,
}

fn at<'a, T>(value: &'a Option<T>, resource: &'a Resource, path: String) -> Option<At<'a, T>> {
    value.as_ref().map(|value| At {
        value,
        resource,
        path,
    })
}

/// istiod's `GetPortLevelTrafficPolicy`: the `portLevelSettings` entry for `port` replaces the
/// whole policy (its unset parts fall back to defaults, not to the rule-wide values; tunnel,
/// proxyProtocol and retryBudget are dropped); without one, the policy as written. The flag
/// tells whether a port-level entry was used.
fn for_port<'a>(
    resource: &'a Resource,
    path: &str,
    tp: &'a TrafficPolicy,
    port: u16,
) -> (Policy<'a>, bool) {
    let found = tp.port_level_settings.iter().enumerate().find(|(_, p)| {
        p.port
            .as_ref()
            .is_some_and(|sel| sel.number == u32::from(port))
    });
    match found {
        Some((i, pl)) => {
            let base = format!("{path}.portLevelSettings[{i}]");
            (
                Policy {
                    connection_pool: at(
                        &pl.connection_pool,
                        resource,
                        format!("{base}.connectionPool"),
                    ),
                    outlier_detection: at(
                        &pl.outlier_detection,
                        resource,
                        format!("{base}.outlierDetection"),
                    ),
                    load_balancer: at(&pl.load_balancer, resource, format!("{base}.loadBalancer")),
                    tls: at(&pl.tls, resource, format!("{base}.tls")),
                    tunnel: None,
                    proxy_protocol: None,
                    retry_budget: None,
                },
                true,
            )
        }
        None => (
            Policy {
                connection_pool: at(
                    &tp.connection_pool,
                    resource,
                    format!("{path}.connectionPool"),
                ),
                outlier_detection: at(
                    &tp.outlier_detection,
                    resource,
                    format!("{path}.outlierDetection"),
                ),
                load_balancer: at(&tp.load_balancer, resource, format!("{path}.loadBalancer")),
                tls: at(&tp.tls, resource, format!("{path}.tls")),
                tunnel: at(&tp.tunnel, resource, format!("{path}.tunnel")),
                proxy_protocol: at(
                    &tp.proxy_protocol,
                    resource,
                    format!("{path}.proxyProtocol"),
                ),
                retry_budget: at(&tp.retry_budget, resource, format!("{path}.retryBudget")),
            },
            false,
        ),
    }
}

/// The rule-wide policy for a port (no subset).
pub fn for_service<'a>(rule: Option<&Rule<'a>>, port: u16) -> Option<Policy<'a>> {
    let (resource, tp) = rule?.traffic_policy?;
    Some(for_port(resource, "spec.trafficPolicy", tp, port).0)
}

/// The policy of a cluster: `MergeSubsetTrafficPolicy(rule.trafficPolicy, subset.trafficPolicy,
/// port)`. Without a rule, the empty policy.
pub fn effective<'a>(
    rule: Option<&Rule<'a>>,
    port: u16,
    subset: Option<&RuleSubset<'a>>,
) -> Policy<'a> {
    let original = for_service(rule, port);
    let Some((sub, sub_tp)) =
        subset.and_then(|s| s.subset.traffic_policy.as_ref().map(|tp| (s, tp)))
    else {
        return original.unwrap_or_default();
    };
    let (sub_policy, has_port_level) = for_port(
        sub.resource,
        &format!("spec.subsets[{}].trafficPolicy", sub.index),
        sub_tp,
        port,
    );
    let Some(mut merged) = original else {
        return sub_policy;
    };
    // Port-level subset settings replace the four port-scoped parts wholesale; otherwise each
    // part the subset sets overrides the rule's.
    if sub_policy.connection_pool.is_some() || has_port_level {
        merged.connection_pool = sub_policy.connection_pool;
    }
    if sub_policy.outlier_detection.is_some() || has_port_level {
        merged.outlier_detection = sub_policy.outlier_detection;
    }
    if sub_policy.load_balancer.is_some() || has_port_level {
        merged.load_balancer = sub_policy.load_balancer;
    }
    if sub_policy.tls.is_some() || has_port_level {
        merged.tls = sub_policy.tls;
    }
    if sub_policy.tunnel.is_some() {
        merged.tunnel = sub_policy.tunnel;
    }
    if sub_policy.proxy_protocol.is_some() {
        merged.proxy_protocol = sub_policy.proxy_protocol;
    }
    if sub_policy.retry_budget.is_some() {
        merged.retry_budget = sub_policy.retry_budget;
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::networking::{
        DestinationRule, LbPolicy, PortSelector, PortTrafficPolicy, SimpleLB, Subset,
    };
    use crate::model::{Kind, ObjectMeta, Spec};

    fn lb(simple: SimpleLB) -> Option<LoadBalancerSettings> {
        Some(LoadBalancerSettings {
            lb_policy: Some(LbPolicy::Simple(simple)),
            ..Default::default()
        })
    }

    fn resource(dr: DestinationRule) -> Resource {
        Resource {
            kind: Kind::DestinationRule,
            api_version: "networking.istio.io/v1".into(),
            meta: ObjectMeta {
                name: "r".into(),
                namespace: "ns".into(),
                ..Default::default()
            },
            spec: Spec::DestinationRule(Box::new(dr)),
            origin: None,
        }
    }

    fn simple(p: &Policy) -> Option<SimpleLB> {
        match p.load_balancer.as_ref()?.value.lb_policy.as_ref()? {
            LbPolicy::Simple(s) => Some(*s),
            LbPolicy::ConsistentHash(_) => None,
        }
    }

    #[test]
    fn subset_and_port_level_override_as_istiod() {
        let dr = DestinationRule {
            host: "a".into(),
            traffic_policy: Some(TrafficPolicy {
                load_balancer: lb(SimpleLB::Random),
                outlier_detection: Some(OutlierDetection::default()),
                port_level_settings: vec![PortTrafficPolicy {
                    port: Some(PortSelector { number: 8080 }),
                    load_balancer: lb(SimpleLB::RoundRobin),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            subsets: vec![
                Subset {
                    name: "v1".into(),
                    traffic_policy: Some(TrafficPolicy {
                        load_balancer: lb(SimpleLB::LeastRequest),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Subset {
                    name: "v2".into(),
                    traffic_policy: Some(TrafficPolicy {
                        port_level_settings: vec![PortTrafficPolicy {
                            port: Some(PortSelector { number: 80 }),
                            load_balancer: lb(SimpleLB::Passthrough),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let r = resource(dr);
        let Spec::DestinationRule(dr) = &r.spec else {
            unreachable!()
        };
        let rule = Rule {
            resource: &r,
            traffic_policy: dr.traffic_policy.as_ref().map(|tp| (&r, tp)),
            subsets: dr
                .subsets
                .iter()
                .enumerate()
                .map(|(index, subset)| RuleSubset {
                    resource: &r,
                    index,
                    subset,
                })
                .collect(),
            has_selector: false,
        };
        // Rule-wide on port 80; port-level on 8080 replaces everything (outlier detection gone).
        let p = effective(Some(&rule), 80, None);
        assert_eq!(simple(&p), Some(SimpleLB::Random));
        assert!(p.outlier_detection.is_some());
        let p = effective(Some(&rule), 8080, None);
        assert_eq!(simple(&p), Some(SimpleLB::RoundRobin));
        assert!(p.outlier_detection.is_none());
        assert_eq!(
            p.load_balancer.unwrap().path,
            "spec.trafficPolicy.portLevelSettings[0].loadBalancer"
        );
        // Subset field overrides, the rest inherited.
        let p = effective(Some(&rule), 80, rule.subset("v1"));
        assert_eq!(simple(&p), Some(SimpleLB::LeastRequest));
        assert!(p.outlier_detection.is_some());
        // Subset port-level replaces the port-scoped parts wholesale.
        let p = effective(Some(&rule), 80, rule.subset("v2"));
        assert_eq!(simple(&p), Some(SimpleLB::Passthrough));
        assert!(p.outlier_detection.is_none());
        // Subset without a port-level match for 8080: inherits the rule's port-level policy.
        let p = effective(Some(&rule), 8080, rule.subset("v2"));
        assert_eq!(simple(&p), Some(SimpleLB::RoundRobin));
    }
}

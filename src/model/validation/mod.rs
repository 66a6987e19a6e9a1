//! Semantic validation of parsed resources, shared by the file source, `bowline validate` and
//! the admission webhook. It applies what istiod's validation checks for each networking kind
//! (hosts and wildcard rules, ports, weights, subsets, durations, regexes, TLS modes, ...)
//! together with the constraints the CRD schema makes the API server enforce (value ranges,
//! `x-kubernetes-validations` rules), so that a resource accepted here is one Kubernetes and
//! istiod would accept. Errors reject the resource; warnings are reported and the resource is
//! used. Field paths use the YAML (camelCase) names, e.g. `spec.http[0].route[1].weight`.
//! One file per kind (the `security.istio.io` kinds in `security`), the checks they share in
//! `common`, and metadata in `metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::diagnostic::{Diagnostic, Severity};
use super::kube;
use super::networking::*;
use super::resource::{Kind, Resource, Spec};

mod common;
mod destination_rule;
mod gateway;
mod kubernetes;
mod metadata;
pub mod security;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use common::GRPC_STATUSES;
use common::*;

/// Validates one resource; the result holds errors and warnings.
pub fn validate(resource: &Resource) -> Vec<Diagnostic> {
    let mut v = Ctx {
        resource,
        out: Vec::new(),
    };
    v.metadata();
    match &resource.spec {
        Spec::VirtualService(s) => v.virtual_service(s),
        Spec::DestinationRule(s) => v.destination_rule(s),
        Spec::ServiceEntry(s) => v.service_entry(s),
        Spec::WorkloadEntry(s) => v.workload_entry(s),
        Spec::Sidecar(s) => v.sidecar(s),
        Spec::Gateway(s) => v.gateway(s),
        Spec::AuthorizationPolicy(s) => v.authorization_policy(s),
        Spec::PeerAuthentication(s) => v.peer_authentication(s),
        Spec::RequestAuthentication(s) => v.request_authentication(s),
        Spec::Service(s) => v.service(s),
        Spec::EndpointSlice(s) => v.endpoint_slice(s),
        Spec::Secret(s) => v.secret(s),
        Spec::Pod(_) | Spec::Namespace => {}
    }
    v.out
}

struct Ctx<'a> {
    resource: &'a Resource,
    out: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(self.resource.diagnostic(field, message));
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(Diagnostic {
            severity: Severity::Warning,
            ..self.resource.diagnostic(field, message)
        });
    }

    fn check(&mut self, field: &str, result: Result<(), String>) {
        if let Err(e) = result {
            self.err(field, e);
        }
    }

    fn namespace(&self) -> &str {
        &self.resource.meta.namespace
    }

    /// Selector labels under `f`: keys non-empty, no wildcards, values up to 63 characters, at
    /// most `max` of them.
    fn selector_labels(&mut self, f: &str, labels: &super::networking::Labels, max: usize) {
        for (k, v) in labels {
            if k.is_empty() {
                self.err(
                    f,
                    format!("empty key is not supported in selector: \"={v}\""),
                );
            }
            if k.contains('*') || v.contains('*') {
                self.err(
                    format!("{f}.{k}"),
                    format!("wildcard is not supported in selector: \"{k}={v}\""),
                );
            }
            if v.len() > 63 {
                self.err(
                    format!("{f}.{k}"),
                    "label value may not exceed 63 characters",
                );
            }
        }
        if labels.len() > max {
            self.err(f, format!("at most {max} labels are allowed"));
        }
    }

    /// A `matchLabels` selector (DestinationRule `workloadSelector`, the security kinds'
    /// `selector`) under `base`: keys non-empty, no wildcards, values up to 63 characters.
    fn type_selector(&mut self, base: &str, sel: &super::networking::TypeWorkloadSelector) {
        self.selector_labels(&format!("{base}.matchLabels"), &sel.match_labels, 4096);
        if sel.match_labels.is_empty() {
            self.warn(base, "workload selector specified without labels");
        }
    }
}

#[cfg(test)]
mod tests;

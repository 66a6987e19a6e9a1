//! The resource envelope: `apiVersion`, `kind`, `metadata` and a typed `spec`, parsed from YAML
//! documents and checked by the kind's validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::diagnostic::Diagnostic;
use super::kube;
use super::networking;
use super::security;
use super::validation;

/// The kinds bowline understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    ServiceEntry,
    WorkloadEntry,
    Sidecar,
    Gateway,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    Service,
    EndpointSlice,
    Pod,
    Namespace,
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::Sidecar,
        Kind::Gateway,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Namespace,
        Kind::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Sidecar => "Sidecar",
            Kind::Gateway => "Gateway",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::Secret => "Secret",
        }
    }

    /// The API group and the versions of it that are served for this kind.
    pub fn group_versions(self) -> (&'static str, &'static [&'static str]) {
        const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
        const SECURITY: &[&str] = &["v1", "v1beta1"];
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::Sidecar
            | Kind::Gateway => ("networking.istio.io", NETWORKING),
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication => {
                ("security.istio.io", SECURITY)
            }
            Kind::Service | Kind::Pod | Kind::Namespace | Kind::Secret => ("", &["v1"]),
            Kind::EndpointSlice => ("discovery.k8s.io", &["v1"]),
        }
    }

    /// Resolves `apiVersion` + `kind` to a kind we model, or explains why not.
    pub fn resolve(api_version: &str, kind: &str) -> Result<Kind, String> {
        let Some(found) = Kind::ALL.into_iter().find(|k| k.as_str() == kind) else {
            return Err(format!("unsupported kind {kind:?}"));
        };
        let (group, versions) = found.group_versions();
        let (got_group, got_version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        if got_group == group && versions.contains(&got_version) {
            Ok(found)
        } else {
            let served: Vec<String> = versions
                .iter()
                .map(|v| {
                    if group.is_empty() {
                        v.to_string()
                    } else {
                        format!("{group}/{v}")
                    }
                })
                .collect();
            Err(format!(
                "apiVersion {api_version:?} is not served for {kind}; served: {}",
                served.join(", ")
            ))
        }
    }

    /// Istio kinds are namespaced and default to the `default` namespace; Namespace is cluster
    /// scoped.
    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kubernetes object metadata: the part bowline reads. Other metadata fields are accepted and
/// ignored, since tools such as kubectl add them freely.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// A typed spec, one variant per kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    VirtualService(Box<networking::VirtualService>),
    DestinationRule(Box<networking::DestinationRule>),
    ServiceEntry(Box<networking::ServiceEntry>),
    WorkloadEntry(Box<networking::WorkloadEntry>),
    Sidecar(Box<networking::Sidecar>),
    Gateway(Box<networking::Gateway>),
    AuthorizationPolicy(Box<security::AuthorizationPolicy>),
    PeerAuthentication(Box<security::PeerAuthentication>),
    RequestAuthentication(Box<security::RequestAuthentication>),
    Service(Box<kube::ServiceSpec>),
    EndpointSlice(Box<kube::EndpointSlice>),
    Pod(Box<kube::Pod>),
    Namespace,
    Secret(Box<kube::Secret>),
}

impl Spec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
            Spec::Sidecar(_) => Kind::Sidecar,
            Spec::Gateway(_) => Kind::Gateway,
            Spec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Spec::PeerAuthentication(_) => Kind::PeerAuthentication,
            Spec::RequestAuthentication(_) => Kind::RequestAuthentication,
            Spec::Service(_) => Kind::Service,
            Spec::EndpointSlice(_) => Kind::EndpointSlice,
            Spec::Pod(_) => Kind::Pod,
            Spec::Namespace => Kind::Namespace,
            Spec::Secret(_) => Kind::Secret,
        }
    }
}

/// One parsed and validated resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub kind: Kind,
    pub api_version: String,
    pub meta: ObjectMeta,
    pub spec: Spec,
    /// Where it came from (a file path), for diagnostics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Resource {
    /// `kind/namespace/name`, the identity used in logs and diagnostics.
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            kind: self.kind,
            namespace: self.meta.namespace.clone(),
            name: self.meta.name.clone(),
        }
    }

    /// An error-severity diagnostic about `field` of this resource.
    pub fn diagnostic(&self, field: impl Into<String>, message: impl Into<String>) -> Diagnostic {
        let d = Diagnostic::error(
            self.kind.as_str(),
            &self.meta.namespace,
            &self.meta.name,
            field,
            message,
        );
        match &self.origin {
            Some(o) => d.with_origin(o),
            None => d,
        }
    }
}

/// The identity of a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// The outcome of parsing one document: the resource (when it parsed and its spec is valid) and
/// every diagnostic found. A resource with any error-severity diagnostic is `None`.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub resource: Option<Resource>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The most documents one file may hold. The YAML library's default (1 024) cuts off files
/// that generated config reaches (a ServiceEntry per external host); the node and byte budgets
/// still bound what a hostile file can cost.
pub const MAX_DOCUMENTS: usize = 100_000;
/// The most YAML nodes (mappings, sequences, scalars) of one file.
pub const MAX_NODES: usize = 4_000_000;

/// Parses every document of a multi-document YAML text. Empty documents are skipped. A YAML
/// syntax error, or a text over the budgets above, fails the whole text (the document
/// boundaries can no longer be trusted): it is returned as a single `Parsed` without a
/// resource, with the library's error (which names the budget breached).
pub fn parse_yaml(text: &str, origin: &str) -> Vec<Parsed> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: MAX_DOCUMENTS,
            max_nodes: MAX_NODES,
            max_events: 2 * MAX_NODES,
        },
    };
    match serde_saphyr::from_multiple_with_options::<serde_json::Value>(text, options) {
        Ok(docs) => docs
            .into_iter()
            .filter(|d| !d.is_null())
            .map(|d| parse_value(d, Some(origin)))
            .collect(),
        Err(e) => vec![Parsed {
            resource: None,
            diagnostics: vec![
                Diagnostic::error("", "", "", "", format!("invalid YAML: {e}")).with_origin(origin),
            ],
        }],
    }
}

/// Parses and validates one document given as a JSON value.
pub fn parse_value(doc: serde_json::Value, origin: Option<&str>) -> Parsed {
    let with_origin = |d: Diagnostic| match origin {
        Some(o) => d.with_origin(o),
        None => d,
    };
    let fail = |d: Diagnostic| Parsed {
        resource: None,
        diagnostics: vec![with_origin(d)],
    };
    let serde_json::Value::Object(mut obj) = doc else {
        return fail(Diagnostic::error(
            "",
            "",
            "",
            "",
            "document is not a mapping",
        ));
    };
    let kind_name = obj
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let api_version = obj
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let meta_value = obj.remove("metadata").unwrap_or_default();
    let meta_result: Result<ObjectMeta, _> = if meta_value.is_null() {
        Ok(ObjectMeta::default())
    } else {
        serde_path_to_error::deserialize(meta_value)
    };
    let mut meta = match meta_result {
        Ok(m) => m,
        Err(e) => {
            return fail(Diagnostic::error(
                &kind_name,
                "",
                "",
                join_path("metadata", &e.path().to_string()),
                e.inner().to_string(),
            ));
        }
    };
    let error = |field: &str, message: String| {
        Diagnostic::error(&kind_name, &meta.namespace, &meta.name, field, message)
    };
    if kind_name.is_empty() {
        return fail(error("kind", "Required value".into()));
    }
    if api_version.is_empty() {
        return fail(error("apiVersion", "Required value".into()));
    }
    let kind = match Kind::resolve(&api_version, &kind_name) {
        Ok(k) => k,
        Err(message) => return fail(error("kind", message)),
    };
    if meta.name.is_empty() {
        return fail(error("metadata.name", "Required value".into()));
    }
    if kind.is_namespaced() && meta.namespace.is_empty() {
        meta.namespace = "default".to_string();
    }
    let spec = match parse_spec(kind, &mut obj) {
        Ok(s) => s,
        Err((field, message)) => {
            return fail(Diagnostic::error(
                kind.as_str(),
                &meta.namespace,
                &meta.name,
                field,
                message,
            ));
        }
    };
    let resource = Resource {
        kind,
        api_version,
        meta,
        spec,
        origin: origin.map(str::to_string),
    };
    let diagnostics = validation::validate(&resource);
    let ok = diagnostics.iter().all(|d| !d.is_error());
    Parsed {
        resource: ok.then_some(resource),
        diagnostics,
    }
}

fn join_path(prefix: &str, path: &str) -> String {
    if path.is_empty() || path == "." {
        prefix.to_string()
    } else {
        format!("{prefix}.{path}")
    }
}

/// Removes object members whose value is `null`, recursively. Array items are kept, and so is
/// an array item that is a one-member mapping to `null`: that is how a YAML 1.2 parser reads an
/// unquoted IPv6 address ending in `::` (`- 2001:db8::`), which the address fields of
/// `networking` turn back into a string.
fn prune_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(prune_nulls);
        }
        serde_json::Value::Array(items) => {
            for item in items {
                let lone_null = item
                    .as_object()
                    .is_some_and(|m| m.len() == 1 && m.values().all(|v| v.is_null()));
                if !lone_null {
                    prune_nulls(item);
                }
            }
        }
        _ => {}
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    field: &str,
    value: serde_json::Value,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        (
            join_path(field, &e.path().to_string()),
            e.inner().to_string(),
        )
    })
}

fn parse_spec(
    kind: Kind,
    obj: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Spec, (String, String)> {
    // Kubernetes kinds: EndpointSlice and Secret keep their fields at the top level, a Pod's
    // spec and status are both read (and mostly ignored), Namespace has nothing bowline reads,
    // Service has a spec.
    match kind {
        Kind::Namespace => return Ok(Spec::Namespace),
        Kind::Pod => {
            let value = serde_json::json!({
                "spec": obj.remove("spec").unwrap_or_default(),
                "status": obj.remove("status").unwrap_or_default(),
            });
            let mut value = value;
            prune_nulls(&mut value);
            return typed("", value).map(|p| Spec::Pod(Box::new(p)));
        }
        Kind::EndpointSlice => {
            obj.remove("kind");
            obj.remove("apiVersion");
            let mut value = serde_json::Value::Object(std::mem::take(obj));
            // The API server writes `endpoints: null` for a slice of a Service without ready
            // pods (the field has no `omitempty`): no endpoints.
            prune_nulls(&mut value);
            return typed("", value).map(|s| Spec::EndpointSlice(Box::new(s)));
        }
        Kind::Secret => {
            obj.remove("kind");
            obj.remove("apiVersion");
            let mut value = serde_json::Value::Object(std::mem::take(obj));
            prune_nulls(&mut value);
            let object: kube::SecretObject = typed("", value)?;
            return object.decode().map(|s| Spec::Secret(Box::new(s)));
        }
        _ => {}
    }
    let Some(mut spec) = obj.remove("spec").filter(|s| !s.is_null()) else {
        return Err(("spec".into(), "Required value".into()));
    };
    // The API server prunes `null` fields (`exportTo:` with no value) before validating; so do we.
    prune_nulls(&mut spec);
    // `status` is written by controllers, not authors; everything else is unknown.
    for key in obj.keys() {
        if !matches!(key.as_str(), "apiVersion" | "kind" | "status") {
            return Err((key.clone(), format!("unknown field `{key}`")));
        }
    }
    Ok(match kind {
        Kind::VirtualService => Spec::VirtualService(typed("spec", spec)?),
        Kind::DestinationRule => Spec::DestinationRule(typed("spec", spec)?),
        Kind::ServiceEntry => Spec::ServiceEntry(typed("spec", spec)?),
        Kind::WorkloadEntry => Spec::WorkloadEntry(typed("spec", spec)?),
        Kind::Sidecar => Spec::Sidecar(typed("spec", spec)?),
        Kind::Gateway => Spec::Gateway(typed("spec", spec)?),
        Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(typed("spec", spec)?),
        Kind::PeerAuthentication => Spec::PeerAuthentication(typed("spec", spec)?),
        Kind::RequestAuthentication => Spec::RequestAuthentication(typed("spec", spec)?),
        Kind::Service => Spec::Service(typed("spec", spec)?),
        Kind::EndpointSlice | Kind::Pod | Kind::Namespace | Kind::Secret => {
            unreachable!("handled above")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_more_than_a_thousand_documents_is_read_whole() {
        let docs: Vec<String> = (0..1500)
            .map(|i| {
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s{i}, namespace: default}}\nspec:\n  hosts: [h{i}.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: DNS\n"
                )
            })
            .collect();
        let parsed = parse_yaml(&docs.join("---\n"), "many.yaml");
        assert_eq!(parsed.len(), 1500);
        assert!(parsed.iter().all(|p| p.resource.is_some()));
    }
}

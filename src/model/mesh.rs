//! Mesh-wide settings: the subset of Istio's MeshConfig that bowline honours, with istiod's
//! defaults; and [`TrustDomain`], the mesh's trust domain as the parts of the server outside
//! translation read it.
//!
//! Contract: one mesh configuration is in force at a time (the cluster's ConfigMap, else
//! `--mesh-config`, else the defaults). Translation reads it from the model; the CA, the
//! authenticators and the TLS ports read its trust domain from the [`TrustDomain`] the push loop
//! sets from that same configuration, so certificates, token checks, SAN matchers and RBAC
//! principals never name different trust domains.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

/// What a sidecar does with traffic to destinations outside the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Forward to `PassthroughCluster` (istiod's default).
    AllowAny,
    /// Drop into `BlackHoleCluster`.
    RegistryOnly,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshConfig {
    /// Namespace whose Sidecar (without selector) and other mesh-wide resources apply to all.
    pub root_namespace: String,
    pub trust_domain: String,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Upstream connect timeout for generated clusters.
    pub connect_timeout: std::time::Duration,
    /// Kubernetes DNS domain suffix (`cluster.local`).
    pub domain_suffix: String,
    /// `enableAutoMtls`: clusters without TLS settings send mTLS to endpoints labelled
    /// `security.istio.io/tlsMode: istio` (istiod's default: on).
    pub enable_auto_mtls: bool,
    /// Other trust domains whose identities count as this mesh's (`trustDomainAliases`).
    pub trust_domain_aliases: Vec<String>,
    /// `extensionProviders`: the external authorizers CUSTOM AuthorizationPolicies name.
    pub extension_providers: Vec<ExtensionProvider>,
}

/// One `extensionProviders` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtensionProvider {
    pub name: String,
    pub provider: Provider,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    EnvoyExtAuthzHttp(ExtAuthzHttp),
    EnvoyExtAuthzGrpc(ExtAuthzGrpc),
    /// A provider of another kind (tracing, logging, ...): named here so a CUSTOM policy that
    /// names it can be told it is not an authorizer.
    Other(String),
}

/// `envoyExtAuthzHttp`: an HTTP external authorization service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzHttp {
    /// `<host>` or `<namespace>/<host>` of a service in the registry.
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    /// Deprecated spelling of `includeRequestHeadersInCheck`, used only when that is unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_headers_in_check: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<RequestBody>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `envoyExtAuthzGrpc`: a gRPC (`envoy.service.auth.v3.Authorization`) authorization service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtAuthzGrpc {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<RequestBody>,
}

/// `includeRequestBodyInCheck`: buffer the body and send it to the authorizer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestBody {
    #[serde(default)]
    pub max_request_bytes: u32,
    #[serde(default)]
    pub allow_partial_message: bool,
    #[serde(default)]
    pub pack_as_bytes: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            connect_timeout: std::time::Duration::from_secs(10),
            domain_suffix: "cluster.local".to_string(),
            enable_auto_mtls: true,
            trust_domain_aliases: Vec::new(),
            extension_providers: Vec::new(),
        }
    }
}

/// Errors in a mesh configuration file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MeshError {
    #[error("mesh config: invalid YAML: {0}")]
    Yaml(String),
    #[error("mesh config: {field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("mesh config: extensionProviders[{index}]: {message}")]
    Provider { index: usize, message: String },
}

impl MeshConfig {
    /// Parses the YAML of istiod's `mesh` ConfigMap key. The fields bowline honours are read
    /// and checked; the many others MeshConfig has are accepted and ignored.
    pub fn from_yaml(text: &str) -> Result<MeshConfig, MeshError> {
        let value: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| MeshError::Yaml(e.to_string()))?;
        let mut mesh = MeshConfig::default();
        if value.is_null() {
            return Ok(mesh);
        }
        let Some(obj) = value.as_object() else {
            return Err(MeshError::Yaml("expected a mapping".to_string()));
        };
        let string = |field: &'static str| -> Result<Option<String>, MeshError> {
            match obj.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(MeshError::Field {
                    field,
                    message: format!("expected a non-empty string, got {other}"),
                }),
            }
        };
        if let Some(ns) = string("rootNamespace")? {
            mesh.root_namespace = ns;
        }
        if let Some(td) = string("trustDomain")? {
            check_trust_domain(&td).map_err(|message| MeshError::Field {
                field: "trustDomain",
                message,
            })?;
            mesh.trust_domain = td;
        }
        if let Some(t) = string("connectTimeout")? {
            mesh.connect_timeout =
                super::networking::parse_duration(&t).map_err(|message| MeshError::Field {
                    field: "connectTimeout",
                    message,
                })?;
        }
        match obj.get("enableAutoMtls") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Bool(b)) => mesh.enable_auto_mtls = *b,
            Some(other) => {
                return Err(MeshError::Field {
                    field: "enableAutoMtls",
                    message: format!("expected true or false, got {other}"),
                });
            }
        }
        if let Some(policy) = obj.get("outboundTrafficPolicy").filter(|v| !v.is_null()) {
            match policy.get("mode").and_then(|m| m.as_str()) {
                None | Some("ALLOW_ANY") => {
                    mesh.outbound_traffic_policy = OutboundTrafficPolicy::AllowAny
                }
                Some("REGISTRY_ONLY") => {
                    mesh.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly
                }
                Some(other) => {
                    return Err(MeshError::Field {
                        field: "outboundTrafficPolicy.mode",
                        message: format!("{other:?} is not ALLOW_ANY or REGISTRY_ONLY"),
                    });
                }
            }
        }
        if let Some(aliases) = obj.get("trustDomainAliases").filter(|v| !v.is_null()) {
            mesh.trust_domain_aliases =
                serde_json::from_value(aliases.clone()).map_err(|e| MeshError::Field {
                    field: "trustDomainAliases",
                    message: e.to_string(),
                })?;
            for (i, alias) in mesh.trust_domain_aliases.iter().enumerate() {
                check_trust_domain(alias).map_err(|message| MeshError::Field {
                    field: "trustDomainAliases",
                    message: format!("[{i}]: {message}"),
                })?;
            }
        }
        if let Some(list) = obj.get("extensionProviders").filter(|v| !v.is_null()) {
            let Some(items) = list.as_array() else {
                return Err(MeshError::Field {
                    field: "extensionProviders",
                    message: "expected a list".to_string(),
                });
            };
            for (index, item) in items.iter().enumerate() {
                let provider = extension_provider(item)
                    .map_err(|message| MeshError::Provider { index, message })?;
                if mesh
                    .extension_providers
                    .iter()
                    .any(|p| p.name == provider.name)
                {
                    return Err(MeshError::Provider {
                        index,
                        message: format!(
                            "extension provider name must be unique, found duplicate: {}",
                            provider.name
                        ),
                    });
                }
                mesh.extension_providers.push(provider);
            }
        }
        Ok(mesh)
    }

    /// The extension provider of this name.
    pub fn extension_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }

    /// The trust domains whose peers mutual TLS accepts (istiod's `TrustDomainsForValidation`):
    /// `trustDomain`, then `trustDomainAliases` in name order, without repeats.
    pub fn trust_domains_for_validation(&self) -> Vec<String> {
        let mut aliases: Vec<&String> = self.trust_domain_aliases.iter().collect();
        aliases.sort();
        let mut out: Vec<String> = Vec::with_capacity(aliases.len() + 1);
        for td in std::iter::once(&self.trust_domain).chain(aliases) {
            if !td.is_empty() && !out.contains(td) {
                out.push(td.clone());
            }
        }
        out
    }
}

/// istiod's trust domain rule: DNS labels (lowercase letters, digits, inner hyphens, at most 63
/// characters) separated by dots; a trailing dot is allowed.
fn check_trust_domain(td: &str) -> Result<(), String> {
    let labels: Vec<&str> = td.split('.').collect();
    let last = labels.len() - 1;
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = labels
        .iter()
        .enumerate()
        .all(|(i, l)| label_ok(l) || (i == last && i > 0 && l.is_empty()));
    if ok {
        Ok(())
    } else {
        Err(format!("trust domain name {td:?} invalid"))
    }
}

/// The trust domain in force, shared (cheap to clone) by the CA, the authenticators and the TLS
/// ports. Only the push loop sets it, from the mesh configuration each model is built from.
#[derive(Debug, Clone)]
pub struct TrustDomain(Arc<RwLock<String>>);

impl TrustDomain {
    pub fn new(trust_domain: &str) -> TrustDomain {
        TrustDomain(Arc::new(RwLock::new(trust_domain.to_string())))
    }

    pub fn get(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets the trust domain; returns the previous one when it changed.
    pub fn set(&self, trust_domain: &str) -> Option<String> {
        let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
        (*current != trust_domain)
            .then(|| std::mem::replace(&mut *current, trust_domain.to_string()))
    }
}

/// Provider names are used in metadata keys and RBAC policy names: lowercase DNS-label
/// characters, as istiod requires.
fn validate_provider_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("extension provider name must not be empty".to_string());
    }
    if name.len() > 63 {
        return Err(format!(
            "provider name {name:?} too long (max 63 characters)"
        ));
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "invalid provider name {name:?}: only lowercase letters, digits and inner hyphens are allowed"
        ));
    }
    Ok(())
}

fn extension_provider(item: &serde_json::Value) -> Result<ExtensionProvider, String> {
    let Some(obj) = item.as_object() else {
        return Err("expected a mapping".to_string());
    };
    let name = obj
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    validate_provider_name(&name)?;
    let kinds: Vec<&String> = obj.keys().filter(|k| k.as_str() != "name").collect();
    let [kind] = kinds.as_slice() else {
        return Err(format!(
            "provider {name:?} must set exactly one provider type, found {}",
            kinds.len()
        ));
    };
    let value = obj.get(kind.as_str()).cloned().unwrap_or_default();
    let value = if value.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        value
    };
    let typed = |e: serde_json::Error| format!("provider {name:?}: {kind}: {e}");
    let provider = match kind.as_str() {
        "envoyExtAuthzHttp" => {
            let p: ExtAuthzHttp = serde_json::from_value(value).map_err(typed)?;
            check_common(
                &name,
                &p.service,
                p.port,
                p.timeout.as_deref(),
                p.status_on_error.as_deref(),
            )?;
            if let Some(prefix) = p.path_prefix.as_deref().filter(|s| !s.is_empty())
                && !prefix.starts_with('/')
            {
                return Err(format!(
                    "provider {name:?}: pathPrefix should begin with `/` but found {prefix:?}"
                ));
            }
            for (field, headers) in [
                (
                    "includeRequestHeadersInCheck",
                    &p.include_request_headers_in_check,
                ),
                ("includeHeadersInCheck", &p.include_headers_in_check),
                ("headersToUpstreamOnAllow", &p.headers_to_upstream_on_allow),
                (
                    "headersToDownstreamOnDeny",
                    &p.headers_to_downstream_on_deny,
                ),
                (
                    "headersToDownstreamOnAllow",
                    &p.headers_to_downstream_on_allow,
                ),
            ] {
                if headers.iter().any(|h| h == "*" || h.is_empty()) {
                    return Err(format!(
                        "provider {name:?}: {field}: a single wildcard (\"*\") or an empty name is not supported, change it to either prefix or suffix match"
                    ));
                }
            }
            Provider::EnvoyExtAuthzHttp(p)
        }
        "envoyExtAuthzGrpc" => {
            let p: ExtAuthzGrpc = serde_json::from_value(value).map_err(typed)?;
            check_common(
                &name,
                &p.service,
                p.port,
                p.timeout.as_deref(),
                p.status_on_error.as_deref(),
            )?;
            Provider::EnvoyExtAuthzGrpc(p)
        }
        other => Provider::Other(other.to_string()),
    };
    Ok(ExtensionProvider { name, provider })
}

fn check_common(
    name: &str,
    service: &str,
    port: u32,
    timeout: Option<&str>,
    status_on_error: Option<&str>,
) -> Result<(), String> {
    super::validation::security::validate_provider_service(service)
        .map_err(|e| format!("provider {name:?}: service: {e}"))?;
    if !(1..=65535).contains(&port) {
        return Err(format!(
            "provider {name:?}: port must be in the range [1, 65535], found: {port}"
        ));
    }
    if let Some(t) = timeout {
        super::networking::parse_duration(t)
            .map_err(|e| format!("provider {name:?}: timeout: {e}"))?;
    }
    if let Some(s) = status_on_error.filter(|s| !s.is_empty()) {
        let ok = s.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
        if !ok {
            return Err(format!(
                "provider {name:?}: unsupported statusOnError {s:?} (an HTTP status code)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_fields_and_ignores_the_rest() {
        let mesh = MeshConfig::from_yaml(
            "rootNamespace: mesh-root\ntrustDomain: example.org\nconnectTimeout: 2s\n\
             outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nenableTracing: true\nenableAutoMtls: false\n",
        )
        .unwrap();
        assert_eq!(mesh.root_namespace, "mesh-root");
        assert_eq!(mesh.trust_domain, "example.org");
        assert_eq!(mesh.connect_timeout, std::time::Duration::from_secs(2));
        assert_eq!(
            mesh.outbound_traffic_policy,
            OutboundTrafficPolicy::RegistryOnly
        );
        assert!(!mesh.enable_auto_mtls);
        assert_eq!(MeshConfig::from_yaml("").unwrap(), MeshConfig::default());
        assert!(MeshConfig::default().enable_auto_mtls);
    }

    #[test]
    fn parses_extension_providers() {
        let mesh = MeshConfig::from_yaml(
            "trustDomainAliases: [old.example]\nextensionProviders:\n\
             - name: ext-http\n  envoyExtAuthzHttp:\n    service: authz.foo.svc.cluster.local\n\
             \x20   port: 8000\n    timeout: 2s\n    failOpen: true\n\
             \x20   includeRequestHeadersInCheck: [x-user]\n\
             - name: ext-grpc\n  envoyExtAuthzGrpc: {service: foo/authz.foo.svc.cluster.local, port: 9000}\n\
             - name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n",
        )
        .unwrap();
        assert_eq!(mesh.trust_domain_aliases, vec!["old.example"]);
        assert_eq!(mesh.extension_providers.len(), 3);
        let Some(ExtensionProvider {
            provider: Provider::EnvoyExtAuthzHttp(http),
            ..
        }) = mesh.extension_provider("ext-http")
        else {
            panic!("ext-http is an HTTP authorizer")
        };
        assert_eq!(http.port, 8000);
        assert!(http.fail_open);
        assert!(matches!(
            mesh.extension_provider("zipkin").map(|p| &p.provider),
            Some(Provider::Other(k)) if k == "zipkin"
        ));
        for bad in [
            "extensionProviders: [{name: Bad, envoyExtAuthzGrpc: {service: a.b, port: 1}}]",
            "extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: a.b, port: 0}}]",
            "extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: a.b, port: 1, bogus: 1}}]",
            "extensionProviders: [{name: a, envoyExtAuthzHttp: {service: a.b, port: 1, pathPrefix: x}}]",
            "extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: a.b, port: 1}}, {name: a, envoyExtAuthzGrpc: {service: a.b, port: 1}}]",
        ] {
            assert!(
                matches!(MeshConfig::from_yaml(bad), Err(MeshError::Provider { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(
            MeshConfig::from_yaml("outboundTrafficPolicy: {mode: SOMETIMES}"),
            Err(MeshError::Field {
                field: "outboundTrafficPolicy.mode",
                ..
            })
        ));
        assert!(matches!(
            MeshConfig::from_yaml("connectTimeout: soon"),
            Err(MeshError::Field {
                field: "connectTimeout",
                ..
            })
        ));
        assert!(matches!(
            MeshConfig::from_yaml("[1, 2"),
            Err(MeshError::Yaml(_))
        ));
        for bad in [
            "trustDomain: a/b",
            "trustDomain: Example.org",
            "trustDomain: -a.org",
        ] {
            assert!(
                matches!(
                    MeshConfig::from_yaml(bad),
                    Err(MeshError::Field {
                        field: "trustDomain",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let err = MeshConfig::from_yaml("trustDomainAliases: [ok.example, bad_alias]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "mesh config: trustDomainAliases: [1]: trust domain name \"bad_alias\" invalid"
        );
        assert!(MeshConfig::from_yaml("trustDomain: istio.io.").is_ok());
    }

    #[test]
    fn trust_domains_for_validation() {
        let mesh = MeshConfig::from_yaml(
            "trustDomain: example.org\ntrustDomainAliases: [zz.example, example.org, old.example]",
        )
        .unwrap();
        assert_eq!(
            mesh.trust_domains_for_validation(),
            vec!["example.org", "old.example", "zz.example"]
        );
        assert_eq!(
            MeshConfig::default().trust_domains_for_validation(),
            vec!["cluster.local"]
        );
    }

    #[test]
    fn trust_domain_is_shared_and_reports_changes() {
        let td = TrustDomain::new("cluster.local");
        let other = td.clone();
        assert_eq!(td.set("cluster.local"), None);
        assert_eq!(td.set("example.org"), Some("cluster.local".to_string()));
        assert_eq!(other.get(), "example.org");
    }
}

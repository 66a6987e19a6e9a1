//! Mesh-wide settings: the subset of Istio's MeshConfig that bowline honours, with istiod's
//! defaults. A bad `extensionProviders` entry spoils only itself (kept as invalid,
//! reported in `provider_problems`); anything else that is bad makes the whole config invalid.
//!
//! Contract: one mesh configuration is in force at a time (the cluster's ConfigMap, else
//! `--mesh-config`, else the defaults). Translation reads it from the model; the CA, the
//! authenticators and the TLS ports read its trust domain from `ca::TrustDomain`, which the push
//! loop sets from that same configuration, so certificates, token checks, SAN matchers and RBAC
//! principals never name different trust domains.

use std::collections::BTreeMap;

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

impl OutboundTrafficPolicy {
    /// Istio's name of the mode (`ALLOW_ANY`, `REGISTRY_ONLY`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutboundTrafficPolicy::AllowAny => "ALLOW_ANY",
            OutboundTrafficPolicy::RegistryOnly => "REGISTRY_ONLY",
        }
    }
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
    /// What is wrong with entries of `extensionProviders`; each problem concerns only its
    /// provider (kept as [`Provider::Invalid`]), never the rest of the mesh config.
    #[serde(skip)]
    pub provider_problems: Vec<MeshError>,
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
    /// An entry that cannot be used, and why: CUSTOM policies naming it deny what they select,
    /// as istiod does for a provider with errors.
    Invalid(String),
}

/// A provider CUSTOM AuthorizationPolicies can use.
#[derive(Debug, Clone, Copy)]
pub enum Authorizer<'a> {
    Http(&'a ExtAuthzHttp),
    Grpc(&'a ExtAuthzGrpc),
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
            provider_problems: Vec::new(),
        }
    }
}

/// Errors in a mesh configuration file.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum MeshError {
    #[error("mesh config: invalid YAML: {0}")]
    Yaml(String),
    #[error("mesh config: {field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error("mesh config: extensionProviders[{index}] (name {name:?}): {message}")]
    Provider {
        index: usize,
        name: String,
        message: String,
    },
}

impl MeshConfig {
    /// Parses the YAML of istiod's `mesh` ConfigMap key. The fields bowline honours are read
    /// and checked; the many others MeshConfig has are accepted and ignored. A bad extension
    /// provider is not an error of the whole config: it is kept as invalid and listed in
    /// `provider_problems` (istiod, too, only warns about invalid providers).
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
                let (name, provider) = extension_provider(item);
                let provider = provider.unwrap_or_else(|message| {
                    mesh.provider_problems.push(MeshError::Provider {
                        index,
                        name: name.clone(),
                        message: format!(
                            "{message}; CUSTOM authorization policies naming it deny the requests they select"
                        ),
                    });
                    Provider::Invalid(message)
                });
                // istiod merges providers by name: a later entry replaces an earlier one.
                match mesh.extension_providers.iter_mut().find(|p| p.name == name) {
                    Some(earlier) => {
                        mesh.provider_problems.push(MeshError::Provider {
                            index,
                            name: name.clone(),
                            message: "duplicate extension provider name; this entry replaces the earlier one".to_string(),
                        });
                        earlier.provider = provider;
                    }
                    None => mesh
                        .extension_providers
                        .push(ExtensionProvider { name, provider }),
                }
            }
        }
        Ok(mesh)
    }

    /// The extension provider of this name.
    pub fn extension_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }

    /// The external authorizer a CUSTOM AuthorizationPolicy names, or why there is none to
    /// use: not defined, not an authorizer, or invalid.
    pub fn authorizer(&self, name: &str) -> Result<Authorizer<'_>, String> {
        let Some(provider) = self.extension_provider(name) else {
            let known: Vec<&str> = self
                .extension_providers
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            return Err(format!(
                "extension provider {name:?} is not defined in the mesh config (defined: {known:?})"
            ));
        };
        match &provider.provider {
            Provider::Other(kind) => Err(format!(
                "extension provider {name:?} is a {kind} provider, not an external authorizer"
            )),
            Provider::Invalid(e) => Err(format!("extension provider {name:?} is invalid: {e}")),
            Provider::EnvoyExtAuthzHttp(p) => Ok(Authorizer::Http(p)),
            Provider::EnvoyExtAuthzGrpc(p) => Ok(Authorizer::Grpc(p)),
        }
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

/// An authorizer's name is part of metadata keys and RBAC policy names: istiod's authorization
/// builder accepts only lowercase DNS-label characters (up to 63, no hyphen at either end).
fn validate_authorizer_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!(
            "invalid provider name: too long (max 63 characters): {}",
            name.len()
        ));
    }
    if let Some((i, c)) = name
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let what = if c.is_ascii_uppercase() {
            "uppercase letters are not allowed (use lowercase)"
        } else {
            "only lowercase letters, digits and hyphens are allowed"
        };
        return Err(format!(
            "invalid provider name: {what}: character {c:?} at position {i}"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("invalid provider name: it cannot start or end with a hyphen".to_string());
    }
    Ok(())
}

/// One `extensionProviders` entry: its name (empty when it has none) and its provider, or what
/// makes it unusable.
fn extension_provider(item: &serde_json::Value) -> (String, Result<Provider, String>) {
    let Some(obj) = item.as_object() else {
        return (String::new(), Err("expected a mapping".to_string()));
    };
    let name = match obj.get("name") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => {
            return (
                other.to_string(),
                Err(format!("name: expected a string, got {other}")),
            );
        }
    };
    let provider = provider_of(&name, obj);
    (name, provider)
}

fn provider_of(
    name: &str,
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<Provider, String> {
    if name.is_empty() {
        return Err("extension provider name must not be empty".to_string());
    }
    let kinds: Vec<&String> = obj.keys().filter(|k| k.as_str() != "name").collect();
    let [kind] = kinds.as_slice() else {
        return Err(format!(
            "must set exactly one provider type, found {}",
            kinds.len()
        ));
    };
    let value = obj.get(kind.as_str()).cloned().unwrap_or_default();
    let value = if value.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        value
    };
    let typed = |e: serde_json::Error| format!("{kind}: {e}");
    let provider = match kind.as_str() {
        "envoyExtAuthzHttp" => {
            validate_authorizer_name(name)?;
            let p: ExtAuthzHttp = serde_json::from_value(value).map_err(typed)?;
            check_common(
                &p.service,
                p.port,
                p.timeout.as_deref(),
                p.status_on_error.as_deref(),
            )?;
            if let Some(prefix) = p.path_prefix.as_deref().filter(|s| !s.is_empty())
                && !prefix.starts_with('/')
            {
                return Err(format!(
                    "pathPrefix should begin with `/` but found {prefix:?}"
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
                        "{field}: a single wildcard (\"*\") or an empty name is not supported, change it to either prefix or suffix match"
                    ));
                }
            }
            Provider::EnvoyExtAuthzHttp(p)
        }
        "envoyExtAuthzGrpc" => {
            validate_authorizer_name(name)?;
            let p: ExtAuthzGrpc = serde_json::from_value(value).map_err(typed)?;
            check_common(
                &p.service,
                p.port,
                p.timeout.as_deref(),
                p.status_on_error.as_deref(),
            )?;
            Provider::EnvoyExtAuthzGrpc(p)
        }
        other => Provider::Other(other.to_string()),
    };
    Ok(provider)
}

fn check_common(
    service: &str,
    port: u32,
    timeout: Option<&str>,
    status_on_error: Option<&str>,
) -> Result<(), String> {
    super::validation::security::validate_provider_service(service)
        .map_err(|e| format!("service: {e}"))?;
    if !(1..=65535).contains(&port) {
        return Err(format!(
            "port must be in the range [1, 65535], found: {port}"
        ));
    }
    if let Some(t) = timeout {
        super::networking::parse_duration(t).map_err(|e| format!("timeout: {e}"))?;
    }
    if let Some(s) = status_on_error.filter(|s| !s.is_empty()) {
        let ok = s.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
        if !ok {
            return Err(format!(
                "unsupported statusOnError {s:?} (an HTTP status code)"
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
        assert!(mesh.provider_problems.is_empty());
    }

    /// A bad provider is only that provider's problem: the rest of the mesh config stays, the
    /// provider is kept as invalid (policies naming it deny), and what istiod accepts is
    /// accepted (names are checked only for authorizers, as istiod's authorization builder).
    #[test]
    fn a_bad_provider_spoils_only_itself() {
        for (entry, why) in [
            (
                "{name: Bad, envoyExtAuthzGrpc: {service: a.b, port: 1}}",
                "uppercase",
            ),
            (
                "{name: a_b, envoyExtAuthzGrpc: {service: a.b, port: 1}}",
                "character",
            ),
            (
                "{name: -a, envoyExtAuthzGrpc: {service: a.b, port: 1}}",
                "hyphen",
            ),
            (
                "{name: a, envoyExtAuthzGrpc: {service: a.b, port: 0}}",
                "port",
            ),
            (
                "{name: a, envoyExtAuthzGrpc: {service: a.b, port: x}}",
                "u32",
            ),
            (
                "{name: a, envoyExtAuthzGrpc: {service: a.b, port: 1, bogus: 1}}",
                "bogus",
            ),
            (
                "{name: a, envoyExtAuthzHttp: {service: a.b, port: 1, pathPrefix: x}}",
                "pathPrefix",
            ),
            (
                "{name: a, envoyExtAuthzHttp: {service: a.b, port: 1, statusOnError: \"999\"}}",
                "statusOnError",
            ),
            (
                "{name: a, envoyExtAuthzHttp: {service: '', port: 1}}",
                "service",
            ),
            ("{name: a}", "provider type"),
            ("{envoyExtAuthzGrpc: {service: a.b, port: 1}}", "empty"),
            (
                "{name: a, envoyExtAuthzGrpc: {service: a.b, port: 1}, zipkin: {}}",
                "provider type",
            ),
            ("not-a-mapping", "mapping"),
        ] {
            let yaml = format!(
                "rootNamespace: mesh-root\nextensionProviders:\n\
                 - {{name: good, envoyExtAuthzGrpc: {{service: a.b, port: 9000}}}}\n- {entry}\n"
            );
            let mesh = MeshConfig::from_yaml(&yaml).unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(mesh.root_namespace, "mesh-root", "{entry}");
            assert!(
                matches!(
                    mesh.extension_provider("good").map(|p| &p.provider),
                    Some(Provider::EnvoyExtAuthzGrpc(_))
                ),
                "{entry}"
            );
            let [
                MeshError::Provider {
                    index: 1, message, ..
                },
            ] = mesh.provider_problems.as_slice()
            else {
                panic!(
                    "{entry}: one problem expected, got {:?}",
                    mesh.provider_problems
                )
            };
            assert!(message.contains(why), "{entry}: {message}");
            let kept = mesh
                .extension_provider(yaml_name(entry))
                .map(|p| &p.provider);
            assert!(
                matches!(kept, Some(Provider::Invalid(_))),
                "{entry}: {kept:?}"
            );
        }
        // Names of providers that are not authorizers are not checked (istiod checks only
        // non-empty and unique), and tracing or logging providers stay as they are.
        let mesh = MeshConfig::from_yaml(
            "extensionProviders:\n- name: Zipkin_Main.v2\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n",
        )
        .unwrap();
        assert!(mesh.provider_problems.is_empty());
        assert!(matches!(
            mesh.extension_provider("Zipkin_Main.v2").map(|p| &p.provider),
            Some(Provider::Other(k)) if k == "zipkin"
        ));
    }

    fn yaml_name(entry: &str) -> &str {
        entry
            .strip_prefix("{name: ")
            .and_then(|r| r.split([',', '}']).next())
            .unwrap_or("")
    }

    /// A name given twice: the later definition replaces the earlier one, as istiod merges
    /// providers by name; the duplicate is reported.
    #[test]
    fn a_duplicate_provider_name_is_replaced_by_the_later_one() {
        let mesh = MeshConfig::from_yaml(
            "extensionProviders:\n\
             - {name: a, envoyExtAuthzGrpc: {service: a.b, port: 1}}\n\
             - {name: b, envoyExtAuthzGrpc: {service: a.b, port: 3}}\n\
             - {name: a, envoyExtAuthzGrpc: {service: a.b, port: 2}}\n",
        )
        .unwrap();
        let names: Vec<&str> = mesh
            .extension_providers
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert!(matches!(
            mesh.extension_provider("a").map(|p| &p.provider),
            Some(Provider::EnvoyExtAuthzGrpc(g)) if g.port == 2
        ));
        assert!(
            matches!(mesh.provider_problems.as_slice(), [MeshError::Provider { index: 2, message, .. }] if message.contains("duplicate")),
            "{:?}",
            mesh.provider_problems
        );
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
}

//! Builders of the configuration documents tests write, for the shapes they repeat: a Service,
//! a WorkloadEntry, a Sidecar with egress and ingress listeners, a DestinationRule, a
//! VirtualService, a PeerAuthentication and an AuthorizationPolicy. Each builds its document as
//! JSON and renders it as one YAML document opening with `---`, so documents concatenate into
//! a file:
//!
//! ```ignore
//! let yaml = docs(&[
//!     &service("echo", "demo").port_to(80, "http", 8080),
//!     &workload_entry("echo-v1", "demo", ip).label("app", "echo").label("version", "v1"),
//!     &sidecar("client", "demo").egress(80, "HTTP", "http", bind),
//! ]);
//! ```
//!
//! Parts with many shapes are given as YAML text (`traffic_policy`, `http_rules`), indented as a
//! test writes them inline. Documents that appear once stay inline in their test.

use std::fmt::Display;

use serde_json::{Map, Value, json};

/// One configuration document.
pub trait Doc {
    /// The document as JSON.
    fn value(&self) -> Value;

    /// The document as YAML, opening with `---`.
    fn yaml(&self) -> String {
        let text = serde_saphyr::to_string(&self.value()).expect("the document renders as YAML");
        format!("---\n{text}")
    }
}

/// The documents as one multi-document YAML file.
pub fn docs(docs: &[&dyn Doc]) -> String {
    docs.iter().map(|d| d.yaml()).collect()
}

/// YAML text as JSON (a fragment indented as a whole is read as if it were not).
pub fn parse(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("test YAML {text:?}: {e}"))
}

/// `apiVersion`, `kind`, `metadata` (name and namespace) and `spec`: what every builder renders.
#[derive(Clone, Debug)]
struct Object {
    api_version: &'static str,
    kind: &'static str,
    name: String,
    namespace: String,
    spec: Map<String, Value>,
}

impl Object {
    fn new(api_version: &'static str, kind: &'static str, name: &str, namespace: &str) -> Object {
        Object {
            api_version,
            kind,
            name: name.to_string(),
            namespace: namespace.to_string(),
            spec: Map::new(),
        }
    }

    fn set(&mut self, key: &str, value: Value) {
        self.spec.insert(key.to_string(), value);
    }

    /// The list `spec.<key>`, created empty if absent.
    fn list(&mut self, key: &str) -> &mut Vec<Value> {
        let entry = self
            .spec
            .entry(key.to_string())
            .or_insert_with(|| json!([]));
        entry.as_array_mut().expect("a list")
    }

    /// The map `spec.<key>`, created empty if absent.
    fn map(&mut self, key: &str) -> &mut Map<String, Value> {
        let entry = self
            .spec
            .entry(key.to_string())
            .or_insert_with(|| json!({}));
        entry.as_object_mut().expect("a map")
    }

    fn value(&self) -> Value {
        json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self.spec,
        })
    }
}

/// `{app: <app>}`, the labels every workload of these tests is selected by.
fn app(app: &str) -> Value {
    json!({ "app": app })
}

macro_rules! doc {
    ($($builder:ident),+) => {
        $(impl Doc for $builder {
            fn value(&self) -> Value {
                self.0.value()
            }
        })+
    };
}

doc!(
    Service,
    WorkloadEntry,
    Sidecar,
    DestinationRule,
    VirtualService,
    PeerAuthentication,
    AuthorizationPolicy
);

/// A Kubernetes Service selecting `app: <name>`.
#[derive(Clone, Debug)]
pub struct Service(Object);

pub fn service(name: &str, namespace: &str) -> Service {
    let mut o = Object::new("v1", "Service", name, namespace);
    o.set("selector", app(name));
    Service(o)
}

impl Service {
    /// A port with no `targetPort` (the same number).
    pub fn port(mut self, port: u16, name: &str) -> Service {
        self.0
            .list("ports")
            .push(json!({"name": name, "port": port}));
        self
    }

    /// A port forwarded to `target`: a number, or the name of a workload's port.
    pub fn port_to(mut self, port: u16, name: &str, target: impl Into<Value>) -> Service {
        self.0
            .list("ports")
            .push(json!({"name": name, "port": port, "targetPort": target.into()}));
        self
    }

    pub fn cluster_ip(mut self, ip: impl Display) -> Service {
        self.0.set("clusterIP", json!(ip.to_string()));
        self
    }

    /// No selector: a Service with no endpoints of its own.
    pub fn no_selector(mut self) -> Service {
        self.0.spec.remove("selector");
        self
    }
}

/// A WorkloadEntry at `address`.
#[derive(Clone, Debug)]
pub struct WorkloadEntry(Object);

pub fn workload_entry(name: &str, namespace: &str, address: impl Display) -> WorkloadEntry {
    let mut o = Object::new("networking.istio.io/v1", "WorkloadEntry", name, namespace);
    o.set("address", json!(address.to_string()));
    WorkloadEntry(o)
}

impl WorkloadEntry {
    pub fn label(mut self, key: &str, value: &str) -> WorkloadEntry {
        self.0.map("labels").insert(key.into(), json!(value));
        self
    }

    /// Labelled `security.istio.io/tlsMode: istio`: clients send it mutual TLS (auto mTLS).
    pub fn mtls(self) -> WorkloadEntry {
        self.label("security.istio.io/tlsMode", "istio")
    }

    /// The workload's port `name` (a Service's port of that name forwards to it).
    pub fn port(mut self, name: &str, number: u16) -> WorkloadEntry {
        self.0.map("ports").insert(name.into(), json!(number));
        self
    }

    pub fn service_account(mut self, account: &str) -> WorkloadEntry {
        self.0.set("serviceAccount", json!(account));
        self
    }

    /// `region/zone/subzone`.
    pub fn locality(mut self, locality: &str) -> WorkloadEntry {
        self.0.set("locality", json!(locality));
        self
    }
}

/// A Sidecar for the workloads labelled `app: <name>`.
#[derive(Clone, Debug)]
pub struct Sidecar(Object);

pub fn sidecar(name: &str, namespace: &str) -> Sidecar {
    let mut o = Object::new("networking.istio.io/v1", "Sidecar", name, namespace);
    o.set("workloadSelector", json!({ "labels": app(name) }));
    Sidecar(o)
}

impl Sidecar {
    /// An egress listener bound on `bind:<number>` without capture, importing the Sidecar's
    /// own namespace (`./*`; see [`Sidecar::hosts`]).
    pub fn egress(
        mut self,
        number: u16,
        protocol: &str,
        name: &str,
        bind: impl Display,
    ) -> Sidecar {
        self.0.list("egress").push(json!({
            "port": {"number": number, "protocol": protocol, "name": name},
            "bind": bind.to_string(),
            "captureMode": "NONE",
            "hosts": ["./*"],
        }));
        self
    }

    /// The hosts every egress listener so far imports, instead of `./*`.
    pub fn hosts(mut self, hosts: &[&str]) -> Sidecar {
        for listener in self.0.list("egress") {
            listener["hosts"] = json!(hosts);
        }
        self
    }

    /// An ingress listener on `bind:<number>` forwarding to `default_endpoint` (`ip:port`).
    pub fn ingress(
        mut self,
        number: u16,
        protocol: &str,
        name: &str,
        bind: impl Display,
        default_endpoint: impl Display,
    ) -> Sidecar {
        self.0.list("ingress").push(json!({
            "port": {"number": number, "protocol": protocol, "name": name},
            "bind": bind.to_string(),
            "defaultEndpoint": default_endpoint.to_string(),
        }));
        self
    }
}

/// A DestinationRule for `host`.
#[derive(Clone, Debug)]
pub struct DestinationRule(Object);

pub fn destination_rule(name: &str, namespace: &str, host: &str) -> DestinationRule {
    let mut o = Object::new("networking.istio.io/v1", "DestinationRule", name, namespace);
    o.set("host", json!(host));
    DestinationRule(o)
}

impl DestinationRule {
    /// One subset per value of label `key`, named after the value.
    pub fn subsets(mut self, key: &str, values: &[&str]) -> DestinationRule {
        for v in values {
            self.0
                .list("subsets")
                .push(json!({"name": v, "labels": {key: v}}));
        }
        self
    }

    /// `spec.trafficPolicy`, as YAML.
    pub fn traffic_policy(mut self, yaml: &str) -> DestinationRule {
        self.0.set("trafficPolicy", parse(yaml));
        self
    }
}

/// A VirtualService for `hosts`.
#[derive(Clone, Debug)]
pub struct VirtualService(Object);

pub fn virtual_service(name: &str, namespace: &str, hosts: &[&str]) -> VirtualService {
    let mut o = Object::new("networking.istio.io/v1", "VirtualService", name, namespace);
    o.set("hosts", json!(hosts));
    VirtualService(o)
}

/// A route destination: `{destination: {host, subset}, weight}`.
#[derive(Clone, Debug)]
pub struct Route(Value);

pub fn route(host: &str) -> Route {
    Route(json!({ "destination": {"host": host} }))
}

impl Route {
    pub fn subset(mut self, subset: &str) -> Route {
        self.0["destination"]["subset"] = json!(subset);
        self
    }

    pub fn weight(mut self, weight: u32) -> Route {
        self.0["weight"] = json!(weight);
        self
    }
}

impl VirtualService {
    /// An HTTP rule with no match sending to `routes`.
    pub fn http_route(mut self, routes: &[Route]) -> VirtualService {
        let routes: Vec<Value> = routes.iter().map(|r| r.0.clone()).collect();
        self.0.list("http").push(json!({ "route": routes }));
        self
    }

    /// HTTP rules given as a YAML list.
    pub fn http_rules(mut self, yaml: &str) -> VirtualService {
        let Value::Array(rules) = parse(yaml) else {
            panic!("HTTP rules are a list: {yaml:?}");
        };
        self.0.list("http").extend(rules);
        self
    }

    /// A TCP rule matching destination port `port`, sending to `routes`.
    pub fn tcp_route(mut self, port: u16, routes: &[Route]) -> VirtualService {
        let routes: Vec<Value> = routes.iter().map(|r| r.0.clone()).collect();
        self.0
            .list("tcp")
            .push(json!({"match": [{"port": port}], "route": routes}));
        self
    }
}

/// A PeerAuthentication with mutual TLS `mode` (STRICT, PERMISSIVE, DISABLE).
#[derive(Clone, Debug)]
pub struct PeerAuthentication(Object);

pub fn peer_authentication(name: &str, namespace: &str, mode: &str) -> PeerAuthentication {
    let mut o = Object::new(
        "security.istio.io/v1",
        "PeerAuthentication",
        name,
        namespace,
    );
    o.set("mtls", json!({ "mode": mode }));
    PeerAuthentication(o)
}

impl PeerAuthentication {
    /// For the workloads labelled `app: <app>` only.
    pub fn selector(mut self, app_label: &str) -> PeerAuthentication {
        self.0
            .set("selector", json!({ "matchLabels": app(app_label) }));
        self
    }
}

/// An AuthorizationPolicy (ALLOW unless [`AuthorizationPolicy::action`] says otherwise).
#[derive(Clone, Debug)]
pub struct AuthorizationPolicy(Object);

pub fn authorization_policy(name: &str, namespace: &str) -> AuthorizationPolicy {
    AuthorizationPolicy(Object::new(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        name,
        namespace,
    ))
}

impl AuthorizationPolicy {
    /// For the workloads labelled `app: <app>` only.
    pub fn selector(mut self, app_label: &str) -> AuthorizationPolicy {
        self.0
            .set("selector", json!({ "matchLabels": app(app_label) }));
        self
    }

    pub fn action(mut self, action: &str) -> AuthorizationPolicy {
        self.0.set("action", json!(action));
        self
    }

    /// A rule matching the peers that prove one of `principals`.
    pub fn principals(mut self, principals: &[&str]) -> AuthorizationPolicy {
        self.0
            .list("rules")
            .push(json!({"from": [{"source": {"principals": principals}}]}));
        self
    }
}

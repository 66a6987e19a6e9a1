//! The cache regenerates a class only when its inputs changed, and only the types they feed;
//! after a change confined to endpoints and rules with exact hosts it carries a class the
//! change does not reach forward without looking at it again. This checks that the result is
//! exactly what a full regeneration gives, class by class, over a sequence of changes that
//! reach some classes and not others (route edits, endpoints, new services, wildcard rules, a
//! destination's ports, a selected Sidecar, an inbound DestinationRule, security policies,
//! rules moved to another host or removed, classes not asked for at every generation), with
//! and without Sidecar scoping.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bowline::cache::{Cache, Snapshot};
use bowline::envoy;
use bowline::envoy::{ResourceType, TypeSet};
use bowline::load::Scenario;
use bowline::load::mesh::{self, Mesh};
use bowline::model::resource::parse_yaml;
use bowline::model::{MeshConfig, Model, Proxy};
use bowline::translate;

fn versions<T: prost::Message + prost::Name>(
    items: &[T],
    name: impl Fn(&T) -> &str,
) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                name(i).to_string(),
                bowline::cache::content_version(&envoy::pack(i)).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn model(files: &[String]) -> Arc<Model> {
    let mut resources = Vec::new();
    for text in files {
        for doc in parse_yaml(text, "test") {
            assert!(
                doc.diagnostics.iter().all(|d| !d.is_error()),
                "{:?}\n{text}",
                doc.diagnostics
            );
            resources.extend(doc.resource.map(Arc::new));
        }
    }
    Arc::new(Model::build(resources, vec![], MeshConfig::default()))
}

fn files(mesh: &Mesh) -> Vec<String> {
    mesh.files().into_iter().map(|(_, c)| c).collect()
}

const EXTERNAL: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: ns-1}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
"#;

/// Applies to the ServiceEntry's host (which has no VirtualService of its own) and routes to
/// svc-3 without naming a port, so the route's cluster depends on svc-3's ports.
const WILDCARD_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild, namespace: ns-1}
spec:
  hosts: ["*.example.com"]
  http:
  - match: [{uri: {prefix: /wild}}]
    route: [{destination: {host: svc-3.ns-3.svc.cluster.local}}]
"#;

const DELEGATING_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: ns-1}
spec:
  hosts: [api.example.com]
  http:
  - match: [{uri: {prefix: /d}}]
    delegate: {name: api-routes, namespace: ns-1}
"#;

/// The delegate of `DELEGATING_VS` (no hosts of its own).
fn delegate(prefix: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api-routes, namespace: ns-1}}
spec:
  http:
  - match: [{{uri: {{prefix: {prefix}}}}}]
    route: [{{destination: {{host: api.example.com}}}}]
"#
    )
}

const ROOT_DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: istio-system}
spec:
  host: "*.cluster.local"
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
"#;

const SELECTED_SIDECAR: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-svc-2, namespace: ns-2}
spec:
  workloadSelector: {labels: {app: svc-2}}
  egress:
  - hosts: ["ns-0/*"]
"#;

const NAMESPACE_AUTHZ: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: ns-1}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
"#;

const MESH_STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"#;

/// A rule for svc-2 that its own proxies apply inbound, whether or not they import svc-2.
const INBOUND_DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-2-inbound, namespace: ns-2}
spec:
  host: svc-2.ns-2.svc.cluster.local
  trafficPolicy: {connectionPool: {http: {http1MaxPendingRequests: 3}}}
"#;

/// For ns-1's proxies labelled `version: v1` only (outbound; rules with a selector are private).
const SELECTED_DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-5-v1-clients, namespace: ns-1}
spec:
  host: svc-5.ns-1.svc.cluster.local
  workloadSelector: {matchLabels: {version: v1}}
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 5}}}
"#;

/// Requests to svc-6 from ns-2's proxies labelled `track: canary` get a route of their own
/// (private to the namespace, it comes before svc-6's public VirtualService there).
const SOURCE_LABELS_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-6-from-canary, namespace: ns-2}
spec:
  hosts: [svc-6.ns-2.svc.cluster.local]
  exportTo: ["."]
  http:
  - match: [{sourceLabels: {track: canary}}]
    route: [{destination: {host: svc-7.ns-3.svc.cluster.local, port: {number: 80}}}]
"#;

/// TCP to svc-8's database port from proxies labelled `tier: t3` goes to svc-9.
const TCP_SOURCE_LABELS_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc-8-db-from-t3, namespace: ns-0}
spec:
  hosts: [svc-8.ns-0.svc.cluster.local]
  tcp:
  - match: [{port: 5432, sourceLabels: {tier: t3}}]
    route: [{destination: {host: svc-9.ns-1.svc.cluster.local, port: {number: 5432}}}]
"#;

/// Endpoints of svc-10 prioritised by the proxy's `version` label.
const FAILOVER_PRIORITY_DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc-10-by-version, namespace: istio-system}
spec:
  host: svc-10.ns-2.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s}
    loadBalancer:
      localityLbSetting: {enabled: true, failoverPriority: [version]}
"#;

/// svc-3 with one port (9090): VirtualService destinations without a port now resolve to it.
fn single_port(text: &str) -> String {
    text.replace(
        "  - name: http\n    port: 80\n    targetPort: 80\n  - name: tcp-db\n    port: 5432\n    targetPort: 5432\n",
        "  - name: http\n    port: 9090\n    targetPort: 9090\n",
    )
}

/// Replaces `from` with `to` in the document of `kind` of a multi-document file.
fn edit_doc(file: &str, kind: &str, from: &str, to: &str) -> String {
    let edited: Vec<String> = file
        .split("---\n")
        .map(|doc| {
            if doc.contains(&format!("kind: {kind}\n")) {
                doc.replacen(from, to, 1)
            } else {
                doc.to_string()
            }
        })
        .collect();
    let out = edited.join("---\n");
    assert_ne!(out, file, "no {kind} with {from:?}");
    out
}

/// Drops the document of `kind` from a multi-document file.
fn drop_doc(file: &str, kind: &str) -> String {
    let kept: Vec<&str> = file
        .split("---\n")
        .filter(|doc| !doc.contains(&format!("kind: {kind}\n")))
        .collect();
    let out = kept.join("---\n");
    assert_ne!(out, file, "no {kind}");
    out
}

/// The file of service `name` (its Service or ServiceEntry, VirtualService, DestinationRule).
fn file_of(files: &[String], name: &str) -> usize {
    files
        .iter()
        .position(|f| f.contains(&format!("name: {name}\n")))
        .unwrap()
}

/// The host a service's DestinationRule names.
fn host_of(file: &str) -> String {
    let start = file.find("  host: \"").unwrap() + "  host: \"".len();
    file[start..].split('"').next().unwrap().to_string()
}

fn check(scoping: bool, registry: &str) {
    let scenario = Scenario::from_yaml(
        &format!(
            "name: t\nmesh: {{services: 12, namespaces: 4, endpoints: 2, sidecar_scoping: {scoping}, destination_rules: true, registry: {registry}, ports: [{{name: http, number: 80}}, {{name: tcp-db, number: 5432}}]}}\nproxies: {{count: 24}}\n"
        ),
        "t",
    )
    .unwrap();
    let proxies: Vec<Proxy> = mesh::proxies(&scenario)
        .iter()
        .map(|p| Proxy::parse(&p.node_id, &serde_json::Value::Object(p.metadata.clone())).unwrap())
        .enumerate()
        // Half the proxies hold a workload certificate: their clusters verify the endpoints'
        // identities and their listeners apply PeerAuthentication.
        .map(|(i, mut p)| {
            p.workload_certificate = i % 2 == 0;
            // Labels only some rules select on (each its own): proxies that differ in them
            // share their outbound part unless such a rule exists.
            p.labels.insert("version".into(), format!("v{}", i % 3 + 1));
            p.labels
                .insert("track".into(), ["stable", "canary"][i / 4 % 2].into());
            p.labels.insert("tier".into(), format!("t{}", i % 4));
            p
        })
        .collect();
    let mut m = Mesh::new(&scenario.mesh, Path::new("/t"));
    let mut states: Vec<(String, Vec<String>)> = vec![("initial".into(), files(&m))];
    m.route_edit(5).unwrap();
    states.push(("route edit".into(), files(&m)));
    m.endpoint_add(6, 1).unwrap();
    states.push(("endpoint add".into(), files(&m)));
    m.endpoint_remove(1, 1).unwrap();
    states.push(("endpoint remove".into(), files(&m)));
    m.new_service(2).unwrap();
    states.push(("new service".into(), files(&m)));
    let mut extra = files(&m);
    extra.push(EXTERNAL.into());
    states.push(("external service".into(), extra.clone()));
    extra.push(WILDCARD_VS.into());
    states.push(("wildcard VirtualService".into(), extra.clone()));
    extra.push(DELEGATING_VS.into());
    extra.push(delegate("/d/one"));
    states.push(("delegating VirtualService".into(), extra.clone()));
    let last = extra.len() - 1;
    extra[last] = delegate("/d/two");
    states.push(("delegate edit".into(), extra.clone()));
    extra.push(ROOT_DR.into());
    states.push(("root DestinationRule".into(), extra.clone()));
    let svc3 = extra
        .iter()
        .position(|f| f.contains("name: svc-3\n"))
        .unwrap();
    if registry == "kubernetes" {
        let changed = single_port(&extra[svc3]);
        assert_ne!(changed, extra[svc3]);
        extra[svc3] = changed;
        states.push(("destination ports".into(), extra.clone()));
    }
    let svc5 = extra
        .iter()
        .position(|f| f.contains("name: svc-5\n"))
        .unwrap();
    let subsets = extra[svc5].replace(
        "  trafficPolicy:\n",
        "  subsets: [{name: v1, labels: {version: v1}}]\n  trafficPolicy:\n",
    );
    assert_ne!(subsets, extra[svc5]);
    extra[svc5] = subsets;
    states.push(("DestinationRule subsets".into(), extra.clone()));
    extra.push(SELECTED_SIDECAR.into());
    states.push(("selected Sidecar".into(), extra.clone()));
    if registry == "kubernetes" {
        // svc-2's proxies import ns-0 only now: a change of svc-2 reaches them inbound only.
        let svc2 = extra
            .iter()
            .position(|f| f.contains("name: svc-2\n"))
            .unwrap();
        extra[svc2] = single_port(&extra[svc2]);
        states.push(("inbound ports".into(), extra.clone()));
    }
    extra.push(INBOUND_DR.into());
    states.push(("inbound DestinationRule".into(), extra.clone()));
    extra.push(NAMESPACE_AUTHZ.into());
    states.push(("namespace AuthorizationPolicy".into(), extra.clone()));
    extra.push(MESH_STRICT.into());
    states.push(("mesh-wide STRICT".into(), extra.clone()));
    let sidecar = extra
        .iter()
        .position(|f| f.contains("name: only-svc-2"))
        .unwrap();
    extra[sidecar] = SELECTED_SIDECAR.replace(
        "  egress:",
        "  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n  egress:",
    );
    states.push(("Sidecar outbound policy".into(), extra.clone()));
    m.route_edit(5).unwrap();
    m.route_edit(0).unwrap();
    let mut last = files(&m);
    last.extend(extra[files(&m).len()..].iter().cloned());
    states.push(("two route edits".into(), last.clone()));
    // svc-7's VirtualService (ns-3) moves to svc-4 (ns-0): proxies that import svc-7 but not
    // svc-4 lose it, those that import svc-4 gain it.
    let svc7 = file_of(&last, "svc-7");
    let svc4 = file_of(&last, "svc-4");
    let (host7, host4) = (host_of(&last[svc7]), host_of(&last[svc4]));
    last[svc7] = edit_doc(
        &last[svc7],
        "VirtualService",
        &format!("hosts: [\"{host7}\"]"),
        &format!("hosts: [\"{host4}\"]"),
    );
    states.push(("VirtualService moved to another host".into(), last.clone()));
    let svc9 = file_of(&last, "svc-9");
    last[svc9] = drop_doc(&last[svc9], "VirtualService");
    states.push(("VirtualService removed".into(), last.clone()));
    let svc10 = file_of(&last, "svc-10");
    last[svc10] = drop_doc(&last[svc10], "DestinationRule");
    states.push(("DestinationRule removed".into(), last.clone()));
    // svc-2's proxies import ns-0 only (the selected Sidecar) but serve svc-2: its rule's
    // connection pool applies to their inbound cluster.
    let svc2 = file_of(&last, "svc-2");
    last[svc2] = edit_doc(
        &last[svc2],
        "DestinationRule",
        "http2MaxRequests: 1000",
        "http2MaxRequests: 999",
    );
    states.push(("served service's DestinationRule".into(), last.clone()));
    m.endpoint_add(7, 1).unwrap();
    let mut now = files(&m);
    for (i, f) in now.iter_mut().enumerate() {
        if i != file_of(&files(&m), "svc-7") {
            *f = last[i].clone();
        }
    }
    now.extend(last[files(&m).len()..].iter().cloned());
    states.push(("endpoint add after the rule moves".into(), now));
    // Rules that make the outbound part depend on a label.
    let mut next = states.last().unwrap().1.clone();
    next.push(SELECTED_DR.into());
    states.push((
        "DestinationRule with a workload selector".into(),
        next.clone(),
    ));
    next.push(SOURCE_LABELS_VS.into());
    states.push(("VirtualService sourceLabels match".into(), next.clone()));
    next.push(TCP_SOURCE_LABELS_VS.into());
    states.push(("tcp sourceLabels match".into(), next.clone()));
    next.push(FAILOVER_PRIORITY_DR.into());
    states.push(("failoverPriority".into(), next.clone()));
    next.pop();
    states.push(("failoverPriority removed".into(), next.clone()));
    let selected = next.iter().position(|f| f == SELECTED_DR).unwrap();
    next[selected] = SELECTED_DR.replace("version: v1", "version: v2");
    states.push(("workload selector changed".into(), next.clone()));
    next.retain(|f| f != SOURCE_LABELS_VS);
    states.push(("sourceLabels match removed".into(), next.clone()));
    // Warnings raised while generating clusters and endpoints, then changes that regenerate
    // some types and not others: each type keeps its own diagnostics.
    let svc8 = file_of(&next, "svc-8");
    next[svc8] = edit_doc(
        &next[svc8],
        "DestinationRule",
        "  trafficPolicy:\n",
        "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, zoneAwareLbSetting: {enabled: true}}\n",
    );
    states.push(("DestinationRule with a warning".into(), next.clone()));
    m.endpoint_add(8, 1).unwrap();
    let mut warned = files(&m);
    for (i, f) in warned.iter_mut().enumerate() {
        if i != file_of(&files(&m), "svc-8") {
            *f = next[i].clone();
        } else {
            *f = edit_doc(
                f,
                "DestinationRule",
                "  trafficPolicy:\n",
                "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, zoneAwareLbSetting: {enabled: true}}\n",
            );
        }
    }
    warned.extend(next[files(&m).len()..].iter().cloned());
    states.push(("endpoint add beside a warning".into(), warned.clone()));
    m.route_edit(8).unwrap();
    let mut edited = files(&m);
    let svc8 = file_of(&edited, "svc-8");
    for (i, f) in edited.iter_mut().enumerate() {
        if i != svc8 {
            *f = warned[i].clone();
        } else {
            *f = edit_doc(
                f,
                "DestinationRule",
                "  trafficPolicy:\n",
                "  trafficPolicy:\n    loadBalancer: {simple: ROUND_ROBIN, zoneAwareLbSetting: {enabled: true}}\n",
            );
        }
    }
    edited.extend(warned[files(&m).len()..].iter().cloned());
    states.push(("route edit beside a warning".into(), edited.clone()));
    edited[svc8] = edit_doc(
        &edited[svc8],
        "DestinationRule",
        "    loadBalancer: {simple: ROUND_ROBIN, zoneAwareLbSetting: {enabled: true}}\n",
        "",
    );
    states.push(("warning removed".into(), edited.clone()));
    // Generations at which a quarter of the proxies are not asked for: their classes are
    // brought forward over two changes at once afterwards.
    let skipped = [
        "VirtualService moved to another host",
        "DestinationRule removed",
    ];

    let incremental = Cache::new();
    let mut previous: Option<Arc<Snapshot>> = None;
    // Proxies that see the warning while unrelated parts of their configuration change.
    let mut warned_proxies = 0;
    for (generation, (what, state)) in states.iter().enumerate() {
        let model = model(state);
        let changed = match &previous {
            None => TypeSet::ALL,
            Some(p) => bowline::push::changed_types(model.change_from(&p.model)),
        };
        let snapshot = Arc::new(Snapshot {
            generation: generation as u64 + 1,
            model: model.clone(),
            changed,
            changed_at: Instant::now(),
            published_at: Instant::now(),
        });
        incremental.observe(&snapshot);
        for (i, proxy) in proxies.iter().enumerate() {
            if i % 4 == 1 && skipped.contains(&what.as_str()) {
                continue;
            }
            let got = incremental.resources(&snapshot, proxy);
            // The reference: translation of the whole model, every type.
            let out = translate::generate(&model, proxy, TypeSet::ALL);
            let want: [Vec<(String, String)>; 4] = [
                versions(&out.clusters, |c| &c.name),
                versions(&out.endpoints, |c| &c.cluster_name),
                versions(&out.listeners, |l| &l.name),
                versions(&out.routes, |r| &r.name),
            ];
            let want_diagnostics: Vec<String> = out
                .diagnostics
                .iter()
                .map(|d| d.clone().for_proxy(&proxy.name).to_string())
                .collect();
            let got_diagnostics: Vec<String> = got
                .diagnostics_for(&proxy.name)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(
                got_diagnostics, want_diagnostics,
                "scoping {scoping}, {registry}, after {what}: {} diagnostics differ from a full regeneration",
                proxy.id
            );
            if what.contains("beside a warning")
                && want_diagnostics
                    .iter()
                    .any(|d| d.contains("zoneAwareLbSetting"))
            {
                warned_proxies += 1;
            }
            for t in ResourceType::CONFIG {
                let g: Vec<(String, String)> = got
                    .get(t)
                    .items
                    .iter()
                    .map(|(n, v)| (n.clone(), v.version.clone()))
                    .collect();
                assert_eq!(
                    g,
                    want[t as usize],
                    "scoping {scoping}, {registry}, after {what}: {} {} differs from a full regeneration",
                    proxy.id,
                    t.as_str()
                );
            }
        }
        previous = Some(snapshot);
    }
    assert!(
        warned_proxies > 0,
        "no proxy saw the DestinationRule's warning"
    );
}

#[test]
fn skipped_and_full_regeneration_agree_with_sidecar_scoping() {
    check(true, "kubernetes");
}

#[test]
fn skipped_and_full_regeneration_agree_without_scoping() {
    check(false, "kubernetes");
}

#[test]
fn skipped_and_full_regeneration_agree_with_service_entries() {
    check(true, "service_entry");
}

/// The configuration the cache hands `proxy` at `snapshot` is a full regeneration's.
fn assert_full(cache: &Cache, snapshot: &Snapshot, proxy: &Proxy, what: &str) {
    let got = cache.resources(snapshot, proxy);
    let out = translate::generate(&snapshot.model, proxy, TypeSet::ALL);
    let want: [Vec<(String, String)>; 4] = [
        versions(&out.clusters, |c| &c.name),
        versions(&out.endpoints, |c| &c.cluster_name),
        versions(&out.listeners, |l| &l.name),
        versions(&out.routes, |r| &r.name),
    ];
    for t in ResourceType::CONFIG {
        let g: Vec<(String, String)> = got
            .get(t)
            .items
            .iter()
            .map(|(n, v)| (n.clone(), v.version.clone()))
            .collect();
        assert_eq!(
            g,
            want[t as usize],
            "after {what}: {} {} differs from a full regeneration",
            proxy.id,
            t.as_str()
        );
    }
}

const NAMED_TARGET_SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http-web}]
"#;

fn web_pod(name: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}\n\
         spec: {{containers: [{{name: app, image: app, ports: [{{name: http-web, containerPort: {port}}}]}}]}}\n"
    )
}

fn web_vm(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: vm-0, namespace: shop}}\n\
         spec: {{address: 10.0.0.5, labels: {{app: web}}, ports: {{http-web: {port}}}}}\n"
    )
}

/// A Service's named targetPort is each proxy's own workload port (its Pod's container port,
/// its WorkloadEntry's port, the POD_PORTS it reports): proxies alike in everything else get
/// inbound configuration of their own, and a change of a workload's ports that changes no
/// service (a Pod's) or only endpoints (a WorkloadEntry's) reaches its proxy.
#[test]
fn inbound_ports_follow_each_proxys_workload() {
    let proxy = |pod: &str, ip: &str, pod_ports: Option<&str>| {
        let mut metadata = serde_json::json!({
            "NAMESPACE": "shop",
            "LABELS": {"app": "web"},
            "INTERCEPTION_MODE": "REDIRECT",
        });
        if let Some(p) = pod_ports {
            metadata["POD_PORTS"] = p.into();
        }
        Proxy::parse(
            &format!("sidecar~{ip}~{pod}.shop~shop.svc.cluster.local"),
            &metadata,
        )
        .unwrap()
    };
    let proxies = [
        proxy("web-0", "10.0.0.1", None),
        proxy("web-1", "10.0.0.2", None),
        proxy("vm-0", "10.0.0.5", None),
        proxy(
            "web-9",
            "10.0.0.9",
            Some(r#"[{"name":"http-web","containerPort":5050,"protocol":"TCP"}]"#),
        ),
    ];
    let state = |web_1: u16, vm: u16| {
        vec![
            NAMED_TARGET_SERVICE.to_string(),
            web_pod("web-0", 8080),
            web_pod("web-1", web_1),
            web_vm(vm),
        ]
    };
    let states = [
        ("initial", state(7070, 6060)),
        ("a Pod's container port", state(7171, 6060)),
        ("a WorkloadEntry's port", state(7171, 6161)),
    ];
    follow_states(&proxies, &states);
}

const GATEWAY_BASE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
    spec: {selector: {app: web}, ports: [{name: http, port: 80}]}\n";

fn gateway(port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: front, namespace: edge}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n"
    )
}

fn gateway_route(prefix: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: front, namespace: shop}}\n\
         spec:\n  hosts: [shop.example.com]\n  gateways: [edge/front]\n  http:\n  - match: [{{uri: {{prefix: {prefix}}}}}]\n    route: [{{destination: {{host: web}}}}]\n"
    )
}

fn web_entry(ip: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: web-{ip}, namespace: shop}}\n\
         spec: {{address: {ip}, labels: {{app: web}}}}\n"
    )
}

/// A gateway routes hosts that name no service: a VirtualService bound to its Gateway reaches
/// it whatever its hosts, and so do its Gateway and the endpoints it routes to; a sidecar
/// beside it is unaffected by what only the gateway sees.
#[test]
fn gateways_follow_their_gateways_and_virtual_services() {
    let router = Proxy::parse(
        "router~10.0.9.1~ingress-0.edge~edge.svc.cluster.local",
        &serde_json::json!({"NAMESPACE": "edge", "LABELS": {"istio": "ingressgateway"}}),
    )
    .unwrap();
    let sidecar = Proxy::parse(
        "sidecar~10.0.0.1~web-0.shop~shop.svc.cluster.local",
        &serde_json::json!({"NAMESPACE": "shop", "LABELS": {"app": "web"}, "INTERCEPTION_MODE": "REDIRECT"}),
    )
    .unwrap();
    let state = |port: u16, prefix: &str, endpoints: &[&str]| {
        let mut files = vec![
            GATEWAY_BASE.to_string(),
            gateway(port),
            gateway_route(prefix),
        ];
        files.extend(endpoints.iter().map(|ip| web_entry(ip)));
        files
    };
    let states = [
        ("initial", state(80, "/a", &["10.0.0.1"])),
        (
            "a route bound to the Gateway",
            state(80, "/b", &["10.0.0.1"]),
        ),
        ("an endpoint", state(80, "/b", &["10.0.0.1", "10.0.0.2"])),
        (
            "the Gateway's port",
            state(8080, "/b", &["10.0.0.1", "10.0.0.2"]),
        ),
    ];
    follow_states(&[router, sidecar], &states);
}

/// Observes each state in turn (a new generation each, the change computed as the push loop
/// does) and checks every proxy's cached configuration against a full translation.
fn follow_states(proxies: &[Proxy], states: &[(&str, Vec<String>)]) {
    let cache = Cache::new();
    let mut previous: Option<Arc<Snapshot>> = None;
    for (generation, (what, files)) in states.iter().enumerate() {
        let model = model(files);
        let changed = match &previous {
            None => TypeSet::ALL,
            Some(p) => bowline::push::changed_types(model.change_from(&p.model)),
        };
        let snapshot = Arc::new(Snapshot {
            generation: generation as u64 + 1,
            model,
            changed,
            changed_at: Instant::now(),
            published_at: Instant::now(),
        });
        cache.observe(&snapshot);
        for p in proxies {
            assert_full(&cache, &snapshot, p, what);
        }
        previous = Some(snapshot);
    }
}

//! Validation against hand-written documents of every kind (the corpus of Istio's own
//! valid and invalid documents is checked in the integration tests).

use super::destination_rule::validate_localities;
use super::virtual_service::decoded_base64_len;
use super::*;
use crate::model::resource::parse_yaml;

/// Parses one document and returns its diagnostics.
fn diags(yaml: &str) -> Vec<Diagnostic> {
    let parsed = parse_yaml(yaml, "test.yaml");
    assert_eq!(parsed.len(), 1);
    parsed
        .into_iter()
        .next()
        .map(|p| p.diagnostics)
        .unwrap_or_default()
}

fn errors(yaml: &str) -> Vec<String> {
    diags(yaml)
        .into_iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect()
}

fn warnings(yaml: &str) -> Vec<String> {
    diags(yaml)
        .into_iter()
        .filter(|d| !d.is_error())
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect()
}

#[track_caller]
fn assert_ok(yaml: &str) {
    let e = errors(yaml);
    assert!(e.is_empty(), "unexpected errors: {e:#?}");
}

#[track_caller]
fn assert_err(yaml: &str, field: &str, needle: &str) {
    let e = errors(yaml);
    assert!(
        e.iter()
            .any(|m| m.starts_with(&format!("{field}: ")) && m.contains(needle)),
        "expected an error at {field} containing {needle:?}, got {e:#?}"
    );
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: ns}}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

fn dr(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r, namespace: ns}}\nspec:\n  host: reviews\n{spec}"
    )
}

#[test]
fn websocket_upgrade_is_ignored_with_a_warning() {
    let yaml = vs("  - websocketUpgrade: true\n    route:\n    - destination: {host: reviews}\n");
    assert_ok(&yaml);
    assert_eq!(
        warnings(&yaml),
        vec![
            "spec.http[0].websocketUpgrade: websocketUpgrade is no longer part of the Istio API and is ignored; WebSocket upgrades are allowed on every HTTP port"
        ]
    );
}

#[test]
fn virtual_service_basics() {
    assert_ok(&vs(
        "  - route:\n    - destination: {host: reviews, subset: v1}\n",
    ));
    assert_err(
        &vs(
            "  - match:\n    - uri: {regex: \"(unclosed\"}\n    route:\n    - destination: {host: reviews}\n",
        ),
        "spec.http[0].match[0].uri",
        "invalid regex",
    );
    assert_err(
        &vs(
            "  - match:\n    - headers: {x-a: {prefix: \"\"}}\n    route:\n    - destination: {host: reviews}\n",
        ),
        "spec.http[0].match[0].headers.x-a",
        "prefix string match should not be empty",
    );
    // An empty URI prefix is allowed.
    assert_ok(&vs(
        "  - match:\n    - uri: {prefix: \"\"}\n    route:\n    - destination: {host: reviews}\n",
    ));
    assert_err(
        &vs("  - {}\n"),
        "spec.http[0]",
        "route, redirect or directResponse is required",
    );
    assert_err(
        &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 1x\n"),
        "spec.http[0].timeout",
        "invalid duration",
    );
    assert_err(
        &vs("  - route:\n    - destination: {host: reviews}\n    timeout: 0.5ms\n"),
        "spec.http[0].timeout",
        "at least 1ms",
    );
    assert_err(
        &vs("  - route:\n    - destination: {host: \"*\"}\n"),
        "spec.http[0].route[0].destination.host",
        "invalid destination host",
    );
    assert_err(
        &vs("  - route:\n    - destination: {host: reviews, subset: V_1}\n"),
        "spec.http[0].route[0].destination.subset",
        "subset name is invalid",
    );
}

#[test]
fn weights_follow_istio() {
    // Weights are relative: istiod accepts a sum above 100 (and any single weight >= 0).
    assert_ok(&vs(
        "  - route:\n    - destination: {host: a}\n      weight: 550\n    - destination: {host: b}\n      weight: 500\n",
    ));
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n      weight: -1\n    - destination: {host: b}\n      weight: 101\n",
        ),
        "spec.http[0].route[0].weight",
        "weight -1 < 0",
    );
    assert_err(
        &vs("  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n"),
        "spec.http[0].route",
        "total destination weight = 0",
    );
    // A single destination with weight 0 gets all the traffic.
    assert_ok(&vs("  - route:\n    - destination: {host: a}\n"));
}

#[test]
fn virtual_service_hosts_and_gateways() {
    let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [\"*\"]\n  http:\n  - route:\n    - destination: {host: a}\n";
    assert_err(doc, "spec.hosts[0]", "mesh gateway");
    let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [\"*\"]\n  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: a}\n";
    assert_ok(doc);
    let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [a.com, \"*.com\"]\n  http:\n  - route:\n    - destination: {host: a}\n";
    assert_err(doc, "spec.hosts[1]", "duplicate hosts");
    let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [a.com]\n  gateways: [bad_ns/gw]\n  http:\n  - route:\n    - destination: {host: a}\n";
    assert_err(doc, "spec.gateways[0]", "invalid value for namespace");
    // Delegate (no hosts) may not carry gateways or TCP routes.
    let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  gateways: [mesh]\n  tcp:\n  - route:\n    - destination: {host: a}\n";
    assert_err(doc, "spec.gateways", "delegate");
    assert_err(doc, "spec.tcp", "delegate");
}

#[test]
fn virtual_service_route_rules() {
    assert_err(
        &vs("  - redirect: {uri: /a}\n    route:\n    - destination: {host: a}\n"),
        "spec.http[0]",
        "both route and redirect",
    );
    assert_err(
        &vs("  - redirect: {}\n"),
        "spec.http[0].redirect",
        "must specify uri",
    );
    assert_err(
        &vs("  - redirect: {uri: /a, redirectCode: 200}\n"),
        "spec.http[0].redirect.redirectCode",
        "3xx",
    );
    assert_err(
        &vs("  - directResponse: {status: 700}\n"),
        "spec.http[0].directResponse.status",
        "not in range",
    );
    assert_ok(&vs(
        "  - directResponse: {status: 503, body: {string: unavailable}}\n",
    ));
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    retries: {attempts: 3, retryOn: \"5xx,bogus\"}\n",
        ),
        "spec.http[0].retries.retryOn",
        "\"bogus\" is not a valid retryOn policy",
    );
    assert_ok(&vs(
        "  - route:\n    - destination: {host: a}\n    retries: {attempts: 3, retryOn: \"5xx,503,reset\", perTryTimeout: 2s}\n",
    ));
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    retries: {attempts: 0, perTryTimeout: 2s}\n",
        ),
        "spec.http[0].retries",
        "attempts are set to 0",
    );
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    fault: {abort: {httpStatus: 500, percentage: {value: 101}}}\n",
        ),
        "spec.http[0].fault.abort.percentage",
        "percentage 101",
    );
    assert_err(
        &vs("  - route:\n    - destination: {host: a}\n    fault: {abort: {grpcStatus: NOPE}}\n"),
        "spec.http[0].fault.abort.grpcStatus",
        "not supported",
    );
    assert_err(
        &vs("  - route:\n    - destination: {host: a}\n    mirrorPercentage: {value: 120}\n"),
        "spec.http[0].mirrorPercentage",
        "max value of 100",
    );
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}\n",
        ),
        "spec.http[0].rewrite",
        "only contain one of",
    );
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    rewrite: {uriRegexRewrite: {match: \"[\", rewrite: b}}\n",
        ),
        "spec.http[0].rewrite.uriRegexRewrite.match",
        "invalid regex",
    );
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    corsPolicy: {allowMethods: [FETCH], maxAge: 1.5s}\n",
        ),
        "spec.http[0].corsPolicy.allowMethods[0]",
        "not a supported HTTP method",
    );
    assert_err(
        &vs("  - route:\n    - destination: {host: a}\n    corsPolicy: {maxAge: 1.5s}\n"),
        "spec.http[0].corsPolicy.maxAge",
        "seconds precision",
    );
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    headers: {response: {set: {host: x}}}\n",
        ),
        "spec.http[0].headers.response.set.host",
        "cannot set Host header",
    );
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    headers: {request: {set: {x-a: \"50%\"}}}\n",
        ),
        "spec.http[0].headers.request.set.x-a",
        "un-escaped %",
    );
    assert_ok(&vs(
        "  - route:\n    - destination: {host: a}\n    headers: {request: {set: {x-a: \"100%% %HOSTNAME% %REQ(x-b)%\"}}}\n",
    ));
    assert_err(
        &vs(
            "  - route:\n    - destination: {host: a}\n    headers: {request: {set: {host: b}}}\n    rewrite: {authority: c}\n",
        ),
        "spec.http[0].headers.request",
        "authority header cannot be set multiple times",
    );
    // Oneofs are rejected when parsing.
    assert_err(
        &vs(
            "  - match:\n    - uri: {exact: /a, prefix: /b}\n    route:\n    - destination: {host: a}\n",
        ),
        "spec.http[0].match[0].uri",
        "only one of",
    );
}

#[test]
fn virtual_service_warnings() {
    let w = warnings(&vs(
        "  - route:\n    - destination: {host: a}\n  - route:\n    - destination: {host: b}\n",
    ));
    assert!(
        w.iter()
            .any(|m| m.contains("only the last rule can have no matches")),
        "{w:#?}"
    );
    let w = warnings(&vs(
        "  - match: [{uri: {prefix: /a}}]\n    route:\n    - destination: {host: a}\n  - match: [{uri: {prefix: /a}}]\n    route:\n    - destination: {host: b}\n",
    ));
    assert!(
        w.iter()
            .any(|m| m.contains("all matches used by prior rules")),
        "{w:#?}"
    );
}

#[test]
fn tls_and_tcp_routes() {
    let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [\"*.a.com\"]\n  tls:\n  - match: [{sniHosts: [x.b.com]}]\n    route:\n    - destination: {host: a}\n";
    assert_err(
        doc,
        "spec.tls[0].match[0].sniHosts[0]",
        "not a compatible subset",
    );
    let doc = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [a.com]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/33]}]\n    route:\n    - destination: {host: a, port: {number: 70000}}\n";
    assert_err(
        doc,
        "spec.tcp[0].match[0].destinationSubnets[0]",
        "not a valid CIDR",
    );
    assert_err(
        doc,
        "spec.tcp[0].route[0].destination.port.number",
        "1..65535",
    );
}

#[test]
fn destination_rule_rules() {
    assert_ok(&dr("  subsets:\n  - {name: v1, labels: {version: v1}}\n"));
    assert_err(
        &dr("  subsets:\n  - {name: v1}\n  - {name: v1}\n"),
        "spec.subsets[1].name",
        "duplicate subset names",
    );
    assert_err(
        &dr("  trafficPolicy: {}\n"),
        "spec.trafficPolicy",
        "at least one field",
    );
    assert_err(
        &dr(
            "  trafficPolicy:\n    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}\n",
        ),
        "spec.trafficPolicy.loadBalancer",
        "only one of `simple`, `consistentHash`",
    );
    assert_err(
        &dr(
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x, useSourceIp: true}\n",
        ),
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "only one of",
    );
    assert_err(
        &dr(
            "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}\n",
        ),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "prime",
    );
    assert_err(
        &dr("  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {ttl: 0s}}\n"),
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "name required",
    );
    assert_ok(&dr(
        "  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpCookie: {name: c, ttl: 0s}, ringHash: {minimumRingSize: 1024}}\n",
    ));
    assert_err(
        &dr("  trafficPolicy:\n    loadBalancer:\n      warmup: {duration: 10s, aggression: 0}\n"),
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
        "greater than 0",
    );
    assert_err(
        &dr(
            "  trafficPolicy:\n    loadBalancer:\n      warmup: {duration: 10s, minimumPercent: -1}\n",
        ),
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        "between 0 and 100",
    );
    assert_err(
        &dr("  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: 0s}\n"),
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "at least 1ms",
    );
    assert_ok(&dr(
        "  trafficPolicy:\n    connectionPool:\n      tcp: {idleTimeout: 0s}\n",
    ));
    assert_err(
        &dr(
            "  trafficPolicy:\n    connectionPool:\n      http: {http2KeepAlive: {interval: 1s}}\n",
        ),
        "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
        "required",
    );
    assert_err(
        &dr("  trafficPolicy:\n    outlierDetection: {maxEjectionPercent: 101}\n"),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "0..100",
    );
    assert_err(
        &dr("  trafficPolicy:\n    outlierDetection: {consecutiveLocalOriginFailures: 3}\n"),
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        "splitExternalLocalOriginErrors",
    );
    assert_err(
        &dr("  trafficPolicy:\n    tls: {mode: MUTUAL}\n"),
        "spec.trafficPolicy.tls.clientCertificate",
        "required for mutual tls",
    );
    assert_err(
        &dr("  trafficPolicy:\n    portLevelSettings:\n    - {port: {number: 80}}\n"),
        "spec.trafficPolicy.portLevelSettings[0]",
        "at least one field",
    );
    assert_err(
        &dr("  trafficPolicy:\n    tunnel: {protocol: GET, targetHost: a.com, targetPort: 0}\n"),
        "spec.trafficPolicy.tunnel.protocol",
        "CONNECT",
    );
    assert_err(
        &dr(
            "  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - {from: us/a/*, to: {\"us/b/*\": 60, \"us/c/*\": 30}}\n",
        ),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "total locality weight 90 != 100",
    );
    assert_err(
        &dr("  exportTo: [\".\", \"*\"]\n"),
        "spec.exportTo",
        "both public",
    );
    assert_err(
        &dr("  exportTo: [\"~\"]\n"),
        "spec.exportTo[0]",
        "not allowed",
    );
    assert_err(
        &dr("  exportTo: [ns, \".\"]\n"),
        "spec.exportTo[1]",
        "duplicate entries in exportTo: . and current namespace ns",
    );
    assert_err(
        &dr("  workloadSelector: {matchLabels: {app: \"*\"}}\n"),
        "spec.workloadSelector.matchLabels.app",
        "wildcard",
    );
    assert_err(
        &dr("  workloadSelector: {matchLabels: {app: a}}\n  exportTo: [other]\n"),
        "spec.exportTo",
        "beyond current namespace",
    );
}

#[test]
fn service_entry_rules() {
    let se = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s, namespace: ns}}\nspec:\n{spec}"
        )
    };
    assert_ok(&se(
        "  hosts: [a.com]\n  addresses: [10.0.0.1]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n",
    ));
    assert_err(
        &se(
            "  hosts: [a.com]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{address: a.com}, {address: b.com}]\n",
        ),
        "spec.endpoints",
        "DNS_ROUND_ROBIN",
    );
    assert_err(
        &se("  hosts: [a.com]\n  resolution: STATIC\n  endpoints: [{address: a.com}]\n"),
        "spec.endpoints[0].address",
        "not a valid IP",
    );
    assert_err(
        &se(
            "  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints: [{address: 1.1.1.1, ports: {grpc: 90}}]\n",
        ),
        "spec.endpoints[0].ports.grpc",
        "not defined by the service entry",
    );
    assert_err(
        &se(
            "  hosts: [a.com, b.com]\n  ports: [{number: 80, name: tcp, protocol: TCP}]\n  resolution: DNS\n",
        ),
        "spec.ports[0]",
        "multiple hosts",
    );
    assert_err(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: http, protocol: SMTP}]\n"),
        "spec.ports[0].protocol",
        "unsupported protocol",
    );
    assert_err(
        &se("  hosts: [a.com]\n  resolution: DYNAMIC_DNS\n"),
        "spec.hosts[0]",
        "wildcarded",
    );
    assert_err(
        &se("  hosts: [a.com]\n  exportTo: [\"~\", \"*\"]\n"),
        "spec.exportTo",
        "no one (~)",
    );
    assert_ok(&se("  hosts: [a.com]\n  exportTo: [\"~\"]\n"));
    let w = warnings(&se("  hosts: [\"a*.com\"]\n"));
    assert!(w.iter().any(|m| m.contains("partial wildcard")), "{w:#?}");
}

#[test]
fn workload_entry_rules() {
    let we = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: w}}\nspec:\n{spec}"
        )
    };
    assert_ok(&we(
        "  address: 10.0.0.1\n  ports: {http: 8080}\n  labels: {app: a}\n",
    ));
    assert_ok(&we("  address: unix:///var/run/a.sock\n"));
    assert_err(
        &we("  address: \"bad_name!\"\n"),
        "spec.address",
        "not a valid FQDN",
    );
    assert_err(
        &we("  address: 10.0.0.1\n  labels: {\"bad key!\": a}\n"),
        "spec.labels",
        "invalid label key",
    );
    assert_err(
        &we("  address: 10.0.0.1\n  ports: {http: 0}\n"),
        "spec.ports.http",
        "1-65535",
    );
    assert_err(&we("  address: unix://\n"), "spec.address", "absolute path");
}

#[test]
fn sidecar_rules() {
    let sc = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: s, namespace: ns}}\nspec:\n{spec}"
        )
    };
    assert_ok(&sc("  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n"));
    assert_err(&sc("  {}\n"), "spec", "empty configuration");
    assert_err(
        &sc("  egress:\n  - hosts: [reviews]\n"),
        "spec.egress[0].hosts[0]",
        "namespace/dnsName",
    );
    assert_err(
        &sc("  egress:\n  - hosts: [\"ns/reviews\"]\n"),
        "spec.egress[0].hosts[0]",
        "short names",
    );
    assert_err(
        &sc(
            "  egress:\n  - hosts: [\"*/*\"]\n  - port: {number: 80, protocol: HTTP, name: http}\n    hosts: [\"*/*\"]\n",
        ),
        "spec.egress[0]",
        "should be the last listener",
    );
    assert_err(
        &sc(
            "  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    bind: 10.0.0.1\n    hosts: [\"*/*\"]\n",
        ),
        "spec.egress[0].bind",
        "unix domain socket bind",
    );
    assert_err(
        &sc(
            "  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    bind: unix:///a.sock\n    captureMode: IPTABLES\n    hosts: [\"*/*\"]\n",
        ),
        "spec.egress[0].captureMode",
        "DEFAULT/NONE",
    );
    assert_err(
        &sc(
            "  ingress:\n  - port: {number: 80, protocol: HTTP, name: http}\n    defaultEndpoint: 10.1.1.1:8080\n",
        ),
        "spec.ingress[0].defaultEndpoint",
        "must be of form",
    );
    assert_ok(&sc(
        "  ingress:\n  - port: {number: 80, protocol: HTTP, name: http}\n    defaultEndpoint: 127.0.0.1:8080\n",
    ));
    assert_err(
        &sc(
            "  outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: a.com, port: {number: 80}}}\n",
        ),
        "spec.outboundTrafficPolicy.egressProxy",
        "ALLOW_ANY",
    );
}

#[test]
fn gateway_rules() {
    let gw = |servers: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
        )
    };
    assert_ok(&gw(
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
    ));
    assert_ok(&gw(
        "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"ns/a.com\"]\n    tls: {mode: SIMPLE, credentialName: cert}\n",
    ));
    assert_err(
        &gw("  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"a.com\"]\n"),
        "spec.servers[0].tls",
        "must have TLS settings",
    );
    assert_err(
        &gw(
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"a.com\"]\n    tls: {mode: SIMPLE}\n",
        ),
        "spec.servers[0].tls.serverCertificate",
        "requires a server certificate",
    );
    assert_err(
        &gw(
            "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"a.com\"]\n    tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}\n",
        ),
        "spec.servers[0].tls.caCertificates",
        "client CA bundle",
    );
    assert_err(
        &gw("  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a]\n"),
        "spec.servers[0].hosts[0]",
        "short names",
    );
    assert_err(
        &gw("  - port: {number: 80, name: http, protocol: FOO}\n    hosts: [\"*\"]\n"),
        "spec.servers[0].port.protocol",
        "invalid protocol",
    );
    assert_err(
        &gw(
            "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n  - port: {number: 81, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
        ),
        "spec.servers[1].port.name",
        "unique",
    );
    assert_err(
        &gw(
            "  - port: {number: 80, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: c}\n",
        ),
        "spec.servers[0].tls",
        "non HTTPS/TLS",
    );
    // A plain HTTP server may ask for an HTTPS redirect.
    assert_ok(&gw(
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {httpsRedirect: true}\n",
    ));
    let doc = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw.x}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    assert_err(doc, "metadata.name", "invalid gateway name");
}

#[test]
fn kube_kinds() {
    let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - {port: 80}\n  - {port: 70000, name: b}\n";
    assert_err(doc, "spec.ports[0].name", "more than one port");
    assert_err(doc, "spec.ports[1].port", "1..65535");
    assert_ok(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - {port: 80}\n",
    );
}

#[test]
fn secrets() {
    let secret = |rest: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: front, namespace: edge}}\n{rest}")
    };
    // The API server's own fields are accepted and ignored.
    assert_ok(&secret(
        "type: kubernetes.io/tls\nimmutable: true\ndata: {tls.crt: Q0VSVA==, tls.key: S0VZ}\n",
    ));
    assert_ok(&secret("stringData: {cert: C, key: K}\n"));
    assert_ok(&secret(""));
    // The value is never part of the message.
    let e = errors(&secret("data: {tls.key: \"not base64!\"}\n"));
    assert_eq!(e, vec!["data[tls.key]: value is not valid base64"]);
    let e = errors(&secret("stringData: {pin: 123456}\n"));
    assert_eq!(e, vec!["stringData[pin]: value is not a string"]);
    let e = errors(&secret(
        "type: kubernetes.io/tls\nstringData: {tls.crt: C}\n",
    ));
    assert_eq!(
        e,
        vec!["data[tls.key]: Required value: a kubernetes.io/tls Secret holds tls.key"]
    );
    assert_err(
        &secret("stringData: {\"a/b\": x}\n"),
        "data[a/b]",
        "invalid key",
    );
    assert_err(
        &secret("stringData: {..a: x}\n"),
        "data[..a]",
        "start with '..'",
    );
    let d = diags(&secret("data: {key: \"%%\"}\n"));
    assert_eq!(
        (
            d[0].kind.as_str(),
            d[0].namespace.as_str(),
            d[0].name.as_str()
        ),
        ("Secret", "edge", "front")
    );
}

#[test]
fn secret_values_never_show() {
    let parsed = parse_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {tls.key: SECRETVALUE}\ndata: {cert: U0VDUkVUVkFMVUU=}\n",
        "t",
    );
    let resource = parsed[0].resource.as_ref().expect("valid");
    let Spec::Secret(s) = &resource.spec else {
        panic!("a Secret")
    };
    assert_eq!(s.type_, "Opaque");
    assert_eq!(s.data.get("tls.key"), Some(&b"SECRETVALUE"[..]));
    assert_eq!(s.data.get("cert"), Some(&b"SECRETVALUE"[..]));
    let shown = format!("{resource:?} {}", serde_json::to_string(resource).unwrap());
    assert!(
        !shown.contains("SECRETVALUE") && !shown.contains("U0VDUkVU"),
        "{shown}"
    );
    assert!(
        shown.contains("tls.key") && shown.contains("[redacted]"),
        "{shown}"
    );
}

#[test]
fn null_fields_are_pruned() {
    // As the API server does: `field:` with no value is dropped, not a type error.
    assert_ok(&dr(
        "  exportTo:\n  trafficPolicy:\n    tls: {mode: SIMPLE, sni: ~}\n",
    ));
    let doc =
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec:\n";
    assert_err(doc, "spec", "Required value");
}

#[test]
fn helpers() {
    assert!(validate_wildcard_domain("*.example.com").is_ok());
    assert!(validate_wildcard_domain("reviews").is_ok());
    assert!(validate_wildcard_domain("*").is_ok());
    assert!(validate_wildcard_domain("a.*.com").is_err());
    assert!(validate_wildcard_domain("a.123").is_err());
    assert!(validate_fqdn("istio.io.").is_ok());
    assert!(hosts_match("*.a.com", "b.a.com"));
    assert!(!hosts_match("a.com", "b.com"));
    assert!(host_subset_of("*.b.a.com", "*.a.com"));
    assert!(!host_subset_of("*.a.com", "b.a.com"));
    assert!(is_prime(65537) && !is_prime(65536) && is_prime(2));
    assert!(validate_localities(&["us", "us/a"]).is_err());
    assert!(validate_localities(&["us/a", "us/b/c"]).is_ok());
    assert_eq!(split_host_port("[::1]:80"), Some(("::1", "80")));
    assert_eq!(split_host_port(":80"), Some(("", "80")));
    assert_eq!(decoded_base64_len("aGVsbG8="), Some(5));
    assert_eq!(decoded_base64_len("a"), None);
    assert!(validate_label_key("app.kubernetes.io/name").is_ok());
    assert!(validate_label_key("-bad").is_err());
    assert!(validate_header_value("%DOWNSTREAM_REMOTE_ADDRESS%").is_ok());
    assert!(validate_header_value("%START_TIME%%").is_err());
    assert!(validate_header_value("a\u{1}b").is_err());
}

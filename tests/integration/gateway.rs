//! Gateways end to end: a real Envoy started as a gateway (`bowline bootstrap --type router`)
//! in a network namespace of the test's own, configured by bowline from Istio Gateways and
//! VirtualServices, carrying real requests and real TLS to backends in the same namespace.
//!
//! bookinfo's gateway and VirtualService route `/productpage`; an `httpsRedirect` server
//! answers 301; an HTTPS SIMPLE server presents the certificate its files name; a MUTUAL server
//! refuses a client without a certificate and admits one signed by its CA; a PASSTHROUGH server
//! hands the TLS connection, chosen by SNI, to a TLS backend that terminates it; a conflicting
//! server is reported and leaves the port serving; an AuthorizationPolicy selecting the gateway
//! is enforced. Credentials come from Secrets over SDS and rotate; Istio's egress pattern
//! carries a captured sidecar's request through an egress gateway over mutual TLS; and every
//! gateway configuration of the golden cases and Istio's corpus loads into a real Envoy.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::netns::Netns;
use common::{Bowline, Envoy, HttpClient, Net, ProxySpec, TempDir};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GATEWAY_IP: &str = "10.89.0.2";
const PRODUCTPAGE_IP: &str = "10.89.1.1";
const SECURE_IP: &str = "10.89.1.2";

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("test address"), port)
}

/// A CA, and leaf certificates it signs.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "gateway test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA");
        Pki {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `name`.
    pub(crate) fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        // A subject of its own: a leaf named like its issuer looks self-issued to OpenSSL.
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }
}

fn config(certs: &std::path::Path) -> String {
    let file = |name: &str| certs.join(name).display().to_string();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: productpage, namespace: default}}
spec:
  selector: {{app: productpage}}
  ports:
  - {{name: http, port: 9080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: productpage-v1, namespace: default}}
spec: {{address: {PRODUCTPAGE_IP}, labels: {{app: productpage}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: secure, namespace: default}}
spec:
  selector: {{app: secure}}
  ports:
  - {{name: tls, port: 5443}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: secure-1, namespace: default}}
spec: {{address: {SECURE_IP}, labels: {{app: secure}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bookinfo-gateway, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: 8081, name: http-redirect, protocol: HTTP}}
    hosts: [bookinfo.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [bookinfo.example.com]
    tls:
      mode: SIMPLE
      serverCertificate: {server_cert}
      privateKey: {server_key}
  - port: {{number: 9443, name: https-mutual, protocol: HTTPS}}
    hosts: [bookinfo.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: {server_cert}
      privateKey: {server_key}
      caCertificates: {ca}
  - port: {{number: 7443, name: tls-passthrough, protocol: TLS}}
    hosts: [secure.example.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - uri: {{exact: /productpage}}
    - uri: {{prefix: /static}}
    route:
    - destination:
        host: productpage
        port: {{number: 9080}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: secure, namespace: default}}
spec:
  hosts: [secure.example.com]
  gateways: [bookinfo-gateway]
  tls:
  - match:
    - sniHosts: [secure.example.com]
    route:
    - destination: {{host: secure, port: {{number: 5443}}}}
"#,
        server_cert = file("server.pem"),
        server_key = file("server-key.pem"),
        ca = file("ca.pem"),
    )
}

/// A TLS server that greets every client with `name` and closes.
async fn spawn_tls_greeter(
    at: SocketAddr,
    (cert, key): (String, String),
    name: &'static str,
) -> tokio::task::JoinHandle<()> {
    let key_der = bowline::ca::pem::parse(&key)
        .expect("key PEM")
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .expect("a key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(
        common::tls::certs(&cert),
        rustls::pki_types::PrivateKeyDer::try_from(key_der.der).expect("key DER"),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .expect("bind TLS backend");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(format!("{name}\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    })
}

/// A TLS connection to `to` with SNI `host`, trusting `ca_pem`, presenting `client`.
async fn tls_connect(
    to: SocketAddr,
    host: &str,
    ca_pem: &str,
    client: Option<(&str, &str)>,
    alpn: &[&str],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let config = common::tls::client_config(ca_pem, client, alpn);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(to)
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// One HTTP/1.1 request over TLS (SNI `host`, trusting `ca_pem`, presenting `client`):
/// the status code and the certificate the server presented, or the error.
async fn https_get(
    to: SocketAddr,
    host: &str,
    path: &str,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<(u16, Vec<u8>), String> {
    let attempt = async {
        let mut tls = tls_connect(to, host, ca_pem, client, &["http/1.1"]).await?;
        let presented = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP response: {text:?}"))?;
        Ok((status, presented))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// One request on an open connection (`bookinfo.example.com`, `/`), kept open: its status.
async fn keep_alive_get(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> Result<u16, String> {
    let exchange = async {
        tls.write_all(b"GET / HTTP/1.1\r\nhost: bookinfo.example.com\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        // The head, then the body its content-length announces.
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tls.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".to_string());
            }
            bytes.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&bytes).to_string();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("no status: {text:?}"));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// The first line a TLS server sends (SNI `host`, trusting `ca_pem`).
async fn tls_greeting(to: SocketAddr, host: &str, ca_pem: &str) -> Result<String, String> {
    let attempt = async {
        let mut tls = tls_connect(to, host, ca_pem, None, &[]).await?;
        let mut text = String::new();
        tls.read_to_string(&mut text)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(text.lines().next().unwrap_or_default().to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

pub(crate) fn der(pem: &str) -> Vec<u8> {
    common::tls::certs(pem)[0].to_vec()
}

#[test]
fn ingress_gateway_routes_terminates_and_passes_through() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(ns) = Netns::create("gateway", &[GATEWAY_IP, PRODUCTPAGE_IP, SECURE_IP]) else {
        return;
    };
    ns.run(move || async move {
        let pki = Pki::new();
        let server = pki.leaf("bookinfo.example.com");
        let client = pki.leaf("client.example.com");
        let stranger = Pki::new().leaf("client.example.com");
        let certs = TempDir::new("gateway-certs");
        std::fs::write(certs.path().join("server.pem"), &server.0).expect("write");
        std::fs::write(certs.path().join("server-key.pem"), &server.1).expect("write");
        std::fs::write(certs.path().join("ca.pem"), &pki.ca_pem).expect("write");

        let _productpage = common::spawn_backend(addr(PRODUCTPAGE_IP, 9080), "productpage")
            .await
            .expect("productpage");
        let _secure =
            spawn_tls_greeter(addr(SECURE_IP, 5443), pki.leaf("secure.example.com"), "secure")
                .await;
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        bowline.write("gateway.yaml", &config(certs.path()));
        bowline.start().await;
        let spec = ProxySpec::router(
            "istio-ingressgateway-1",
            "istio-system",
            GATEWAY_IP.parse().expect("ip"),
        )
        .label("istio", "ingressgateway");
        let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
        bowline
            .wait_synced(&envoy.proxy_id(), Duration::from_secs(20))
            .await
            .expect("gateway synced");
        let loaded = envoy.loaded().await.expect("config dump");
        assert!(
            !loaded.listeners.iter().any(|l| l.starts_with("virtual")),
            "no sidecar listeners on a gateway: {:?}",
            loaded.listeners
        );

        // bookinfo: /productpage through port 8080, whatever the host; other paths 404.
        let routed = common::wait_until(Duration::from_secs(20), async || {
            matches!(
                HttpClient::new(addr(GATEWAY_IP, 8080)).get("anything.example", "/productpage", &[]).await,
                Ok(r) if r.status == 200 && r.backend() == Some("productpage")
            )
        })
        .await;
        assert!(routed, "/productpage reaches productpage through the gateway");
        let r = HttpClient::new(addr(GATEWAY_IP, 8080))
            .get("anything.example", "/admin", &[])
            .await
            .expect("unrouted path");
        assert_eq!(r.status, 404, "no route for /admin");

        // httpsRedirect: 301 to https.
        let r = HttpClient::new(addr(GATEWAY_IP, 8081))
            .get("bookinfo.example.com", "/productpage", &[])
            .await
            .expect("redirect");
        assert_eq!(r.status, 301);
        assert_eq!(
            r.header("location"),
            Some("https://bookinfo.example.com/productpage")
        );

        // SIMPLE: the certificate of the server's files, and the route behind it.
        let (status, presented) = https_get(
            addr(GATEWAY_IP, 8443),
            "bookinfo.example.com",
            "/productpage",
            &pki.ca_pem,
            None,
        )
        .await
        .expect("HTTPS request");
        assert_eq!(status, 200);
        assert_eq!(presented, der(&server.0), "the gateway presents the server certificate");

        // MUTUAL: no client certificate, or one of another CA, is refused; ours is admitted.
        let anonymous = https_get(
            addr(GATEWAY_IP, 9443),
            "bookinfo.example.com",
            "/productpage",
            &pki.ca_pem,
            None,
        )
        .await;
        assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
        let foreign = https_get(
            addr(GATEWAY_IP, 9443),
            "bookinfo.example.com",
            "/productpage",
            &pki.ca_pem,
            Some((&stranger.0, &stranger.1)),
        )
        .await;
        assert!(foreign.is_err(), "a certificate of another CA: {foreign:?}");
        let admitted = https_get(
            addr(GATEWAY_IP, 9443),
            "bookinfo.example.com",
            "/productpage",
            &pki.ca_pem,
            Some((&client.0, &client.1)),
        )
        .await
        .expect("a client certificate of the CA");
        assert_eq!(admitted.0, 200);

        // PASSTHROUGH: the backend terminates TLS, chosen by SNI; another SNI gets nowhere.
        assert_eq!(
            tls_greeting(addr(GATEWAY_IP, 7443), "secure.example.com", &pki.ca_pem).await,
            Ok("secure".to_string())
        );
        assert!(
            tls_greeting(addr(GATEWAY_IP, 7443), "other.example.com", &pki.ca_pem)
                .await
                .is_err(),
            "an SNI no route names is not passed through"
        );

        // A conflicting server (TCP on the HTTP port) is reported on diagnosticz and in the log,
        // naming both Gateways, and the port keeps serving.
        bowline.write(
            "conflict.yaml",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: late, namespace: default, creationTimestamp: \"2030-01-01T00:00:00Z\"}\n\
             spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: tcp, protocol: TCP}\n    hosts: [\"*\"]\n",
        );
        let reported = common::wait_until(Duration::from_secs(20), async || {
            bowline.diagnosticz().await.is_ok_and(|c| {
                c["translation"].as_array().is_some_and(|t| {
                    t.iter().any(|d| {
                        d["name"] == "late"
                            && d["message"]
                                .as_str()
                                .is_some_and(|m| m.contains("default/bookinfo-gateway"))
                            && d["proxies"][0] == "istio-ingressgateway-1.istio-system"
                    })
                })
            })
        })
        .await;
        assert!(reported, "conflict on diagnosticz: {:?}", bowline.diagnosticz().await);
        let log = bowline.log_tail();
        assert!(
            log.lines().any(|l| l.contains("Gateway/default/late")
                && l.contains("default/bookinfo-gateway")),
            "conflict logged: {log}"
        );
        let r = HttpClient::new(addr(GATEWAY_IP, 8080))
            .get("anything.example", "/productpage", &[])
            .await
            .expect("port 8080 still served");
        assert_eq!(r.status, 200);

        // An AuthorizationPolicy selecting the gateway is enforced on its chains.
        bowline.write(
            "deny.yaml",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-static, namespace: istio-system}\n\
             spec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  action: DENY\n  rules:\n  - to:\n    - operation: {paths: [\"/static*\"]}\n",
        );
        let denied = common::wait_until(Duration::from_secs(20), async || {
            matches!(
                HttpClient::new(addr(GATEWAY_IP, 8080)).get("anything.example", "/static/app.js", &[]).await,
                Ok(r) if r.status == 403
            )
        })
        .await;
        assert!(denied, "the gateway enforces its AuthorizationPolicy");
        let r = HttpClient::new(addr(GATEWAY_IP, 8080))
            .get("anything.example", "/productpage", &[])
            .await
            .expect("allowed path");
        assert_eq!(r.status, 200, "other paths still pass");
        assert_eq!(envoy.rejections().await.expect("stats"), 0, "no NACK");
        drop(envoy);
    });
}

/// A `kubernetes.io/tls` Secret, with the CA that verifies clients (`ca.crt`) if given.
fn tls_secret(name: &str, (cert, key): &(String, String), ca: Option<&str>) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(cert),
        indent(key)
    );
    if let Some(ca) = ca {
        out.push_str(&format!("  ca.crt: |\n    {}\n", indent(ca)));
    }
    out
}

const CREDENTIAL_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: front, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
  - port: {number: 9443, name: https-mutual, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: MUTUAL, credentialName: mutual-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: istio-system}
spec:
  hosts: [bookinfo.example.com]
  gateways: [front]
  http:
  - route:
    - destination: {host: productpage.default.svc.cluster.local, port: {number: 9080}}
---
apiVersion: v1
kind: Service
metadata: {name: productpage, namespace: default}
spec:
  selector: {app: productpage}
  ports:
  - {name: http, port: 9080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage-v1, namespace: default}
spec: {address: 10.89.1.1, labels: {app: productpage}}
"#;

/// `credentialName`: the certificate comes from the Secret over SDS to a gateway that proved
/// its identity, and a rotated Secret is served without restarting Envoy; a MUTUAL server
/// verifies clients against the Secret's CA.
#[test]
fn credential_from_a_secret_is_served_and_rotated() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(ns) = Netns::create("gateway-sds", &[GATEWAY_IP, PRODUCTPAGE_IP]) else {
        return;
    };
    ns.run(move || async move {
        let pki = Pki::new();
        let first = pki.leaf("bookinfo.example.com");
        let second = pki.leaf("bookinfo.example.com");
        let _productpage = common::spawn_backend(addr(PRODUCTPAGE_IP, 9080), "productpage")
            .await
            .expect("productpage");
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        bowline.write("gateway.yaml", CREDENTIAL_GATEWAY);
        bowline.write("secret.yaml", &tls_secret("bookinfo-cert", &first, None));
        bowline.write(
            "mutual.yaml",
            &tls_secret("mutual-cert", &pki.leaf("bookinfo.example.com"), Some(&pki.ca_pem)),
        );
        bowline.start().await;
        let spec = ProxySpec::router(
            "istio-ingressgateway-1",
            "istio-system",
            GATEWAY_IP.parse().expect("ip"),
        )
        .label("istio", "ingressgateway")
        .with_token();
        let envoy = Envoy::start(&envoy_bin, &bowline, spec).await;
        bowline
            .wait_synced(&envoy.proxy_id(), Duration::from_secs(20))
            .await
            .expect("gateway synced");
        let served = async |want: &(String, String)| {
            common::wait_until(Duration::from_secs(20), async || {
                matches!(
                    https_get(addr(GATEWAY_IP, 8443), "bookinfo.example.com", "/", &pki.ca_pem, None).await,
                    Ok((200, presented)) if presented == der(&want.0)
                )
            })
            .await
        };
        assert!(served(&first).await, "the Secret's certificate is served");
        // A client connected before the rotation keeps its connection through it.
        let mut kept = tls_connect(
            addr(GATEWAY_IP, 8443),
            "bookinfo.example.com",
            &pki.ca_pem,
            None,
            &["http/1.1"],
        )
        .await
        .expect("a connection before the rotation");
        assert_eq!(keep_alive_get(&mut kept).await, Ok(200));
        bowline.write("secret.yaml", &tls_secret("bookinfo-cert", &second, None));
        assert!(served(&second).await, "the rotated certificate is served");
        assert_eq!(
            keep_alive_get(&mut kept).await,
            Ok(200),
            "the connection opened before the rotation still serves"
        );

        // MUTUAL: clients verified against the Secret's `ca.crt` (`kubernetes://<name>-cacert`).
        let client = pki.leaf("client.example.com");
        let stranger = Pki::new().leaf("client.example.com");
        let mutual = |cert: Option<(String, String)>| {
            let ca = pki.ca_pem.clone();
            async move {
                https_get(
                    addr(GATEWAY_IP, 9443),
                    "bookinfo.example.com",
                    "/",
                    &ca,
                    cert.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
                )
                .await
            }
        };
        let admitted = common::wait_until(Duration::from_secs(20), async || {
            matches!(mutual(Some(client.clone())).await, Ok((200, _)))
        })
        .await;
        assert!(admitted, "a client certificate of the Secret's CA is admitted");
        assert!(mutual(None).await.is_err(), "no client certificate is refused");
        assert!(
            mutual(Some(stranger.clone())).await.is_err(),
            "a client certificate of another CA is refused"
        );
        assert_eq!(envoy.rejections().await.expect("stats"), 0, "no NACK");
        drop(envoy);
    });
}

/// A configuration to load and the gateway that asks for it.
struct AcceptanceCase {
    label: String,
    yaml: String,
    namespace: String,
    labels: Vec<(String, String)>,
}

/// The golden gateway cases, as their proxy asks for them.
fn golden_cases() -> Vec<AcceptanceCase> {
    common::cases::named("gateway-")
        .into_iter()
        .map(|dir| {
            let (model, proxy) = common::cases::load(&dir);
            let yaml = std::fs::read_dir(dir.join("config"))
                .expect("config dir")
                .filter_map(Result::ok)
                .map(|e| std::fs::read_to_string(e.path()).expect("config file"))
                .collect::<Vec<_>>()
                .join("\n---\n");
            drop(model);
            AcceptanceCase {
                label: dir.display().to_string(),
                yaml,
                namespace: proxy.namespace.clone(),
                labels: proxy.labels.clone().into_iter().collect(),
            }
        })
        .collect()
}

/// Every Gateway of Istio's samples and testdata-config, each asked for by a gateway in its
/// namespace with the labels it selects.
fn corpus_cases(corpus: &std::path::Path) -> Vec<AcceptanceCase> {
    let mut files = Vec::new();
    for dir in ["testdata-config", "samples"] {
        let mut stack = vec![corpus.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("corpus dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let yaml = std::fs::read_to_string(&file).expect("corpus file");
        let name = file.display().to_string();
        for parsed in bowline::model::resource::parse_yaml(&yaml, &name) {
            let Some(r) = parsed.resource else { continue };
            let bowline::model::Spec::Gateway(g) = &r.spec else {
                continue;
            };
            out.push(AcceptanceCase {
                label: format!(
                    "corpus: {name} Gateway {}/{}",
                    r.meta.namespace, r.meta.name
                ),
                yaml: yaml.clone(),
                namespace: r.meta.namespace.clone(),
                labels: g.selector.clone().into_iter().collect(),
            });
        }
    }
    out
}

/// Certificate paths of a configuration moved under `dir`, with a certificate or key written
/// at each: what an operator mounts for file-based gateway TLS.
fn mount_files(yaml: &str, dir: &std::path::Path) -> String {
    let moved = yaml.replace(" /etc/", &format!(" {}/etc/", dir.display()));
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["gateway.example".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate")
        .pem();
    let prefix = format!("{}/etc/", dir.display());
    for word in moved.split_whitespace().filter(|w| w.starts_with(&prefix)) {
        let path = std::path::Path::new(word);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mount dir");
        let contents = if word.contains("key") {
            key.serialize_pem()
        } else {
            cert.clone()
        };
        std::fs::write(path, contents).expect("mount file");
    }
    moved
}

/// Every gateway configuration bowline generates — the golden gateway cases and every Gateway
/// of Istio's corpus — is loaded by a real gateway Envoy without a NACK: every listener
/// bound, and Envoy holding exactly the listeners and clusters bowline sends.
#[test]
fn gateway_configurations_are_accepted_by_envoy() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(corpus) = common::istio_corpus() else {
        return;
    };
    let mut cases = golden_cases();
    cases.extend(corpus_cases(&corpus));
    assert!(cases.len() > 8, "gateway cases found: {}", cases.len());
    let Some(ns) = Netns::create("gateway-accept", &[GATEWAY_IP]) else {
        return;
    };
    ns.run(move || async move {
        let mounts = TempDir::new("gateway-mounts");
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        bowline.start().await;
        let mut failures = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let file = format!("case-{i}.yaml");
            if i > 0 {
                bowline.remove(&format!("case-{}.yaml", i - 1));
            }
            bowline.write(&file, &mount_files(&case.yaml, mounts.path()));
            if let Err(e) = accepted(&envoy_bin, &bowline, case, i, &file).await {
                failures.push(format!("{}: {e}", case.label));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} gateway configurations not accepted:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    });
}

/// Starts a gateway for `case` once bowline has loaded `file`, and checks what Envoy holds.
async fn accepted(
    envoy_bin: &std::path::Path,
    bowline: &Bowline,
    case: &AcceptanceCase,
    i: usize,
    file: &str,
) -> Result<(), String> {
    let loaded = common::wait_until(Duration::from_secs(20), async || {
        bowline.diagnosticz().await.is_ok_and(|c| {
            let origin =
                |v: &serde_json::Value| v["origin"].as_str().is_some_and(|o| o.ends_with(file));
            c["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(origin))
                || c["diagnostics"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(origin))
        })
    })
    .await;
    if !loaded {
        return Err(format!("bowline did not load {file}"));
    }
    let mut spec = ProxySpec::router(
        &format!("gw-{i}"),
        &case.namespace,
        GATEWAY_IP.parse().expect("ip"),
    );
    for (k, v) in &case.labels {
        spec = spec.label(k, v);
    }
    let envoy = Envoy::start(envoy_bin, bowline, spec).await;
    let proxy = envoy.proxy_id();
    bowline.wait_synced(&proxy, Duration::from_secs(20)).await?;
    let sent = common::DumpNames::from_dump(&bowline.config_dump(&proxy).await?);
    // A Gateway with no route bound to it gets no listener, as in istiod (a diagnostic says
    // so); the golden cases all have routes.
    if sent.listeners.is_empty() && !case.label.contains("corpus:") {
        return Err("no listener generated".to_string());
    }
    let held = envoy.loaded().await?;
    if let Some((name, err)) = held.listener_errors.first() {
        return Err(format!("listener {name} in error state: {err}"));
    }
    let rejected = envoy.rejections().await?;
    if rejected > 0 {
        return Err(format!("Envoy counts {rejected} rejected updates"));
    }
    if held.listeners != sent.listeners || held.clusters != sent.clusters {
        return Err(format!(
            "Envoy holds listeners {:?} and clusters {:?}; bowline sends {:?} and {:?}",
            held.listeners, held.clusters, sent.listeners, sent.clusters
        ));
    }
    Ok(())
}

const EGRESS_POD_IP: &str = "10.90.0.2";
const EGRESS_GATEWAY_IP: &str = "10.90.0.3";
const EXTERNAL_IP: &str = "10.90.9.9";

/// Istio's egress pattern with mutual TLS to the gateway: sidecars route the external host to
/// the egress gateway's `external` subset (ISTIO_MUTUAL, SNI the external host); the gateway
/// terminates that mTLS and routes the host to the external ServiceEntry.
fn egress_yaml() -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external, namespace: default}}
spec:
  hosts: [external.example.com]
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints:
  - address: {EXTERNAL_IP}
---
apiVersion: v1
kind: Service
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  ports:
  - {{name: https, port: 80, targetPort: 8080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: istio-egressgateway-1, namespace: istio-system}}
spec:
  address: {EGRESS_GATEWAY_IP}
  labels: {{istio: egressgateway}}
  serviceAccount: istio-egressgateway
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 80, name: https, protocol: HTTPS}}
    hosts: [external.example.com]
    tls: {{mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: egressgateway-for-external, namespace: default}}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: external
    trafficPolicy:
      portLevelSettings:
      - port: {{number: 80}}
        tls: {{mode: ISTIO_MUTUAL, sni: external.example.com}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: external-through-egress, namespace: default}}
spec:
  hosts: [external.example.com]
  gateways: [istio-system/istio-egressgateway, mesh]
  http:
  - match:
    - gateways: [mesh]
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: external
        port: {{number: 80}}
  - match:
    - gateways: [istio-system/istio-egressgateway]
      port: 80
    route:
    - destination:
        host: external.example.com
        port: {{number: 80}}
"#
    )
}

/// A captured sidecar's request to an external host leaves through the egress gateway, over
/// mutual TLS between the two (the external service sees the gateway's sanitized client
/// certificate header naming the sidecar's identity).
#[test]
fn egress_gateway_carries_sidecar_traffic_over_mutual_tls() {
    let Some(envoy_bin) = common::envoy_bin() else {
        return;
    };
    let Some(ns) = Netns::create("egress", &[EGRESS_POD_IP, EGRESS_GATEWAY_IP, EXTERNAL_IP]) else {
        return;
    };
    let pod = (*ns).clone();
    ns.run(move || async move {
        let external = common::spawn_backend(addr(EXTERNAL_IP, 80), "external")
            .await
            .expect("external");
        let net = Net::new();
        let mut bowline = Bowline::new(&net);
        bowline.write("egress.yaml", &egress_yaml());
        bowline.start().await;
        let gateway = Envoy::start(
            &envoy_bin,
            &bowline,
            ProxySpec::router(
                "istio-egressgateway-1",
                "istio-system",
                EGRESS_GATEWAY_IP.parse().expect("ip"),
            )
            .label("istio", "egressgateway")
            .service_account("istio-egressgateway")
            .with_token()
            .run_as_group(common::netns::PROXY_GID),
        )
        .await;
        let sidecar = Envoy::start(
            &envoy_bin,
            &bowline,
            ProxySpec::sidecar("client-0", "default", EGRESS_POD_IP.parse().expect("ip"))
                .label("app", "client")
                .service_account("client")
                .interception("REDIRECT")
                .with_token()
                .run_as_group(common::netns::PROXY_GID),
        )
        .await;
        for e in [&gateway, &sidecar] {
            bowline
                .wait_synced(&e.proxy_id(), Duration::from_secs(20))
                .await
                .expect("synced");
        }
        pod.capture_outbound(sidecar.listen_port);

        let through = common::wait_until(Duration::from_secs(20), async || {
            matches!(
                HttpClient::new(addr(EXTERNAL_IP, 80)).get("external.example.com", "/egress", &[]).await,
                Ok(r) if r.status == 200 && r.backend() == Some("external")
            )
        })
        .await;
        assert!(through, "the external host answers through the egress gateway");
        let seen = external.seen();
        let last = seen.last().expect("a request reached the external service");
        let xfcc = last.header("x-forwarded-client-cert").unwrap_or_default();
        assert!(
            xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/client"),
            "the gateway terminated the sidecar's mTLS: {xfcc:?}"
        );
        assert_eq!(
            gateway.rejections().await.expect("stats") + sidecar.rejections().await.expect("stats"),
            0,
            "no NACK"
        );
    });
}

//! Gateways end to end: a real Envoy started as a gateway (`bowline bootstrap --type router`)
//! in a network namespace of the test's own, configured by bowline from Istio Gateways and
//! VirtualServices, carrying real requests and real TLS to backends in the same namespace.
//!
//! bookinfo's gateway and VirtualService route `/productpage`; an `httpsRedirect` server
//! answers 301; an HTTPS SIMPLE server presents the certificate its files name; a MUTUAL server
//! refuses a client without a certificate and admits one signed by its CA; a PASSTHROUGH server
//! hands the TLS connection, chosen by SNI, to a TLS backend that terminates it.

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

/// One HTTP/1.1 request over TLS (SNI `host`, trusting `ca_pem`, presenting `client`):
/// the status code and the certificate the server presented, or the error.
async fn https_get(
    to: SocketAddr,
    host: &str,
    path: &str,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<(u16, Vec<u8>), String> {
    let config = common::tls::client_config(ca_pem, client, &["http/1.1"]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(to)
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
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

/// The first line a TLS server sends (SNI `host`, trusting `ca_pem`).
async fn tls_greeting(to: SocketAddr, host: &str, ca_pem: &str) -> Result<String, String> {
    let config = common::tls::client_config(ca_pem, None, &[]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(to)
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
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
        drop(envoy);
    });
}

fn tls_secret(name: &str, (cert, key): &(String, String)) -> String {
    let indent = |pem: &str| pem.trim_end().replace('\n', "\n    ");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: istio-system}}\n\
         type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(cert),
        indent(key)
    )
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
/// its identity, and a rotated Secret is served without restarting Envoy, while a client keeps
/// connecting.
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
        bowline.write("secret.yaml", &tls_secret("bookinfo-cert", &first));
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
        bowline.write("secret.yaml", &tls_secret("bookinfo-cert", &second));
        assert!(served(&second).await, "the rotated certificate is served");
        assert_eq!(envoy.rejections().await.expect("stats"), 0, "no NACK");
        drop(envoy);
    });
}

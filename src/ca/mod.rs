//! The certificate authority: bowline's root of trust and the workload certificates it signs.
//!
//! Contract: at start-up [`Ca::load`] reads `--ca-dir` in Istio's `cacerts` layout
//! (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`): an operator's plugged-in CA,
//! or the self-signed root bowline wrote there on its first start (then `ca-cert.pem` is the root
//! itself). Every file is checked (parses, the key matches `ca-cert.pem`, `ca-cert.pem` is a CA,
//! the chain verifies up to the root, nothing has expired) and any problem is one error, before
//! a port is bound. Without a directory the root lives in memory only. Workload certificates carry
//! exactly one URI SAN, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, taken from an authenticated
//! [`Identity`] and never from a CSR; their chain is leaf, then the intermediates, the root last.
//! Private keys are [`KeyMaterial`], which never prints. The caller authentication that gates
//! every certificate is in [`authn`]; the tokens bowline issues are in [`token`]; Istio's
//! `IstioCertificateService` is [`service`]; the TLS ports bowline serves with certificates of
//! its own CA (xDS on 15012, the webhooks) are [`serving`].

pub mod authn;
mod keys;
pub mod pem;
pub mod secret;
pub mod service;
pub mod serving;
pub mod token;
pub mod tokenreview;

/// Generated from `proto/istio/v1/auth/ca.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("istio.v1.auth");
}

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::Serialize;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::model::Identity;

/// Istio's default workload certificate lifetime.
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of the self-signed root bowline creates (istiod's default: 10 years).
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";
/// The key bowline signs its tokens with (see [`token`]), kept beside the CA files.
pub const TOKEN_KEY: &str = "token-key.pem";

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "{dir}: incomplete CA directory: has {present} but not {missing} (Istio's cacerts layout needs ca-cert.pem, ca-key.pem, root-cert.pem and cert-chain.pem)"
    )]
    Incomplete {
        dir: PathBuf,
        present: String,
        missing: String,
    },
    #[error("{0}")]
    Chain(String),
    #[error("signing: {0}")]
    Sign(String),
    #[error("certificate signing request: {0}")]
    Csr(String),
    #[error("CA secret {secret}: {message}")]
    Secret { secret: String, message: String },
}

fn file_error(path: &Path, message: impl Into<String>) -> CaError {
    CaError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Private key bytes (PEM). `Debug` and `Serialize` print `[redacted]`; the bytes are zeroed
/// when dropped. Read them with [`KeyMaterial::expose`] only to hand them to a TLS stack or a
/// proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial(Vec<u8>);

impl KeyMaterial {
    pub fn new(bytes: Vec<u8>) -> KeyMaterial {
        KeyMaterial(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for KeyMaterial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&self.0);
    }
}

/// Where the root of trust came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootSource {
    /// Created by bowline and kept only in memory (no `--ca-dir`).
    Ephemeral,
    /// Created by bowline and persisted in `--ca-dir`.
    SelfSigned,
    /// An operator's CA (the signing certificate is not the root).
    PluggedIn,
}

/// A signed certificate with its chain and private key.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadCert {
    pub identity: Identity,
    /// PEM: the leaf, then the intermediates up to (not including) the root.
    pub chain_pem: String,
    pub key: KeyMaterial,
    /// Hex serial number of the leaf.
    pub serial: String,
    #[serde(skip)]
    pub not_before: SystemTime,
    #[serde(skip)]
    pub not_after: SystemTime,
}

impl WorkloadCert {
    /// Half-life: when a holder asks for a new certificate.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life / 2
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

/// The certificate authority. Cheap to share behind an `Arc`.
pub struct Ca {
    /// The mesh's trust domain in force (set by the push loop); the self-signed root's
    /// organisation keeps the one it was created with.
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    /// Certificates from the signing CA up to the root, the signing CA first, the root
    /// excluded (PEM, concatenated); empty when the signing CA is the root.
    intermediates_pem: String,
    /// The trust bundle (PEM): every certificate of `root-cert.pem`.
    root_pem: String,
    root_der: Vec<Vec<u8>>,
    source: RootSource,
    workload_ttl: Duration,
    token_key: Option<Arc<token::TokenKey>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain.get())
            .field("source", &self.source)
            .field("workload_ttl", &self.workload_ttl)
            .finish_non_exhaustive()
    }
}

/// The PEM texts of Istio's cacerts layout. The key is secret: `Debug` does not print it.
#[derive(Clone)]
pub struct CaFiles {
    pub ca_cert: String,
    pub ca_key: String,
    pub root_cert: String,
    pub cert_chain: String,
}

impl std::fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFiles")
            .field("ca_cert", &self.ca_cert)
            .field("ca_key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// How to set up the CA.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// `--ca-dir`; `None` keeps a root in memory only.
    pub dir: Option<PathBuf>,
    /// The trust domain at start-up (the mesh configuration in force then).
    pub trust_domain: String,
    pub workload_ttl: Duration,
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // The system RNG failing is not an input error; a zero serial is still a valid serial.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Certificates of a PEM text, as DER; `path` names it in errors.
fn parse_certs(path: &Path, text: &str) -> Result<Vec<Vec<u8>>, CaError> {
    let blocks = pem::parse(text).map_err(|e| file_error(path, e))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der)
        .collect();
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE block"));
    }
    for der in &certs {
        X509Certificate::from_der(der)
            .map_err(|e| file_error(path, format!("not an X.509 certificate: {e}")))?;
    }
    Ok(certs)
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CaError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CaError::Chain(format!("not an X.509 certificate: {e}")))
}

fn subject(der: &[u8]) -> String {
    parse_cert(der)
        .map(|c| c.subject().to_string())
        .unwrap_or_default()
}

/// Whether `child` is signed by `parent`'s key.
fn signed_by(child: &[u8], parent: &[u8]) -> bool {
    match (parse_cert(child), parse_cert(parent)) {
        (Ok(c), Ok(p)) => c.verify_signature(Some(p.public_key())).is_ok(),
        _ => false,
    }
}

impl Ca {
    /// Loads or creates the root of trust (see the module docs).
    pub fn load(options: &CaOptions) -> Result<Ca, CaError> {
        let Some(dir) = &options.dir else {
            let (ca_pem, key) = self_signed_root(&options.trust_domain)?;
            let mut ca = Ca::from_parts(options, &ca_pem, key, "", &ca_pem)?;
            ca.source = RootSource::Ephemeral;
            ca.token_key = Some(Arc::new(token::TokenKey::generate()?));
            return Ok(ca);
        };
        let names = [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN];
        let present: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| dir.join(n).exists())
            .collect();
        if present.is_empty() {
            // Modes are explicit, whatever the umask: the directory and certificates readable,
            // writable by the owner only; keys (write_private) the owner's alone.
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(|e| file_error(dir, e.to_string()))?;
            }
            let (ca_pem, key) = self_signed_root(&options.trust_domain)?;
            write_private(&dir.join(CA_KEY), key.expose())?;
            for name in [CA_CERT, ROOT_CERT, CERT_CHAIN] {
                write_public(&dir.join(name), ca_pem.as_bytes())?;
            }
            tracing::info!(dir = %dir.display(), "created a self-signed root CA");
        } else if present.len() < names.len() {
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !present.contains(n))
                .collect();
            return Err(CaError::Incomplete {
                dir: dir.clone(),
                present: present.join(", "),
                missing: missing.join(", "),
            });
        }
        let read = |name: &str| -> Result<String, CaError> {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| file_error(&path, e.to_string()))
        };
        let files = CaFiles {
            ca_cert: read(CA_CERT)?,
            ca_key: read(CA_KEY)?,
            root_cert: read(ROOT_CERT)?,
            cert_chain: read(CERT_CHAIN)?,
        };
        let mut ca = Ca::from_files(options, &files, dir)?;
        ca.token_key = Some(Arc::new(token::TokenKey::load_or_create(
            &dir.join(TOKEN_KEY),
        )?));
        Ok(ca)
    }

    /// A CA from the four PEM texts of Istio's cacerts layout, wherever they were read
    /// (`origin` names the place in errors: a directory, or a Secret). The token key is
    /// generated (kept in memory).
    pub fn from_files(options: &CaOptions, files: &CaFiles, origin: &Path) -> Result<Ca, CaError> {
        // Check each file on its own first, so an error names the file.
        let ca_der = parse_certs(&origin.join(CA_CERT), &files.ca_cert)?;
        parse_certs(&origin.join(ROOT_CERT), &files.root_cert)?;
        let chain_der = parse_certs(&origin.join(CERT_CHAIN), &files.cert_chain)?;
        let key = keys::read_key(&origin.join(CA_KEY), &files.ca_key)?;
        let chain_pem: String = chain_der
            .iter()
            .map(|d| pem::encode("CERTIFICATE", d))
            .collect();
        let ca_pem = pem::encode("CERTIFICATE", &ca_der[0]);
        let mut ca = Ca::from_parts(options, &ca_pem, key, &chain_pem, &files.root_cert).map_err(
            |e| match e {
                CaError::Chain(m) => CaError::Chain(format!("{}: {m}", origin.display())),
                other => other,
            },
        )?;
        ca.source = if ca.intermediates_pem.is_empty() {
            RootSource::SelfSigned
        } else {
            RootSource::PluggedIn
        };
        ca.token_key = Some(Arc::new(token::TokenKey::generate()?));
        Ok(ca)
    }

    /// A new self-signed root in the cacerts layout (for a store other than a directory).
    pub fn new_root_files(trust_domain: &str) -> Result<CaFiles, CaError> {
        let (ca_pem, key) = self_signed_root(trust_domain)?;
        Ok(CaFiles {
            ca_cert: ca_pem.clone(),
            ca_key: String::from_utf8_lossy(key.expose()).into_owned(),
            root_cert: ca_pem.clone(),
            cert_chain: ca_pem,
        })
    }

    /// Builds and checks a CA from PEM parts: the signing certificate, its key, the chain from
    /// it toward the root (may include the signing certificate and the root), and the roots.
    fn from_parts(
        options: &CaOptions,
        ca_pem: &str,
        key: KeyMaterial,
        chain_pem: &str,
        root_pem: &str,
    ) -> Result<Ca, CaError> {
        let certs = |text: &str| -> Result<Vec<Vec<u8>>, CaError> {
            Ok(pem::parse(text)
                .map_err(CaError::Chain)?
                .into_iter()
                .filter(|b| b.label == "CERTIFICATE")
                .map(|b| b.der)
                .collect())
        };
        let ca_der = certs(ca_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Chain(format!("{CA_CERT} has no certificate")))?;
        let roots = certs(root_pem)?;
        if roots.is_empty() {
            return Err(CaError::Chain(format!("{ROOT_CERT} has no certificate")));
        }
        let ca_cert = parse_cert(&ca_der)?;
        if !ca_cert.is_ca() {
            return Err(CaError::Chain(format!(
                "{CA_CERT} ({}) is not a CA certificate (basicConstraints CA:TRUE)",
                ca_cert.subject()
            )));
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let key_pair =
            keys::key_pair(&key).map_err(|e| CaError::Chain(format!("{CA_KEY}: {e}")))?;
        if key_pair.public_key_raw() != ca_cert.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::Chain(format!(
                "{CA_KEY} is not the key of {CA_CERT} ({})",
                ca_cert.subject()
            )));
        }
        // The path from the signing CA to a root: the chain file without the roots, starting
        // with the signing certificate.
        let mut path: Vec<Vec<u8>> = certs(chain_pem)?
            .into_iter()
            .filter(|c| !roots.contains(c))
            .collect();
        if path.first() != Some(&ca_der) {
            path.retain(|c| *c != ca_der);
            path.insert(0, ca_der.clone());
        }
        let is_root = roots.contains(&ca_der);
        if is_root {
            path.clear();
        }
        for der in path.iter().chain(roots.iter()) {
            let c = parse_cert(der)?;
            if c.validity().not_after.timestamp() < now {
                return Err(CaError::Chain(format!(
                    "certificate {} expired at {}",
                    c.subject(),
                    c.validity().not_after
                )));
            }
        }
        for pair in path.windows(2) {
            if !signed_by(&pair[0], &pair[1]) {
                return Err(CaError::Chain(format!(
                    "{CERT_CHAIN}: {} is not signed by the next certificate, {}",
                    subject(&pair[0]),
                    subject(&pair[1])
                )));
            }
        }
        if let Some(last) = path.last()
            && !roots.iter().any(|r| signed_by(last, r))
        {
            return Err(CaError::Chain(format!(
                "{} does not chain to a certificate of {ROOT_CERT}",
                subject(last)
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der.clone().into(), key_pair)
            .map_err(|e| CaError::Chain(format!("{CA_CERT}: {e}")))?;
        let trust_domain = TrustDomain::new(&options.trust_domain);
        Ok(Ca {
            trust_domain,
            issuer,
            intermediates_pem: path.iter().map(|d| pem::encode("CERTIFICATE", d)).collect(),
            root_pem: roots
                .iter()
                .map(|d| pem::encode("CERTIFICATE", d))
                .collect(),
            root_der: roots,
            source: RootSource::SelfSigned,
            workload_ttl: options.workload_ttl,
            token_key: None,
        })
    }

    /// The mesh's trust domain in force.
    pub fn trust_domain(&self) -> String {
        self.trust_domain.get()
    }

    /// The shared trust domain this CA reads: the push loop sets it, the authenticators read
    /// it.
    pub fn trust_domain_source(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn source(&self) -> RootSource {
        self.source
    }

    pub fn workload_ttl(&self) -> Duration {
        self.workload_ttl
    }

    /// When the root certificate and the signing certificate expire (Unix seconds): the first
    /// certificate of the trust bundle, and the first of the chain from the signing CA (the
    /// root itself when it signs).
    pub fn expiry(&self) -> (Option<i64>, Option<i64>) {
        let not_after = |der: &[u8]| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp())
        };
        let root = self.root_der.first().and_then(|d| not_after(d));
        let signing = match pem::parse(&self.intermediates_pem) {
            Ok(blocks) if !blocks.is_empty() => not_after(&blocks[0].der),
            _ => root,
        };
        (root, signing)
    }

    /// Sets `citadel_server_root_cert_expiry_timestamp` and
    /// `citadel_server_cert_chain_expiry_timestamp` from [`Ca::expiry`].
    pub fn record_expiry(&self) {
        let (root, signing) = self.expiry();
        if let Some(t) = root {
            metrics::gauge!("citadel_server_root_cert_expiry_timestamp").set(t as f64);
        }
        if let Some(t) = signing {
            metrics::gauge!("citadel_server_cert_chain_expiry_timestamp").set(t as f64);
        }
    }

    /// The trust bundle, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The trust bundle, DER.
    pub fn root_der(&self) -> &[Vec<u8>] {
        &self.root_der
    }

    /// The intermediates (signing CA first), PEM; empty when the root signs directly.
    pub fn intermediates_pem(&self) -> &str {
        &self.intermediates_pem
    }

    /// The key bowline signs tokens with.
    pub fn token_key(&self) -> Option<&Arc<token::TokenKey>> {
        self.token_key.as_ref()
    }

    /// A new key pair and a certificate for `identity`, valid for the workload TTL.
    pub fn issue(&self, identity: &Identity) -> Result<WorkloadCert, CaError> {
        self.issue_with_ttl(identity, self.workload_ttl)
    }

    pub fn issue_with_ttl(
        &self,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<WorkloadCert, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let (chain_pem, serial, not_before, not_after) =
            self.sign(identity, &key, ttl, Vec::new())?;
        Ok(WorkloadCert {
            identity: identity.clone(),
            chain_pem,
            key: KeyMaterial::new(key.serialize_pem().into_bytes()),
            serial,
            not_before,
            not_after,
        })
    }

    /// Signs the public key of a PEM CSR for `identity` (the CSR's own names are ignored).
    /// Returns the chain, leaf first, root last, as `IstioCertificateService` answers.
    pub fn sign_csr(
        &self,
        identity: &Identity,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        let blocks = pem::parse(csr_pem).map_err(CaError::Csr)?;
        let der = blocks
            .iter()
            .find(|b| b.label == "CERTIFICATE REQUEST" || b.label == "NEW CERTIFICATE REQUEST")
            .map(|b| b.der.as_slice())
            .ok_or_else(|| CaError::Csr("no CERTIFICATE REQUEST block".to_string()))?;
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
            .map_err(|e| CaError::Csr(format!("not a PKCS#10 request: {e}")))?;
        csr.verify_signature()
            .map_err(|e| CaError::Csr(format!("signature does not verify: {e}")))?;
        let spki =
            rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| CaError::Csr(format!("public key: {e}")))?;
        let ttl = if ttl.is_zero() {
            self.workload_ttl
        } else {
            ttl.min(self.workload_ttl)
        };
        let (chain, _, _, _) = self.sign(identity, &spki, ttl, Vec::new())?;
        let mut out: Vec<String> = pem::parse(&chain)
            .map_err(CaError::Sign)?
            .iter()
            .map(|b| pem::encode("CERTIFICATE", &b.der))
            .collect();
        out.extend(self.root_der.first().map(|r| pem::encode("CERTIFICATE", r)));
        Ok(out)
    }

    /// A serving certificate for bowline's own TLS port (DNS and IP SANs), with a new key.
    pub fn issue_server(
        &self,
        dns: &[String],
        ips: &[std::net::IpAddr],
    ) -> Result<WorkloadCert, CaError> {
        let trust_domain = self.trust_domain();
        let identity = Identity::new(&trust_domain, "istio-system", "istiod")
            .ok_or_else(|| CaError::Sign(format!("trust domain {trust_domain:?} is not usable")))?;
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let mut sans = Vec::new();
        for name in dns {
            sans.push(SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|e| CaError::Sign(format!("DNS name {name:?}: {e}")))?,
            ));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let (chain_pem, serial, not_before, not_after) =
            self.sign(&identity, &key, self.workload_ttl, sans)?;
        Ok(WorkloadCert {
            identity,
            chain_pem,
            key: KeyMaterial::new(key.serialize_pem().into_bytes()),
            serial,
            not_before,
            not_after,
        })
    }

    /// Signs `public_key` with the SPIFFE SAN of `identity` (plus `extra` SANs); returns the
    /// chain without the root, the serial and the validity.
    fn sign(
        &self,
        identity: &Identity,
        public_key: &impl rcgen::PublicKeyData,
        ttl: Duration,
        extra: Vec<SanType>,
    ) -> Result<(String, String, SystemTime, SystemTime), CaError> {
        let now = SystemTime::now();
        // Whole seconds: X.509 times have no fractions, and the half-life is computed from
        // what the certificate says.
        let not_before = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default(),
            );
        let not_after = not_before + ttl;
        let uri = identity
            .spiffe_id()
            .try_into()
            .map_err(|e| CaError::Sign(format!("SAN {identity}: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.not_before = to_offset(not_before);
        params.not_after = to_offset(not_after);
        let serial = random_serial();
        let serial_hex = hex(serial.as_ref());
        params.serial_number = Some(serial);
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.subject_alt_names.extend(extra);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        Ok((
            format!("{}{}", cert.pem(), self.intermediates_pem),
            serial_hex,
            not_before,
            not_after,
        ))
    }

    /// The SPIFFE identity in a certificate bowline's root verifies: its URI SAN, when it is in
    /// the trust domain in force. The TLS layer has already verified the chain.
    pub fn identity_of(&self, leaf_der: &[u8]) -> Option<Identity> {
        let cert = parse_cert(leaf_der).ok()?;
        let san = cert.subject_alternative_name().ok().flatten()?;
        let trust_domain = self.trust_domain();
        san.value.general_names.iter().find_map(|n| match n {
            GeneralName::URI(uri) => Identity::parse(uri)
                .ok()
                .filter(|id| id.trust_domain == trust_domain),
            _ => None,
        })
    }
}

/// A new self-signed root: (certificate PEM, key).
fn self_signed_root(trust_domain: &str) -> Result<(String, KeyMaterial), CaError> {
    let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "bowline root CA");
    params.distinguished_name = dn;
    let now = SystemTime::now();
    params.not_before = to_offset(now - Duration::from_secs(60));
    params.not_after = to_offset(now + ROOT_TTL);
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError::Sign(e.to_string()))?;
    Ok((
        cert.pem(),
        KeyMaterial::new(key.serialize_pem().into_bytes()),
    ))
}

/// Writes a certificate: readable by all, writable by its owner only.
fn write_public(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| file_error(path, e.to_string()))?;
    f.write_all(bytes)
        .map_err(|e| file_error(path, e.to_string()))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .map_err(|e| file_error(path, e.to_string()))?;
    f.write_all(bytes)
        .map_err(|e| file_error(path, e.to_string()))
}

#[cfg(test)]
mod tests;

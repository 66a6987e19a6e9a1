use super::*;

fn tmp(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bowline-ca-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn options(dir: Option<PathBuf>) -> CaOptions {
    CaOptions {
        dir,
        trust_domain: "cluster.local".to_string(),
        workload_ttl: DEFAULT_WORKLOAD_TTL,
    }
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).unwrap()
}

fn certs(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse(pem_text)
        .unwrap()
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| b.der)
        .collect()
}

fn uris(der: &[u8]) -> Vec<String> {
    let cert = parse_cert(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("URI:{u}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn workload_certificate_has_the_identity_and_chains_to_the_root() {
    let ca = Ca::load(&options(None)).unwrap();
    assert_eq!(ca.source(), RootSource::Ephemeral);
    let cert = ca.issue(&id("shop", "cart")).unwrap();
    let chain = certs(&cert.chain_pem);
    assert_eq!(chain.len(), 1, "the root signs directly: leaf only");
    assert_eq!(
        uris(&chain[0]),
        vec!["URI:spiffe://cluster.local/ns/shop/sa/cart"]
    );
    assert!(signed_by(&chain[0], &ca.root_der()[0]));
    let leaf = parse_cert(&chain[0]).unwrap();
    assert!(!leaf.is_ca());
    let life = cert.not_after.duration_since(cert.not_before).unwrap();
    assert_eq!(life, DEFAULT_WORKLOAD_TTL);
    assert_eq!(cert.renew_at(), cert.not_before + DEFAULT_WORKLOAD_TTL / 2);
    assert_eq!(ca.identity_of(&chain[0]), Some(id("shop", "cart")));
    // The key is the certificate's.
    let key = keys::key_pair(&cert.key).unwrap();
    assert_eq!(
        key.public_key_raw(),
        leaf.public_key().subject_public_key.data.as_ref()
    );
}

#[test]
fn csr_names_are_ignored_and_the_chain_ends_with_the_root() {
    let ca = Ca::load(&options(None)).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![
        "spiffe://cluster.local/ns/kube-system/sa/admin".to_string(),
    ])
    .unwrap();
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let chain = ca
        .sign_csr(&id("shop", "cart"), &csr, Duration::from_secs(3600))
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf, root");
    let leaf = certs(&chain[0]).remove(0);
    assert_eq!(
        uris(&leaf),
        vec!["URI:spiffe://cluster.local/ns/shop/sa/cart"],
        "the SAN is the caller's identity, not the CSR's"
    );
    assert_eq!(certs(&chain[1])[0], ca.root_der()[0]);
    let parsed = parse_cert(&leaf).unwrap();
    assert_eq!(
        parsed.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let v = parsed.validity();
    assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), 3600);
    // More than the workload TTL is capped.
    let long = ca
        .sign_csr(
            &id("shop", "cart"),
            &csr,
            Duration::from_secs(10 * 24 * 3600),
        )
        .unwrap();
    let v = parse_cert(&certs(&long[0])[0]).unwrap().validity().clone();
    assert_eq!(
        (v.not_after.timestamp() - v.not_before.timestamp()) as u64,
        DEFAULT_WORKLOAD_TTL.as_secs()
    );
    assert!(matches!(
        ca.sign_csr(&id("shop", "cart"), "not a csr", Duration::ZERO),
        Err(CaError::Csr(_))
    ));
}

#[test]
fn self_signed_root_persists() {
    let dir = tmp("persist");
    let a = Ca::load(&options(Some(dir.clone()))).unwrap();
    assert_eq!(a.source(), RootSource::SelfSigned);
    for f in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN, TOKEN_KEY] {
        assert!(dir.join(f).exists(), "{f} written");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private");
    }
    let b = Ca::load(&options(Some(dir.clone()))).unwrap();
    assert_eq!(a.root_pem(), b.root_pem(), "the same root after a restart");
    assert_eq!(
        a.token_key().unwrap().kid(),
        b.token_key().unwrap().kid(),
        "the same token key after a restart"
    );
    let cert = b.issue(&id("a", "b")).unwrap();
    assert!(signed_by(&certs(&cert.chain_pem)[0], &a.root_der()[0]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes an operator CA: a root and an intermediate signed by it, in the cacerts layout.
fn plug_in(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name
        .push(DnType::CommonName, "operator root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root, root_key);
    let int_key = KeyPair::generate().unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name = DistinguishedName::new();
    int.distinguished_name
        .push(DnType::CommonName, "operator intermediate");
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let int_cert = int.signed_by(&int_key, &root_issuer).unwrap();
    std::fs::write(dir.join(CA_CERT), int_cert.pem()).unwrap();
    std::fs::write(dir.join(CA_KEY), int_key.serialize_pem()).unwrap();
    std::fs::write(dir.join(ROOT_CERT), root_cert.pem()).unwrap();
    std::fs::write(
        dir.join(CERT_CHAIN),
        format!("{}{}", int_cert.pem(), root_cert.pem()),
    )
    .unwrap();
    (int_cert.pem(), root_cert.pem())
}

#[test]
fn plugged_in_intermediate_is_in_the_chain() {
    let dir = tmp("plugged");
    let (int_pem, root_pem) = plug_in(&dir);
    let ca = Ca::load(&options(Some(dir.clone()))).unwrap();
    assert_eq!(ca.source(), RootSource::PluggedIn);
    let cert = ca.issue(&id("shop", "cart")).unwrap();
    let chain = certs(&cert.chain_pem);
    assert_eq!(chain.len(), 2, "leaf, intermediate");
    assert_eq!(chain[1], certs(&int_pem)[0]);
    assert!(signed_by(&chain[0], &chain[1]));
    assert_eq!(ca.root_der()[0], certs(&root_pem)[0]);
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let answer = ca
        .sign_csr(&id("shop", "cart"), &csr, Duration::ZERO)
        .unwrap();
    let answer: Vec<Vec<u8>> = answer.iter().map(|p| certs(p).remove(0)).collect();
    assert_eq!(answer.len(), 3, "leaf, intermediate, root");
    assert_eq!(answer[1], certs(&int_pem)[0]);
    assert_eq!(answer[2], certs(&root_pem)[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn load_err(dir: &Path) -> String {
    Ca::load(&options(Some(dir.to_path_buf())))
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_ca_files_are_one_line_errors() {
    let dir = tmp("bad");
    plug_in(&dir);
    std::fs::remove_file(dir.join(CERT_CHAIN)).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("incomplete") && e.contains("cert-chain.pem"),
        "{e}"
    );

    plug_in(&dir);
    std::fs::write(
        dir.join(CA_KEY),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(e.contains("is not the key of ca-cert.pem"), "{e}");

    plug_in(&dir);
    std::fs::write(dir.join(CA_CERT), "garbage").unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("ca-cert.pem") && e.contains("no CERTIFICATE"),
        "{e}"
    );

    // An intermediate that is not signed by the root given.
    let other = tmp("other");
    let (_, other_root) = plug_in(&other);
    plug_in(&dir);
    std::fs::write(dir.join(ROOT_CERT), &other_root).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("does not chain"), "{e}");

    plug_in(&dir);
    std::fs::write(
        dir.join(CA_KEY),
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = load_err(&dir);
    assert!(e.contains("SEC1"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn key_material_never_prints() {
    let ca = Ca::load(&options(None)).unwrap();
    let cert = ca.issue(&id("shop", "cart")).unwrap();
    let pem_text = String::from_utf8(cert.key.expose().to_vec()).unwrap();
    assert!(pem_text.contains("PRIVATE KEY"));
    let debug = format!("{cert:?} {ca:?}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    let json = serde_json::to_string(&cert).unwrap();
    assert!(json.contains("\"key\":\"[redacted]\""), "{json}");
    assert!(!json.contains("PRIVATE KEY"));
}

#[test]
fn trust_domain_is_shared_and_reports_changes() {
    let td = TrustDomain::new("cluster.local");
    let other = td.clone();
    assert_eq!(td.set("cluster.local"), None);
    assert_eq!(td.set("example.org"), Some("cluster.local".to_string()));
    assert_eq!(other.get(), "example.org");
}

/// Under `umask 000` the CA directory is not world-writable, nor its files; the keys are the
/// owner's alone.
#[test]
fn ca_files_have_their_modes_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp("umask").join("nested");
    // The umask is the process's: other tests' files made meanwhile are no less private than
    // their code asks (their modes are explicit where it matters).
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::empty());
    let loaded = Ca::load(&options(Some(dir.clone())));
    umask(old);
    loaded.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o755);
    for f in [CA_CERT, ROOT_CERT, CERT_CHAIN] {
        assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
    }
    for f in [CA_KEY, TOKEN_KEY] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

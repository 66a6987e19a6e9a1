//! Gateway: selector and servers (ports, hosts, TLS).

use super::*;

impl Ctx<'_> {
    pub(super) fn gateway(&mut self, gw: &Gateway) {
        let name = &self.resource.meta.name;
        if !is_dns1123_label(name) {
            self.err(
                "metadata.name",
                format!("invalid gateway name {name:?}: must be a DNS-1123 label (no dots)"),
            );
        }
        if gw.servers.is_empty() {
            self.err("spec.servers", "gateway must have at least one server");
        }
        let mut names = BTreeSet::new();
        for (i, s) in gw.servers.iter().enumerate() {
            let p = format!("spec.servers[{i}]");
            self.server(&p, s);
            if !names.insert(s.port.name.as_str()) {
                self.err(
                    format!("{p}.port.name"),
                    format!(
                        "port names in servers must be unique: duplicate name {}",
                        s.port.name
                    ),
                );
            }
            if !protocol_is_http(&s.port.protocol)
                && s.tls.as_ref().is_some_and(|t| t.https_redirect)
            {
                self.warn(
                    format!("{p}.tls.httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }

    pub(super) fn server(&mut self, p: &str, s: &Server) {
        if s.hosts.is_empty() {
            self.err(
                format!("{p}.hosts"),
                "server config must contain at least one host",
            );
        }
        for (i, h) in s.hosts.iter().enumerate() {
            self.check(
                &format!("{p}.hosts[{i}]"),
                validate_namespace_slash_host(h, true),
            );
        }
        let port = &s.port;
        let bind = s.bind.as_deref().unwrap_or_default();
        let pp = format!("{p}.port");
        let mut port_ok = true;
        if parse_protocol(&port.protocol).is_none() {
            self.err(
                format!("{pp}.protocol"),
                format!(
                    "invalid protocol {:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, HTTPS, TLS, MONGO, REDIS, MYSQL, TCP",
                    port.protocol
                ),
            );
            port_ok = false;
        }
        if (port.number > 0 || !bind.starts_with(UNIX_PREFIX))
            && let Err(e) = validate_port(port.number.into())
        {
            self.err(format!("{pp}.number"), e);
            port_ok = false;
        }
        if port.target_port.unwrap_or(0) > 0 {
            self.err(
                format!("{pp}.targetPort"),
                "targetPort has no impact on Gateways",
            );
            port_ok = false;
        }
        if port.name.is_empty() {
            self.err(format!("{pp}.name"), "port name must be set");
            port_ok = false;
        }
        if let Some(path) = bind.strip_prefix(UNIX_PREFIX) {
            self.check(&format!("{p}.bind"), validate_unix_address(path));
            if port.number != 0 {
                self.err(
                    format!("{pp}.number"),
                    "port number must be 0 for unix domain socket",
                );
            }
        } else if !bind.is_empty() {
            self.check(&format!("{p}.bind"), validate_ip(bind));
        }
        if let Some(tls) = &s.tls {
            self.server_tls(&format!("{p}.tls"), tls);
        }
        if port_ok {
            let is_tls = protocol_is_tls(&port.protocol);
            match &s.tls {
                None if is_tls => self.err(
                    format!("{p}.tls"),
                    "server must have TLS settings for HTTPS/TLS protocols",
                ),
                Some(tls) if !is_tls => {
                    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
                    if !protocol_is_http(&port.protocol) {
                        self.err(
                            format!("{p}.tls"),
                            "server cannot have TLS settings for non HTTPS/TLS ports",
                        );
                    } else if !is_passthrough(tls.mode)
                        || set(&tls.ca_certificates)
                        || set(&tls.private_key)
                        || set(&tls.server_certificate)
                    {
                        // Only `httpsRedirect` makes sense on a plain-text HTTP server.
                        self.err(
                            format!("{p}.tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn server_tls(&mut self, p: &str, tls: &ServerTlsSettings) {
        let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        if matches!(
            tls.min_protocol_version,
            Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
        ) && tls.cipher_suites.is_empty()
        {
            self.warn(
                format!("{p}.minProtocolVersion"),
                "TLS versions below TLSV1_2 require setting compatible cipherSuites, as the defaults no longer include them",
            );
        }
        let mut valid = BTreeSet::new();
        let mut invalid = BTreeSet::new();
        let mut dups = BTreeSet::new();
        for cs in &tls.cipher_suites {
            if !is_valid_cipher_suite(cs) {
                invalid.insert(cs.as_str());
            } else if !valid.insert(cs.as_str()) {
                dups.insert(cs.as_str());
            }
        }
        if !invalid.is_empty() {
            self.warn(
                format!("{p}.cipherSuites"),
                format!("ignoring invalid cipher suites: {invalid:?}"),
            );
        }
        if !dups.is_empty() {
            self.warn(
                format!("{p}.cipherSuites"),
                format!("ignoring duplicate cipher suites: {dups:?}"),
            );
        }
        for (what, n) in [
            ("credentialNames", tls.credential_names.len()),
            ("tlsCertificates", tls.tls_certificates.len()),
        ] {
            if n > 2 {
                self.err(
                    format!("{p}.{what}"),
                    format!("{what} may have at most 2 items"),
                );
            }
        }
        let mode = tls.mode;
        if mode == Some(ServerTlsMode::IstioMutual) {
            for (what, bad) in [
                ("serverCertificate", set(&tls.server_certificate)),
                ("privateKey", set(&tls.private_key)),
                ("caCertificates", set(&tls.ca_certificates)),
                ("tlsCertificates", !tls.tls_certificates.is_empty()),
                ("credentialName", set(&tls.credential_name)),
                ("credentialNames", !tls.credential_names.is_empty()),
            ] {
                if bad {
                    self.err(
                        format!("{p}.{what}"),
                        format!("ISTIO_MUTUAL TLS cannot have an associated {what}"),
                    );
                }
            }
            return;
        }
        if is_passthrough(mode)
            && (set(&tls.ca_crl)
                || set(&tls.server_certificate)
                || set(&tls.private_key)
                || set(&tls.ca_certificates)
                || !tls.tls_certificates.is_empty()
                || set(&tls.credential_name)
                || !tls.credential_names.is_empty())
        {
            self.warn(
                p,
                "PASSTHROUGH and AUTO_PASSTHROUGH modes do not use certificates, they will be ignored",
            );
        }
        let sources = [
            set(&tls.server_certificate) && set(&tls.private_key),
            set(&tls.credential_name),
            !tls.credential_names.is_empty(),
            !tls.tls_certificates.is_empty(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources > 1 {
            self.err(
                p,
                "only one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates should be specified",
            );
        }
        let terminating = matches!(
            mode,
            Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
        );
        if terminating && (set(&tls.credential_name) || !tls.credential_names.is_empty()) {
            // Credentials come from a secret; file paths are not required.
            return;
        }
        if terminating {
            let mutual = mode != Some(ServerTlsMode::Simple);
            let what = if mutual { "MUTUAL TLS" } else { "SIMPLE TLS" };
            if mutual && !set(&tls.ca_certificates) {
                self.err(
                    format!("{p}.caCertificates"),
                    format!("{what} requires a client CA bundle"),
                );
            }
            if tls.tls_certificates.is_empty() {
                if !set(&tls.server_certificate) {
                    self.err(
                        format!("{p}.serverCertificate"),
                        format!("{what} requires a server certificate"),
                    );
                }
                if !set(&tls.private_key) {
                    self.err(
                        format!("{p}.privateKey"),
                        format!("{what} requires a private key"),
                    );
                }
            }
            for (i, c) in tls.tls_certificates.iter().enumerate() {
                if !set(&c.server_certificate) {
                    self.err(
                        format!("{p}.tlsCertificates[{i}].serverCertificate"),
                        format!("{what} requires a server certificate"),
                    );
                }
                if !set(&c.private_key) {
                    self.err(
                        format!("{p}.tlsCertificates[{i}].privateKey"),
                        format!("{what} requires a private key"),
                    );
                }
            }
        }
        if set(&tls.ca_crl) {
            if set(&tls.credential_name) {
                self.err(
                    format!("{p}.caCrl"),
                    "CRL is not supported with credentialName; it has to be part of the credential",
                );
            }
            if mode == Some(ServerTlsMode::Simple) {
                self.err(format!("{p}.caCrl"), "CRL is not supported with SIMPLE TLS");
            }
        }
    }
}

/// Server TLS modes that do not terminate TLS; an unset mode is `PASSTHROUGH` (the proto's
/// zero value).
pub(super) fn is_passthrough(mode: Option<ServerTlsMode>) -> bool {
    matches!(
        mode,
        None | Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
    )
}

//! Sidecar: workload selector, ingress and egress listeners, outbound traffic policy.

use super::*;

impl Ctx<'_> {
    pub(super) fn sidecar(&mut self, sc: &Sidecar) {
        self.workload_selector(
            "spec.workloadSelector",
            sc.workload_selector.as_ref(),
            "services",
        );
        if sc.egress.is_empty()
            && sc.ingress.is_empty()
            && sc.outbound_traffic_policy.is_none()
            && sc.inbound_connection_pool.is_none()
        {
            self.err("spec", "sidecar: empty configuration provided");
            return;
        }

        let mut ports = BTreeSet::new();
        for (i, ing) in sc.ingress.iter().enumerate() {
            let p = format!("spec.ingress[{i}]");
            let port = &ing.port;
            if port.target_port.unwrap_or(0) > 0 {
                self.err(
                    format!("{p}.port.targetPort"),
                    "targetPort has no impact on Sidecars",
                );
            }
            self.sidecar_port(&format!("{p}.port"), port);
            self.check(
                &format!("{p}.port.number"),
                validate_port(port.number.into()),
            );
            if let Some(b) = ing.bind.as_deref().filter(|b| !b.is_empty()) {
                self.check(&format!("{p}.bind"), validate_ip(b));
            }
            if !ports.insert(port.number) {
                self.err(
                    format!("{p}.port.number"),
                    "sidecar: ports on IP bound listeners must be unique",
                );
            }
            if let Some(de) = ing.default_endpoint.as_deref().filter(|d| !d.is_empty()) {
                self.default_endpoint(&format!("{p}.defaultEndpoint"), de);
            }
            if let Some(tls) = &ing.tls {
                let tp = format!("{p}.tls");
                if !tls.subject_alt_names.is_empty() {
                    self.err(
                        format!("{tp}.subjectAltNames"),
                        "sidecar: subjectAltNames is not supported in ingress tls",
                    );
                }
                if tls.https_redirect {
                    self.err(
                        format!("{tp}.httpsRedirect"),
                        "sidecar: httpsRedirect is not supported",
                    );
                }
                if tls
                    .credential_name
                    .as_deref()
                    .is_some_and(|c| !c.is_empty())
                {
                    self.err(
                        format!("{tp}.credentialName"),
                        "sidecar: credentialName is not currently supported",
                    );
                }
                if !tls.credential_names.is_empty() {
                    self.err(
                        format!("{tp}.credentialNames"),
                        "sidecar: credentialNames is not currently supported",
                    );
                }
                if !tls.tls_certificates.is_empty() {
                    self.err(
                        format!("{tp}.tlsCertificates"),
                        "sidecar: tlsCertificates is not currently supported",
                    );
                }
                if let Some(m @ (ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)) =
                    tls.mode
                {
                    self.err(
                        format!("{tp}.mode"),
                        format!("cannot set mode to {m:?} in sidecar ingress tls"),
                    );
                }
                if !protocol_is_tls(port.protocol.as_deref().unwrap_or_default()) {
                    self.err(
                        &tp,
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
                self.server_tls(&tp, tls);
            }
            if let Some(cp) = &ing.connection_pool {
                self.connection_pool(&format!("{p}.connectionPool"), cp);
                if cp.http.is_some()
                    && !protocol_is_http(port.protocol.as_deref().unwrap_or_default())
                {
                    self.warn(
                        format!("{p}.connectionPool.http"),
                        format!(
                            "sidecar: HTTP connection pool settings are configured for port {} but its protocol is not HTTP ({}); only TCP settings will apply",
                            port.number,
                            port.protocol.as_deref().unwrap_or_default()
                        ),
                    );
                }
            }
        }
        if let Some(cp) = &sc.inbound_connection_pool {
            self.connection_pool("spec.inboundConnectionPool", cp);
        }

        let mut ports = BTreeSet::new();
        let mut sockets = BTreeSet::new();
        let mut catch_all = false;
        let ns = self.namespace().to_string();
        for (i, eg) in sc.egress.iter().enumerate() {
            let p = format!("spec.egress[{i}]");
            match &eg.port {
                None => {
                    if catch_all {
                        self.err(
                            &p,
                            "sidecar: egress can have only one listener with empty port",
                        );
                        continue;
                    }
                    if i == sc.egress.len() - 1 {
                        catch_all = true;
                    } else {
                        self.err(
                            &p,
                            "sidecar: the egress listener with empty port should be the last listener in the list",
                        );
                    }
                }
                Some(port) => {
                    if port.target_port.unwrap_or(0) > 0 {
                        self.err(
                            format!("{p}.port.targetPort"),
                            "targetPort has no impact on Sidecars",
                        );
                    }
                    let bind = eg.bind.as_deref().unwrap_or_default();
                    self.egress_port_bind_capture(&p, port, bind, eg.capture_mode);
                    if port.number == 0 {
                        if !sockets.insert(bind.to_string()) {
                            self.err(
                                format!("{p}.bind"),
                                "sidecar: unix domain socket values for listeners must be unique",
                            );
                        }
                    } else if !ports.insert(port.number) {
                        self.err(
                            format!("{p}.port.number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
            if eg.hosts.is_empty() {
                self.err(
                    format!("{p}.hosts"),
                    "sidecar: egress listener must contain at least one host",
                );
                continue;
            }
            let mut by_ns: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
            for (j, h) in eg.hosts.iter().enumerate() {
                let f = format!("{p}.hosts[{j}]");
                if let Some((hns, svc)) = h.split_once('/')
                    && !hns.starts_with('~')
                {
                    let hns = if hns == "." {
                        ns.clone()
                    } else {
                        hns.to_string()
                    };
                    let seen = by_ns.entry(hns).or_default();
                    let dup = if svc == "*" {
                        !seen.is_empty()
                    } else {
                        seen.contains(svc) || seen.contains("*")
                    };
                    if dup {
                        self.warn(&f, format!("duplicated egress host: {h}"));
                    }
                    seen.insert(svc);
                }
                self.check(&f, validate_namespace_slash_host(h, false));
            }
            if by_ns.get("*").is_some_and(|s| s.contains("*")) && by_ns.len() != 1 {
                self.warn(
                    format!("{p}.hosts"),
                    "`*/*` host select all resources, no other hosts can be added",
                );
            }
        }

        if let Some(otp) = &sc.outbound_traffic_policy
            && let Some(ep) = &otp.egress_proxy
        {
            let p = "spec.outboundTrafficPolicy.egressProxy";
            if otp.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
                self.err(
                        p,
                        "sidecar: egressProxy must be set only with ALLOW_ANY outboundTrafficPolicy mode",
                    );
                return;
            }
            self.check(&format!("{p}.host"), validate_fqdn(&ep.host));
            if ep.port.is_none() {
                self.err(format!("{p}.port"), "sidecar: egressProxy port must be set");
                return;
            }
            self.destination(p, ep);
        }
    }

    pub(super) fn sidecar_port(&mut self, p: &str, port: &SidecarPort) {
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            self.check(&format!("{p}.name"), validate_port_name(name));
        }
        self.check(
            &format!("{p}.protocol"),
            validate_protocol(port.protocol.as_deref().unwrap_or_default()),
        );
    }

    pub(super) fn egress_port_bind_capture(
        &mut self,
        p: &str,
        port: &SidecarPort,
        bind: &str,
        capture: Option<CaptureMode>,
    ) {
        self.sidecar_port(&format!("{p}.port"), port);
        if port.number == 0 {
            match bind.strip_prefix(UNIX_PREFIX) {
                None => self.err(
                    format!("{p}.bind"),
                    "sidecar: ports with 0 value must have a unix domain socket bind address",
                ),
                Some(path) => self.check(&format!("{p}.bind"), validate_unix_address(path)),
            }
            if !matches!(
                capture,
                None | Some(CaptureMode::Default | CaptureMode::None)
            ) {
                self.err(
                    format!("{p}.captureMode"),
                    "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                );
            }
        } else {
            self.check(
                &format!("{p}.port.number"),
                validate_port(port.number.into()),
            );
            if !bind.is_empty() {
                self.check(&format!("{p}.bind"), validate_ip(bind));
            }
        }
    }

    /// `127.0.0.1:<port>`, `0.0.0.0:<port>`, `[::1]:<port>`, `[::]:<port>`, `:<port>` or
    /// `unix://<path>`.
    pub(super) fn default_endpoint(&mut self, f: &str, de: &str) {
        if let Some(path) = de.strip_prefix(UNIX_PREFIX) {
            self.check(f, validate_unix_address(path));
            return;
        }
        let Some((host, port)) = split_host_port(de) else {
            self.err(
                f,
                format!("defaultEndpoint {de:?} is not of the form host:port"),
            );
            return;
        };
        if !host.is_empty() && !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
            self.err(
                f,
                "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, unix://<path> or unset",
            );
        }
        match port.parse::<i64>() {
            Ok(n) => self.check(f, validate_port(n)),
            Err(_) => self.err(
                f,
                format!("sidecar: defaultEndpoint port ({port}) is not a number"),
            ),
        }
    }
}

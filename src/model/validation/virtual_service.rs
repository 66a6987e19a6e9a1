//! VirtualService: hosts, gateways, HTTP, TLS and TCP routes, matches, destinations and weights,
//! retries, timeouts, faults, mirrors, rewrites, redirects, headers and CORS, delegation.

use super::*;

impl Ctx<'_> {
    pub(super) fn virtual_service(&mut self, vs: &VirtualService) {
        let delegate = vs.hosts.is_empty();
        if delegate {
            if !vs.gateways.is_empty() {
                self.err(
                    "spec.gateways",
                    "delegate virtual service (no hosts) must have no gateways specified",
                );
            }
            if !vs.tls.is_empty() {
                self.err(
                    "spec.tls",
                    "delegate virtual service (no hosts) must have no tls route specified",
                );
            }
            if !vs.tcp.is_empty() {
                self.err(
                    "spec.tcp",
                    "delegate virtual service (no hosts) must have no tcp route specified",
                );
            }
        }

        let (applies_to_mesh, applies_to_gateway) = if vs.gateways.is_empty() {
            (true, false)
        } else {
            self.gateway_names("spec.gateways", &vs.gateways);
            let to_gateway = !vs.gateways.iter().any(|g| g == MESH_GATEWAY);
            (!to_gateway, to_gateway)
        };

        if !applies_to_gateway {
            for (i, http) in vs.http.iter().enumerate() {
                for (j, m) in http.match_.iter().enumerate() {
                    for (what, map) in [
                        ("headers", &m.headers),
                        ("withoutHeaders", &m.without_headers),
                    ] {
                        for key in map.keys().filter(|k| is_jwt_claim_route(k)) {
                            self.err(
                                format!("spec.http[{i}].match[{j}].{what}"),
                                format!("JWT claim based routing (key: {key}) is only supported for gateways, the virtual service is not bound to one"),
                            );
                        }
                    }
                }
            }
        }

        let sni = vs
            .tls
            .iter()
            .any(|t| t.match_.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut all_hosts_valid = true;
        for (i, h) in vs.hosts.iter().enumerate() {
            let r = if applies_to_gateway {
                validate_wildcard_domain_for_gateway(sni, h)
            } else {
                validate_wildcard_domain(h)
            };
            match r {
                Err(e) => {
                    if !is_ip(h) {
                        self.err(format!("spec.hosts[{i}]"), e);
                        all_hosts_valid = false;
                    }
                }
                Ok(()) if applies_to_mesh && h == "*" => {
                    self.err(
                        format!("spec.hosts[{i}]"),
                        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                    );
                    all_hosts_valid = false;
                }
                Ok(()) => {}
            }
        }
        if all_hosts_valid {
            for i in 0..vs.hosts.len() {
                for j in i + 1..vs.hosts.len() {
                    if hosts_match(&vs.hosts[i], &vs.hosts[j]) {
                        self.err(
                            format!("spec.hosts[{j}]"),
                            format!(
                                "duplicate hosts in virtual service: {} & {}",
                                vs.hosts[i], vs.hosts[j]
                            ),
                        );
                    }
                }
            }
        }

        if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
            self.err(
                "spec",
                "http, tcp or tls must be provided in virtual service",
            );
        }
        for (i, r) in vs.http.iter().enumerate() {
            self.http_route(&format!("spec.http[{i}]"), r, delegate);
        }
        for (i, r) in vs.tls.iter().enumerate() {
            self.tls_route(&format!("spec.tls[{i}]"), r, vs);
        }
        for (i, r) in vs.tcp.iter().enumerate() {
            self.tcp_route(&format!("spec.tcp[{i}]"), r);
        }
        self.export_to("spec.exportTo", &vs.export_to, false, false);

        let http: Vec<(Option<&str>, Vec<HttpMatchRequest>)> = vs
            .http
            .iter()
            .map(|r| {
                let matches = r
                    .match_
                    .iter()
                    .map(|m| HttpMatchRequest {
                        name: None,
                        ..m.clone()
                    })
                    .collect();
                (r.name.as_deref(), matches)
            })
            .collect();
        self.unreachable_rules("spec.http", &http);
        let tcp: Vec<(Option<&str>, Vec<L4MatchAttributes>)> =
            vs.tcp.iter().map(|r| (None, r.match_.clone())).collect();
        self.unreachable_rules("spec.tcp", &tcp);
        let tls: Vec<(Option<&str>, Vec<TlsMatchAttributes>)> =
            vs.tls.iter().map(|r| (None, r.match_.clone())).collect();
        self.unreachable_rules("spec.tls", &tls);
    }

    /// Warns about rules no request can reach: rules after a catch-all rule, and matches
    /// identical to an earlier one.
    pub(super) fn unreachable_rules<M: PartialEq>(
        &mut self,
        field: &str,
        rules: &[(Option<&str>, Vec<M>)],
    ) {
        let mut catch_all: Option<usize> = None;
        let mut seen: Vec<(&M, usize)> = Vec::new();
        let label = |i: usize| match rules[i].0 {
            Some(n) => format!("{n:?}"),
            None => format!("#{i}"),
        };
        for (i, (_, matches)) in rules.iter().enumerate() {
            let f = format!("{field}[{i}]");
            if matches.is_empty() {
                if catch_all.is_some() {
                    self.warn(
                        f,
                        format!("virtualService rule {} not used (only the last rule can have no matches)", label(i)),
                    );
                }
                catch_all = Some(i);
                continue;
            }
            if catch_all.is_some() {
                self.warn(
                    f,
                    format!(
                        "virtualService rule {} not used (route without matches defined before)",
                        label(i)
                    ),
                );
                continue;
            }
            let mut duplicates = 0;
            for (j, m) in matches.iter().enumerate() {
                if let Some((_, prior)) = seen.iter().find(|(s, _)| *s == m) {
                    self.warn(
                        format!("{f}.match[{j}]"),
                        format!(
                            "virtualService rule {} match #{j} is not used (duplicate match in rule {})",
                            label(i),
                            label(*prior)
                        ),
                    );
                    duplicates += 1;
                } else {
                    seen.push((m, i));
                }
            }
            if duplicates == matches.len() {
                self.warn(
                    f,
                    format!(
                        "virtualService rule {} not used (all matches used by prior rules)",
                        label(i)
                    ),
                );
            }
        }
    }

    pub(super) fn gateway_names(&mut self, field: &str, names: &[String]) {
        for (i, g) in names.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some((ns, name)) = g.split_once('/') else {
                if let Some((name, ns)) = g.split_once('.') {
                    let ns = ns.split('.').next().unwrap_or_default();
                    self.warn(
                        &f,
                        format!("using legacy gatewayName format {g:?}; prefer the <namespace>/<name> format: \"{ns}/{name}\""),
                    );
                }
                self.check(&f, validate_fqdn(g));
                // istiod stops at the first name without a namespace.
                return;
            };
            if ns.is_empty() || name.is_empty() {
                self.err(&f, "config namespace and gateway name cannot be empty");
            }
            if !is_dns1123_label(ns) {
                self.err(&f, format!("invalid value for namespace: {ns:?}"));
            }
            if !is_dns1123_label(name) {
                self.err(&f, format!("invalid value for gateway name: {name:?}"));
            }
        }
    }

    pub(super) fn http_route(&mut self, p: &str, r: &HttpRoute, delegate: bool) {
        self.http_route_conflicts(p, r, delegate);
        for (i, m) in r.match_.iter().enumerate() {
            self.http_match(&format!("{p}.match[{i}]"), m);
        }
        if let Some(h) = &r.headers {
            self.headers(&format!("{p}.headers"), h);
        }
        if let Some(c) = &r.cors_policy {
            self.cors_policy(&format!("{p}.corsPolicy"), c);
        }
        if let Some(f) = &r.fault {
            self.fault(&format!("{p}.fault"), f);
        }
        if let Some(mp) = r.mirror_percent {
            if mp > 100 {
                self.err(
                    format!("{p}.mirrorPercent"),
                    format!("mirrorPercent must have a max value of 100 (it has {mp})"),
                );
            }
            self.warn(
                format!("{p}.mirrorPercent"),
                "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
            );
        }
        if let Some(pc) = &r.mirror_percentage {
            self.mirror_percentage(&format!("{p}.mirrorPercentage"), pc);
        }
        if let Some(m) = &r.mirror {
            self.destination(&format!("{p}.mirror"), m);
        }
        for (i, m) in r.mirrors.iter().enumerate() {
            let f = format!("{p}.mirrors[{i}]");
            self.destination(&format!("{f}.destination"), &m.destination);
            if let Some(pc) = &m.percentage {
                self.mirror_percentage(&format!("{f}.percentage"), pc);
            }
        }
        if let Some(rd) = &r.redirect {
            self.redirect(&format!("{p}.redirect"), rd, &r.match_);
        }
        if let Some(d) = &r.direct_response {
            self.direct_response(&format!("{p}.directResponse"), d);
        }
        if let Some(rt) = &r.retries {
            self.retries(&format!("{p}.retries"), rt);
        }
        if let Some(rw) = &r.rewrite {
            self.rewrite(&format!("{p}.rewrite"), rw);
        }
        self.authority_rewrite(p, r);
        self.http_route_destinations(&format!("{p}.route"), &r.route);
        self.duration(&format!("{p}.timeout"), r.timeout.as_ref(), Dur::Istio);
        if r.websocket_upgrade.is_some() {
            self.warn(
                format!("{p}.websocketUpgrade"),
                "websocketUpgrade is no longer part of the Istio API and is ignored; WebSocket upgrades are allowed on every HTTP port",
            );
        }
    }

    pub(super) fn http_route_conflicts(&mut self, p: &str, r: &HttpRoute, delegate: bool) {
        let name = r.name.as_deref().unwrap_or_default();
        if !delegate && r.delegate.is_some() {
            // A root route: it may only delegate.
            if r.redirect.is_some() {
                self.err(
                    format!("{p}.redirect"),
                    format!("root HTTP route {name} must not specify redirect"),
                );
            }
            if !r.route.is_empty() {
                self.err(
                    format!("{p}.route"),
                    format!("root HTTP route {name} must not specify route"),
                );
            }
            if let Some(d) = &r.delegate
                && d.name.is_empty()
            {
                self.warn(
                    format!("{p}.delegate.name"),
                    "delegate name is empty; no virtual service will be found",
                );
            }
            return;
        }
        if delegate && r.delegate.is_some() {
            self.err(
                format!("{p}.delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if r.redirect.is_some() {
            if !r.route.is_empty() {
                self.err(p, "HTTP route cannot contain both route and redirect");
            }
            if r.fault.is_some() {
                self.err(p, "HTTP route cannot contain both fault and redirect");
            }
            if r.rewrite.is_some() {
                self.err(
                    p,
                    "HTTP route rule cannot contain both rewrite and redirect",
                );
            }
            if r.direct_response.is_some() {
                self.err(
                    p,
                    "HTTP route rule cannot contain both directResponse and redirect",
                );
            }
        } else if r.direct_response.is_some() {
            if !r.route.is_empty() {
                self.err(p, "HTTP route cannot contain both route and directResponse");
            }
            if r.fault.is_some() {
                self.err(p, "HTTP route cannot contain both fault and directResponse");
            }
            if r.rewrite.is_some() {
                self.err(
                    p,
                    "HTTP route rule cannot contain both rewrite and directResponse",
                );
            }
        } else if r.route.is_empty() {
            self.err(p, "HTTP route, redirect or directResponse is required");
        }
        if r.mirror.is_some() && !r.mirrors.is_empty() {
            self.err(p, "HTTP route cannot contain both mirror and mirrors");
        }
    }

    pub(super) fn string_match(&mut self, field: &str, m: &StringMatch, allow_empty_prefix: bool) {
        match m {
            StringMatch::Prefix(s) if s.is_empty() && !allow_empty_prefix => {
                self.err(field, "prefix string match should not be empty");
            }
            StringMatch::Regex(re) if re.is_empty() => {
                self.err(field, "regex string match should not be empty");
            }
            StringMatch::Regex(re) => self.check(field, validate_regex(re)),
            _ => {}
        }
    }

    pub(super) fn http_match(&mut self, p: &str, m: &HttpMatchRequest) {
        for (name, sm) in &m.headers {
            let f = format!("{p}.headers.{name}");
            self.check(&f, validate_match_header_name(name));
            self.string_match(&f, sm, false);
        }
        for (name, sm) in &m.without_headers {
            let f = format!("{p}.withoutHeaders.{name}");
            self.check(&f, validate_match_header_name(name));
            // `*` is not a regex: it means "present".
            if *sm != StringMatch::Regex("*".into()) {
                self.string_match(&f, sm, false);
            }
        }
        if let Some(u) = &m.uri {
            self.string_match(&format!("{p}.uri"), u, true);
        }
        for (what, sm) in [
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                self.string_match(&format!("{p}.{what}"), sm, false);
            }
        }
        for (name, sm) in &m.query_params {
            self.string_match(&format!("{p}.queryParams.{name}"), sm, false);
        }
        if let Some(port) = m.port.filter(|p| *p != 0) {
            self.check(&format!("{p}.port"), validate_port(port.into()));
        }
        self.labels(&format!("{p}.sourceLabels"), &m.source_labels);
        self.gateway_names(&format!("{p}.gateways"), &m.gateways);
        if let Some(ns) = m.source_namespace.as_deref().filter(|s| !s.is_empty())
            && !is_dns1123_label(ns)
        {
            self.err(
                format!("{p}.sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }

    pub(super) fn header_ops(&mut self, p: &str, ops: &HeaderOperations, request: bool) {
        for (what, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in map {
                let f = format!("{p}.{what}.{name}");
                let r = if request {
                    validate_request_set_header_name(name)
                } else {
                    validate_header_operation_name(name)
                };
                self.check(&f, r);
                self.check(&f, validate_header_value(value));
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            self.check(
                &format!("{p}.remove[{i}]"),
                validate_header_operation_name(name),
            );
        }
    }

    pub(super) fn headers(&mut self, p: &str, h: &Headers) {
        if let Some(r) = &h.request {
            self.header_ops(&format!("{p}.request"), r, true);
        }
        if let Some(r) = &h.response {
            self.header_ops(&format!("{p}.response"), r, false);
        }
    }

    /// The authority may be rewritten in one place only.
    pub(super) fn authority_rewrite(&mut self, p: &str, r: &HttpRoute) {
        let mut current = r
            .rewrite
            .as_ref()
            .and_then(|rw| rw.authority.clone())
            .filter(|a| !a.is_empty());
        let Some(req) = r.headers.as_ref().and_then(|h| h.request.as_ref()) else {
            return;
        };
        for (k, v) in req.set.iter().chain(req.add.iter()) {
            if !is_authority_header(k) {
                continue;
            }
            if let Some(c) = &current {
                self.err(
                    format!("{p}.headers.request"),
                    format!("authority header cannot be set multiple times: have {c:?}, attempting to set {v:?}"),
                );
                return;
            }
            current = Some(v.clone());
        }
    }

    pub(super) fn cors_policy(&mut self, p: &str, c: &CorsPolicy) {
        for (i, o) in c.allow_origins.iter().enumerate() {
            let f = format!("{p}.allowOrigins[{i}]");
            match o {
                StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Regex(s)
                    if !s.is_empty() =>
                {
                    if let StringMatch::Regex(re) = o {
                        self.check(&f, validate_regex(re));
                    }
                }
                _ => self.err(
                    &f,
                    "allow origin must set a non-empty exact, prefix or regex",
                ),
            }
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&m.as_str()) {
                self.err(
                    format!("{p}.allowMethods[{i}]"),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (what, list) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if h != "*" && !is_header_name(h) {
                    self.err(
                        format!("{p}.{what}[{i}]"),
                        format!("header name {h:?} is not a valid header name"),
                    );
                }
            }
        }
        let f = format!("{p}.maxAge");
        if let Some(d) = self.duration(&f, c.max_age.as_ref(), Dur::Istio)
            && d.subsec_nanos() > 0
        {
            self.err(f, "maxAge duration is accurate only to seconds precision");
        }
    }

    pub(super) fn percentage(&mut self, field: &str, pc: &Percent) {
        let v = pc.value;
        if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
            self.err(
                field,
                format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }

    pub(super) fn mirror_percentage(&mut self, field: &str, pc: &Percent) {
        let v = pc.value;
        if v > 100.0 {
            self.err(
                field,
                format!("mirror percentage must have a max value of 100 (it has {v})"),
            );
        }
        if v < 0.0 {
            self.err(
                field,
                format!("mirror percentage must have a min value of 0 (it has {v})"),
            );
        }
    }

    pub(super) fn fault(&mut self, p: &str, f: &HttpFaultInjection) {
        if f.abort.is_none() && f.delay.is_none() {
            self.err(p, "HTTP fault injection must have an abort and/or a delay");
        }
        if let Some(a) = &f.abort {
            let ap = format!("{p}.abort");
            if let Some(pc) = &a.percentage {
                self.percentage(&format!("{ap}.percentage"), pc);
            }
            match &a.error_type {
                Some(AbortErrorType::HttpStatus(s)) => {
                    if !(200..=600).contains(s) {
                        self.err(
                            format!("{ap}.httpStatus"),
                            format!("HTTP status {s} is not in range 200-599"),
                        );
                    }
                }
                Some(AbortErrorType::GrpcStatus(s)) => {
                    if !GRPC_STATUSES.contains(&s.as_str()) {
                        self.err(
                            format!("{ap}.grpcStatus"),
                            format!("gRPC status {s:?} is not supported; use a code name such as NOT_FOUND (https://github.com/grpc/grpc/blob/master/doc/statuscodes.md)"),
                        );
                    }
                }
                Some(AbortErrorType::Http2Error(_)) => {
                    self.err(
                        format!("{ap}.http2Error"),
                        "HTTP/2 abort fault injection is not supported yet",
                    );
                }
                None => self.warn(&ap, "abort configured, but error type not set"),
            }
        }
        if let Some(d) = &f.delay {
            let dp = format!("{p}.delay");
            if let Some(pc) = &d.percentage {
                self.percentage(&format!("{dp}.percentage"), pc);
            }
            if let Some(pc) = d.percent
                && !(0..=100).contains(&pc)
            {
                self.err(
                    format!("{dp}.percent"),
                    format!("percentage {pc} is not in range 0..100"),
                );
            }
            match &d.http_delay_type {
                Some(HttpDelayType::FixedDelay(s)) => {
                    self.duration(&format!("{dp}.fixedDelay"), Some(s), Dur::Istio);
                }
                Some(HttpDelayType::ExponentialDelay(s)) => {
                    let f = format!("{dp}.exponentialDelay");
                    self.duration(&f, Some(s), Dur::Istio);
                    self.err(f, "exponentialDelay is not supported yet");
                }
                None => {}
            }
        }
    }

    pub(super) fn destination(&mut self, p: &str, d: &Destination) {
        let hf = format!("{p}.host");
        if d.host == "*" {
            self.err(hf, format!("invalid destination host {}", d.host));
        } else {
            self.check(&hf, validate_wildcard_domain(&d.host));
        }
        if let Some(s) = d.subset.as_deref().filter(|s| !s.is_empty()) {
            self.check(&format!("{p}.subset"), validate_subset_name(s));
        }
        if let Some(port) = &d.port {
            self.check(
                &format!("{p}.port.number"),
                validate_port(port.number.into()),
            );
        }
    }

    pub(super) fn redirect(&mut self, p: &str, r: &HttpRedirect, matches: &[HttpMatchRequest]) {
        let uri = r.uri.as_deref().unwrap_or_default();
        let prefix_rewrite = r.prefix_rewrite.as_deref().unwrap_or_default();
        let authority = r.authority.as_deref().unwrap_or_default();
        let scheme = r.scheme.as_deref().unwrap_or_default();
        if !uri.is_empty() && !prefix_rewrite.is_empty() {
            self.err(p, "redirect may only specify one of uri or prefixRewrite");
            return;
        }
        if !prefix_rewrite.is_empty()
            && matches.iter().any(|m| {
                m.uri
                    .as_ref()
                    .is_some_and(|u| !matches!(u, StringMatch::Prefix(_)))
            })
        {
            self.err(
                format!("{p}.prefixRewrite"),
                "redirect prefixRewrite requires all URI matches to use prefix match type",
            );
            return;
        }
        if uri.is_empty()
            && prefix_rewrite.is_empty()
            && authority.is_empty()
            && r.redirect_port.is_none()
            && scheme.is_empty()
        {
            self.err(p, "redirect must specify uri, authority, scheme, or port");
            return;
        }
        if let Some(code) = r.redirect_code.filter(|c| *c != 0)
            && !(300..=399).contains(&code)
        {
            self.err(
                format!("{p}.redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
            return;
        }
        if !scheme.is_empty() && scheme != "http" && scheme != "https" {
            self.err(
                format!("{p}.scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
            return;
        }
        if let Some(RedirectPort::Port(port)) = r.redirect_port
            && port > 0
        {
            self.check(&format!("{p}.port"), validate_port(port.into()));
        }
    }

    pub(super) fn direct_response(&mut self, p: &str, d: &HttpDirectResponse) {
        let size = match &d.body {
            Some(HttpBody::String(s)) => s.len(),
            Some(HttpBody::Bytes(b)) => {
                let decoded = decoded_base64_len(b);
                if decoded.is_none() {
                    self.err(format!("{p}.body.bytes"), "bytes must be valid base64");
                }
                decoded.unwrap_or(0)
            }
            Some(HttpBody::Empty) | None => 0,
        };
        if size > 1024 * 1024 {
            self.err(
                format!("{p}.body"),
                "large direct responses may impact control plane performance, must be less than 1MB",
            );
        } else if size > 100 * 1024 {
            self.warn(
                format!("{p}.body"),
                "large direct responses may impact control plane performance",
            );
        }
        if !(200..=600).contains(&d.status) {
            self.err(
                format!("{p}.status"),
                format!("HTTP status {} is not in range 200-599", d.status),
            );
        }
    }

    pub(super) fn retries(&mut self, p: &str, r: &HttpRetry) {
        if r.attempts < 0 {
            self.err(format!("{p}.attempts"), "attempts cannot be negative");
        }
        let retry_on = r.retry_on.as_deref().unwrap_or_default();
        if r.attempts == 0
            && (r.per_try_timeout.is_some()
                || !retry_on.is_empty()
                || r.retry_remote_localities.is_some())
        {
            self.err(
                p,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        self.duration(
            &format!("{p}.perTryTimeout"),
            r.per_try_timeout.as_ref(),
            Dur::Istio,
        );
        if !retry_on.is_empty() {
            for policy in retry_on.split(',') {
                let status_ok = policy.parse::<u32>().is_ok_and(is_known_http_status);
                if !status_ok && !RETRY_ON_POLICIES.contains(&policy) {
                    self.err(
                        format!("{p}.retryOn"),
                        format!("{policy:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
        self.duration(&format!("{p}.backoff"), r.backoff.as_ref(), Dur::Istio);
    }

    pub(super) fn rewrite(&mut self, p: &str, r: &HttpRewrite) {
        let uri = r.uri.as_deref().unwrap_or_default();
        let authority = r.authority.as_deref().unwrap_or_default();
        if !uri.is_empty() && r.uri_regex_rewrite.is_some() {
            self.err(p, "rewrite may only contain one of uri or uriRegexRewrite");
            return;
        }
        if uri.is_empty() && r.uri_regex_rewrite.is_none() && authority.is_empty() {
            self.err(
                p,
                "rewrite must specify at least one of uri, uriRegexRewrite, or authority",
            );
            return;
        }
        if let Some(rr) = &r.uri_regex_rewrite {
            let f = format!("{p}.uriRegexRewrite");
            if rr.match_.is_empty() || rr.rewrite.is_empty() {
                self.err(f, "uriRegexRewrite requires both rewrite and match fields");
            } else {
                self.check(&format!("{f}.match"), validate_regex(&rr.match_));
            }
        }
    }

    pub(super) fn http_route_destinations(&mut self, p: &str, routes: &[HttpRouteDestination]) {
        let mut total: i64 = 0;
        for (i, r) in routes.iter().enumerate() {
            let f = format!("{p}[{i}]");
            if let Some(h) = &r.headers {
                self.headers(&format!("{f}.headers"), h);
            }
            self.destination(&format!("{f}.destination"), &r.destination);
            if r.weight < 0 {
                self.err(format!("{f}.weight"), format!("weight {} < 0", r.weight));
            }
            total += i64::from(r.weight);
        }
        if routes.len() > 1 && total == 0 {
            self.err(p, "total destination weight = 0");
        }
    }

    pub(super) fn route_destinations(&mut self, p: &str, routes: &[RouteDestination]) {
        let mut total: i64 = 0;
        for (i, r) in routes.iter().enumerate() {
            let f = format!("{p}[{i}]");
            self.destination(&format!("{f}.destination"), &r.destination);
            if r.weight < 0 {
                self.err(format!("{f}.weight"), format!("weight {} < 0", r.weight));
            }
            total += i64::from(r.weight);
        }
        if routes.len() > 1 && total == 0 {
            self.err(p, "total destination weight = 0");
        }
    }

    pub(super) fn tls_route(&mut self, p: &str, r: &TlsRoute, vs: &VirtualService) {
        if r.match_.is_empty() {
            self.err(
                format!("{p}.match"),
                "TLS route must have at least one match condition",
            );
        }
        // As istiod does: a TLS route counts as bound to a gateway unless `mesh` is listed, which
        // also admits the `outbound_.<port>_._.<host>` SNI names.
        let to_gateway = !vs.gateways.iter().any(|g| g == MESH_GATEWAY);
        for (i, m) in r.match_.iter().enumerate() {
            let mp = format!("{p}.match[{i}]");
            if m.sni_hosts.is_empty() {
                self.err(
                    format!("{mp}.sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            for (j, sni) in m.sni_hosts.iter().enumerate() {
                let f = format!("{mp}.sniHosts[{j}]");
                let r = if to_gateway {
                    validate_wildcard_domain_for_gateway(true, sni)
                } else {
                    validate_wildcard_domain(sni)
                };
                if let Err(e) = r {
                    if is_ip(sni) {
                        self.warn(f, format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"));
                    } else {
                        self.err(f, e);
                    }
                    continue;
                }
                if !vs.hosts.iter().any(|h| host_subset_of(sni, h)) {
                    self.err(
                        f,
                        format!(
                            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                            vs.hosts.join(", ")
                        ),
                    );
                }
            }
            for (j, s) in m.destination_subnets.iter().enumerate() {
                self.check(
                    &format!("{mp}.destinationSubnets[{j}]"),
                    validate_ip_subnet(s),
                );
            }
            if let Some(port) = m.port.filter(|p| *p != 0) {
                self.check(&format!("{mp}.port"), validate_port(port.into()));
            }
            self.labels(&format!("{mp}.sourceLabels"), &m.source_labels);
            self.gateway_names(&format!("{mp}.gateways"), &m.gateways);
        }
        if r.route.is_empty() {
            self.err(format!("{p}.route"), "TLS route is required");
        }
        self.route_destinations(&format!("{p}.route"), &r.route);
    }

    pub(super) fn tcp_route(&mut self, p: &str, r: &TcpRoute) {
        for (i, m) in r.match_.iter().enumerate() {
            let mp = format!("{p}.match[{i}]");
            for (j, s) in m.destination_subnets.iter().enumerate() {
                self.check(
                    &format!("{mp}.destinationSubnets[{j}]"),
                    validate_ip_subnet(s),
                );
            }
            if let Some(port) = m.port.filter(|p| *p != 0) {
                self.check(&format!("{mp}.port"), validate_port(port.into()));
            }
            self.labels(&format!("{mp}.sourceLabels"), &m.source_labels);
            self.gateway_names(&format!("{mp}.gateways"), &m.gateways);
        }
        if r.route.is_empty() {
            self.err(format!("{p}.route"), "TCP route is required");
        }
        self.route_destinations(&format!("{p}.route"), &r.route);
    }
}

/// The decoded length of standard or URL-safe base64 (padding optional), or `None` if invalid.
pub(super) fn decoded_base64_len(s: &str) -> Option<usize> {
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 {
        return None;
    }
    if !body
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_'))
    {
        return None;
    }
    if body.len() % 4 == 1 {
        return None;
    }
    Some(body.len() * 3 / 4)
}

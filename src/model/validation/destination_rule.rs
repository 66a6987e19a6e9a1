//! DestinationRule: the host, subsets, and traffic policies (load balancer, connection pool,
//! outlier detection, TLS, per port).

use super::*;

impl Ctx<'_> {
    pub(super) fn destination_rule(&mut self, dr: &DestinationRule) {
        self.check("spec.host", validate_wildcard_domain(&dr.host));
        if let Some(tp) = &dr.traffic_policy {
            self.traffic_policy("spec.trafficPolicy", tp);
        }
        let mut names = BTreeSet::new();
        for (i, s) in dr.subsets.iter().enumerate() {
            let p = format!("spec.subsets[{i}]");
            if !names.insert(s.name.as_str()) {
                self.err(
                    format!("{p}.name"),
                    format!("duplicate subset names: {}", s.name),
                );
            }
            self.check(&format!("{p}.name"), validate_subset_name(&s.name));
            self.labels(&format!("{p}.labels"), &s.labels);
            if let Some(tp) = &s.traffic_policy {
                self.traffic_policy(&format!("{p}.trafficPolicy"), tp);
            }
        }
        self.export_to(
            "spec.exportTo",
            &dr.export_to,
            false,
            dr.workload_selector.is_some(),
        );
        if let Some(sel) = &dr.workload_selector {
            self.type_selector("spec.workloadSelector", sel);
        }
    }

    pub(super) fn traffic_policy(&mut self, p: &str, tp: &TrafficPolicy) {
        if tp.outlier_detection.is_none()
            && tp.connection_pool.is_none()
            && tp.load_balancer.is_none()
            && tp.tls.is_none()
            && tp.port_level_settings.is_empty()
            && tp.tunnel.is_none()
            && tp.proxy_protocol.is_none()
            && tp.retry_budget.is_none()
        {
            self.err(p, "traffic policy must have at least one field");
            return;
        }
        if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
            self.err(p, "tunnel and proxyProtocol must not be set together");
            return;
        }
        if let Some(o) = &tp.outlier_detection {
            self.outlier_detection(&format!("{p}.outlierDetection"), o);
        }
        if let Some(c) = &tp.connection_pool {
            self.connection_pool(&format!("{p}.connectionPool"), c);
        }
        if let Some(lb) = &tp.load_balancer {
            self.load_balancer(
                &format!("{p}.loadBalancer"),
                lb,
                tp.outlier_detection.is_some(),
            );
        }
        if let Some(t) = &tp.tls {
            self.client_tls(&format!("{p}.tls"), t);
        }
        if tp.port_level_settings.len() > 4096 {
            self.err(
                format!("{p}.portLevelSettings"),
                "at most 4096 port level settings are allowed",
            );
        }
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            self.port_traffic_policy(&format!("{p}.portLevelSettings[{i}]"), pl);
        }
        if let Some(t) = &tp.tunnel {
            self.tunnel(&format!("{p}.tunnel"), t);
        }
        if let Some(rb) = &tp.retry_budget {
            let f = format!("{p}.retryBudget");
            if let Some(pc) = rb.percent
                && !(0.0..=100.0).contains(&pc)
            {
                self.err(
                    format!("{f}.percent"),
                    format!("percent {pc} must be between 0 and 100"),
                );
            }
            self.duration(
                &format!("{f}.budgetInterval"),
                rb.budget_interval.as_ref(),
                Dur::Any,
            );
        }
    }

    pub(super) fn port_traffic_policy(&mut self, p: &str, pl: &PortTrafficPolicy) {
        // The CRD allows any number here; istiod checks only that a port is given.
        if pl.port.is_none() {
            self.err(
                format!("{p}.port"),
                "port level traffic policy must have a port",
            );
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            self.err(p, "port traffic policy must have at least one field");
            return;
        }
        if let Some(o) = &pl.outlier_detection {
            self.outlier_detection(&format!("{p}.outlierDetection"), o);
        }
        if let Some(c) = &pl.connection_pool {
            self.connection_pool(&format!("{p}.connectionPool"), c);
        }
        if let Some(lb) = &pl.load_balancer {
            self.load_balancer(
                &format!("{p}.loadBalancer"),
                lb,
                pl.outlier_detection.is_some(),
            );
        }
        if let Some(t) = &pl.tls {
            self.client_tls(&format!("{p}.tls"), t);
        }
    }

    pub(super) fn tunnel(&mut self, p: &str, t: &TunnelSettings) {
        if let Some(proto) = t.protocol.as_deref().filter(|s| !s.is_empty())
            && proto != "CONNECT"
            && proto != "POST"
        {
            self.err(
                format!("{p}.protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        if let (Err(fqdn), false) = (validate_fqdn(&t.target_host), is_ip(&t.target_host)) {
            self.err(
                format!("{p}.targetHost"),
                format!("tunnel target host must be a valid FQDN or IP address: {fqdn}"),
            );
        }
        if let Err(e) = validate_port(t.target_port.into()) {
            self.err(
                format!("{p}.targetPort"),
                format!("tunnel target port is invalid: {e}"),
            );
        }
    }

    pub(super) fn outlier_detection(&mut self, p: &str, o: &OutlierDetection) {
        self.duration(
            &format!("{p}.baseEjectionTime"),
            o.base_ejection_time.as_ref(),
            Dur::Istio,
        );
        if o.consecutive_errors != 0 {
            self.warn(
                format!("{p}.consecutiveErrors"),
                "outlier detection consecutiveErrors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
            );
        }
        if !o.split_external_local_origin_errors
            && o.consecutive_local_origin_failures.unwrap_or(0) > 0
        {
            self.err(
                format!("{p}.consecutiveLocalOriginFailures"),
                "outlier detection consecutiveLocalOriginFailures is specified, but splitExternalLocalOriginErrors is false",
            );
        }
        self.duration(&format!("{p}.interval"), o.interval.as_ref(), Dur::Istio);
        for (what, v) in [
            ("maxEjectionPercent", o.max_ejection_percent),
            ("minHealthPercent", o.min_health_percent),
        ] {
            if !(0..=100).contains(&v) {
                self.err(
                    format!("{p}.{what}"),
                    format!("percentage {v} is not in range 0..100"),
                );
            }
        }
        for (i, c) in o.outlier_detection_http_error_codes.iter().enumerate() {
            if !(100..=599).contains(c) {
                self.err(
                    format!("{p}.outlierDetectionHttpErrorCodes[{i}]"),
                    format!("HTTP status code {c} must be between 100 and 599"),
                );
            }
        }
    }

    pub(super) fn connection_pool(&mut self, p: &str, c: &ConnectionPoolSettings) {
        if c.http.is_none() && c.tcp.is_none() {
            self.err(p, "connection pool must have at least one field");
            return;
        }
        if let Some(h) = &c.http {
            let hp = format!("{p}.http");
            for (what, v) in [
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
                ("maxRequestsPerConnection", h.max_requests_per_connection),
                ("maxRetries", h.max_retries),
                ("maxConcurrentStreams", h.max_concurrent_streams),
            ] {
                if v < 0 {
                    self.err(
                        format!("{hp}.{what}"),
                        format!("{what} must be non-negative"),
                    );
                }
            }
            self.duration(
                &format!("{hp}.idleTimeout"),
                h.idle_timeout.as_ref(),
                Dur::Istio,
            );
            if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol {
                self.err(
                    format!("{hp}.useClientProtocol"),
                    "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE",
                );
            }
            if let Some(ka) = &h.http2_keep_alive {
                let kp = format!("{hp}.http2KeepAlive");
                for (what, v) in [("interval", &ka.interval), ("timeout", &ka.timeout)] {
                    match v {
                        None => self.err(
                            format!("{kp}.{what}"),
                            format!("http2 keepalive {what} is required"),
                        ),
                        Some(_) => {
                            self.duration(&format!("{kp}.{what}"), v.as_ref(), Dur::Istio);
                        }
                    }
                }
            }
        }
        if let Some(t) = &c.tcp {
            let tp = format!("{p}.tcp");
            if t.max_connections < 0 {
                self.err(
                    format!("{tp}.maxConnections"),
                    "maxConnections must be non-negative",
                );
            }
            self.duration(
                &format!("{tp}.connectTimeout"),
                t.connect_timeout.as_ref(),
                Dur::Istio,
            );
            self.duration(
                &format!("{tp}.maxConnectionDuration"),
                t.max_connection_duration.as_ref(),
                Dur::Istio,
            );
            // 0s disables the idle timeout.
            let f = format!("{tp}.idleTimeout");
            if let Some(d) = self.duration(&f, t.idle_timeout.as_ref(), Dur::Any)
                && d.as_millis() != 0
            {
                self.duration(&f, t.idle_timeout.as_ref(), Dur::Istio);
            }
            if let Some(ka) = &t.tcp_keepalive {
                let kp = format!("{tp}.tcpKeepalive");
                self.duration(&format!("{kp}.time"), ka.time.as_ref(), Dur::Istio);
                self.duration(&format!("{kp}.interval"), ka.interval.as_ref(), Dur::Istio);
            }
        }
    }

    pub(super) fn load_balancer(&mut self, p: &str, lb: &LoadBalancerSettings, has_outlier: bool) {
        if let Some(LbPolicy::ConsistentHash(ch)) = &lb.lb_policy {
            let cp = format!("{p}.consistentHash");
            if let Some(HashKey::HttpCookie(c)) = &ch.hash_key {
                let kp = format!("{cp}.httpCookie");
                if c.name.is_empty() {
                    self.err(format!("{kp}.name"), "name required for httpCookie");
                }
                self.duration(&format!("{kp}.ttl"), c.ttl.as_ref(), Dur::Any);
                let mut names = BTreeSet::new();
                for (i, a) in c.attributes.iter().enumerate() {
                    let f = format!("{kp}.attributes[{i}].name");
                    if a.name.is_empty() {
                        self.err(f, "cookie attribute name cannot be empty");
                    } else if !names.insert(a.name.as_str()) {
                        self.err(f, format!("duplicate cookie attribute name: {}", a.name));
                    }
                }
            }
            if ch.minimum_ring_size.unwrap_or(0) != 0 {
                self.warn(
                    format!("{cp}.minimumRingSize"),
                    "consistent hash minimumRingSize is deprecated, use ringHash.minimumRingSize instead",
                );
                if ch.hash_algorithm.is_some() {
                    self.err(
                        &cp,
                        "only one of minimumRingSize or maglev/ringHash can be specified",
                    );
                }
            }
            if let Some(HashAlgorithm::Maglev(m)) = &ch.hash_algorithm {
                let f = format!("{cp}.maglev.tableSize");
                let size = m.table_size.unwrap_or(0);
                if size == 0 {
                    self.err(&f, "tableSize must be set for maglev");
                }
                if size >= 5_000_011 {
                    self.err(&f, "tableSize must be less than 5000011 for maglev");
                }
                if !is_prime(size) {
                    self.err(&f, "tableSize must be a prime number for maglev");
                }
            }
        }
        if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
            self.err(
                p,
                "only one of localityLbSetting and zoneAwareLbSetting can be set",
            );
        }
        if let Some(l) = &lb.locality_lb_setting {
            self.locality_lb(&format!("{p}.localityLbSetting"), l, has_outlier);
        }
        if let Some(z) = &lb.zone_aware_lb_setting {
            self.zone_aware_lb(&format!("{p}.zoneAwareLbSetting"), z, has_outlier);
        }
        self.duration(
            &format!("{p}.warmupDurationSecs"),
            lb.warmup_duration_secs.as_ref(),
            Dur::AtLeast1ms,
        );
        if let Some(w) = &lb.warmup {
            let wp = format!("{p}.warmup");
            match &w.duration {
                None => self.err(format!("{wp}.duration"), "duration is required"),
                Some(_) => {
                    self.duration(&format!("{wp}.duration"), w.duration.as_ref(), Dur::Istio);
                }
            }
            if let Some(mp) = w.minimum_percent
                && !(0.0..=100.0).contains(&mp)
            {
                self.err(
                    format!("{wp}.minimumPercent"),
                    format!("minimumPercent {mp} must be between 0 and 100"),
                );
            }
            if let Some(a) = w.aggression
                && (a <= 0.0 || a.is_nan())
            {
                self.err(
                    format!("{wp}.aggression"),
                    format!("aggression {a} must be greater than 0"),
                );
            }
        }
    }

    pub(super) fn locality_lb(
        &mut self,
        p: &str,
        l: &LocalityLoadBalancerSetting,
        has_outlier: bool,
    ) {
        if !l.distribute.is_empty() && !l.failover.is_empty() {
            self.err(
                p,
                "can not simultaneously specify 'distribute' and 'failover'",
            );
            return;
        }
        if !l.failover.is_empty()
            && let Some(t) = l
                .failover_priority
                .iter()
                .find(|t| TOPOLOGY_LABELS.contains(&t.as_str()))
        {
            self.err(
                    format!("{p}.failoverPriority"),
                    format!("can not simultaneously set 'failover' and topology label '{t}' in 'failoverPriority'"),
                );
            return;
        }
        let mut sources = Vec::new();
        for (i, d) in l.distribute.iter().enumerate() {
            let dp = format!("{p}.distribute[{i}]");
            sources.push(d.from.as_str());
            let mut total: u64 = 0;
            for w in d.to.values() {
                if *w == 0 || *w > 100 {
                    self.err(
                        format!("{dp}.to"),
                        "locality weight must be in range [1, 100]",
                    );
                    return;
                }
                total += u64::from(*w);
            }
            if total != 100 {
                self.err(
                    format!("{dp}.to"),
                    format!("total locality weight {total} != 100"),
                );
                return;
            }
            let dests: Vec<&str> = d.to.keys().map(String::as_str).collect();
            self.check(&format!("{dp}.to"), validate_localities(&dests));
        }
        self.check(&format!("{p}.distribute"), validate_localities(&sources));
        if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
            self.warn(p, "outlier detection policy must be provided for failover");
        }
        for (i, f) in l.failover.iter().enumerate() {
            let fp = format!("{p}.failover[{i}]");
            if f.from == f.to {
                self.err(
                    &fp,
                    "locality lb failover settings must specify different regions",
                );
            }
            if f.from.contains('/') || f.to.contains('/') {
                self.err(&fp, "locality lb failover only specify region");
            }
            if f.from.contains('*') || f.to.contains('*') {
                self.err(
                    &fp,
                    "locality lb failover region should not contain '*' wildcard",
                );
            }
        }
    }

    pub(super) fn zone_aware_lb(
        &mut self,
        p: &str,
        z: &ZoneAwareLoadBalancerSetting,
        has_outlier: bool,
    ) {
        for (i, t) in z.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&t.as_str()) {
                self.err(
                    format!("{p}.failoverPriority[{i}]"),
                    format!("failoverPriority for zone aware lb must not use topology label '{t}'; region- and zone-level routing are handled automatically"),
                );
            }
        }
        if (!z.failover.is_empty() || !z.failover_priority.is_empty()) && !has_outlier {
            self.warn(p, "outlier detection policy must be provided for failover");
        }
        for (i, f) in z.failover.iter().enumerate() {
            let fp = format!("{p}.failover[{i}]");
            if f.from == f.to {
                self.err(
                    &fp,
                    "zone aware lb failover settings must specify different regions",
                );
            }
            if f.from.contains('/') || f.to.contains('/') {
                self.err(
                    &fp,
                    "zone aware lb failover only specifies region; zone and subzone failover are handled automatically",
                );
            }
            if f.from.contains('*') || f.to.contains('*') {
                self.err(
                    &fp,
                    "zone aware lb failover region should not contain '*' wildcard",
                );
            }
        }
        if z.min_cluster_size == Some(0) {
            self.err(
                format!("{p}.minClusterSize"),
                "minClusterSize must be at least 1",
            );
        }
    }

    pub(super) fn client_tls(&mut self, p: &str, t: &ClientTlsSettings) {
        let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
        let credential = t.credential_name.as_deref().unwrap_or_default();
        if let Some(rest) = credential.strip_prefix("configmap://") {
            let ns = self.namespace().to_string();
            let (cm_ns, name) = match rest.split_once('/') {
                Some((n, name)) => (n, name),
                None => (ns.as_str(), rest),
            };
            if name.is_empty() || name.contains('/') {
                self.err(
                    format!("{p}.credentialName"),
                    format!("invalid configmap:// credentialName {credential:?}"),
                );
            } else if cm_ns != ns {
                self.err(
                    format!("{p}.credentialName"),
                    format!("invalid configmap:// credentialName: namespace must match the configuration namespace {ns:?}"),
                );
            }
        }
        let mode = t.mode;
        if t.insecure_skip_verify == Some(true) {
            if mode == Some(ClientTlsMode::Simple)
                && (set(&t.ca_certificates)
                    || set(&t.credential_name)
                    || !t.subject_alt_names.is_empty())
            {
                self.err(
                    p,
                    "cannot specify caCertificates or credentialName or subjectAltNames when insecureSkipVerify is true",
                );
            }
            if mode == Some(ClientTlsMode::Mutual)
                && (set(&t.ca_certificates) || !t.subject_alt_names.is_empty())
            {
                self.err(
                    p,
                    "cannot specify caCertificates or subjectAltNames when insecureSkipVerify is true",
                );
            }
        }
        let simple_or_mutual = matches!(mode, Some(ClientTlsMode::Simple | ClientTlsMode::Mutual));
        if simple_or_mutual && set(&t.credential_name) {
            if set(&t.client_certificate)
                || set(&t.ca_certificates)
                || set(&t.private_key)
                || set(&t.ca_crl)
            {
                self.err(
                    p,
                    "cannot specify client certificates or CA certificate or CA CRL if credentialName is set",
                );
            }
            return;
        }
        if mode == Some(ClientTlsMode::Mutual) {
            if !set(&t.client_certificate) {
                self.err(
                    format!("{p}.clientCertificate"),
                    "client certificate required for mutual tls",
                );
            }
            if !set(&t.private_key) {
                self.err(
                    format!("{p}.privateKey"),
                    "private key required for mutual tls",
                );
            }
        }
    }
}

/// Localities `region[/zone[/subzone]]`, `*` only as the last character, none overlapping.
pub(super) fn validate_localities(localities: &[&str]) -> Result<(), String> {
    // region -> zone -> subzones; "*" marks "everything below".
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for loc in localities {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(format!(
                "locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if seen.contains_key("*") {
            return Err(format!(
                "locality {loc} overlap with previous specified ones"
            ));
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!(
                "locality {loc} must not contain empty region/zone/subzone info"
            ));
        }
        let overlap = || {
            Err(format!(
                "locality {loc} overlap with previous specified ones"
            ))
        };
        match parts.as_slice() {
            [region] => {
                if seen.contains_key(region) {
                    return overlap();
                }
                seen.insert(region, BTreeMap::from([("*", BTreeSet::from(["*"]))]));
            }
            [region, zone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(zone) {
                    return overlap();
                }
                zones.insert(zone, BTreeSet::from(["*"]));
            }
            [region, zone, subzone] => {
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return overlap();
                }
                let subzones = zones.entry(zone).or_default();
                if subzones.contains("*") || subzones.contains(subzone) {
                    return overlap();
                }
                subzones.insert(subzone);
            }
            _ => {}
        }
    }
    Ok(())
}

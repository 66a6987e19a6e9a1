//! ServiceEntry and WorkloadEntry: hosts, addresses, ports, resolution, endpoints.

use super::*;

/// Where a workload entry appears, which decides the rules for its address and ports.
pub(super) enum EntryUse<'a> {
    /// A WorkloadEntry resource: address may be an IP, a DNS name or a socket.
    Standalone,
    /// A STATIC ServiceEntry endpoint: an IP or a socket; ports must be service port names.
    Static(&'a BTreeSet<&'a str>),
    /// A DNS / DNS_ROUND_ROBIN ServiceEntry endpoint: an IP or a DNS name.
    Dns(&'a BTreeSet<&'a str>),
    /// Other ServiceEntry endpoints: only the CRD's rules.
    Other,
}

impl Ctx<'_> {
    pub(super) fn service_entry(&mut self, se: &ServiceEntry) {
        self.workload_selector(
            "spec.workloadSelector",
            se.workload_selector.as_ref(),
            "services",
        );
        if se.workload_selector.is_some() && !se.endpoints.is_empty() {
            self.err(
                "spec",
                "only one of workloadSelector or endpoints can be set",
            );
        }
        if se.hosts.is_empty() {
            self.err("spec.hosts", "service entry must have at least one host");
        }
        if se.hosts.len() > 256 {
            self.err("spec.hosts", "at most 256 hosts are allowed");
        }
        let resolution = se.resolution.unwrap_or(Resolution::None);
        for (i, h) in se.hosts.iter().enumerate() {
            let f = format!("spec.hosts[{i}]");
            if h == "*" {
                self.err(f, "hostname cannot be wildcard");
                continue;
            }
            self.check(&f, validate_wildcard_domain(h));
            if resolution != Resolution::DynamicDns
                && let Err(e) = validate_partial_wildcard(h)
            {
                self.warn(f, e);
            }
        }

        let mut cidr = false;
        if se.addresses.len() > 256 {
            self.err("spec.addresses", "at most 256 addresses are allowed");
        }
        for (i, a) in se.addresses.iter().enumerate() {
            cidr |= a.contains('/');
            self.check(&format!("spec.addresses[{i}]"), validate_ip_subnet(a));
        }
        if cidr && !matches!(resolution, Resolution::None | Resolution::Static) {
            self.err(
                "spec.addresses",
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }

        // istiod allocates addresses itself (PILOT_ENABLE_IP_AUTOALLOCATE, on by default) unless
        // resolution is NONE or the ServiceEntry opts out with a label.
        let auto_allocate = resolution != Resolution::None
            && !self
                .resource
                .meta
                .labels
                .get("networking.istio.io/enable-autoallocate-ip")
                .is_some_and(|v| v.eq_ignore_ascii_case("false"));
        let mut port_names = BTreeSet::new();
        let mut port_numbers = BTreeSet::new();
        if se.ports.len() > 256 {
            self.err("spec.ports", "at most 256 ports are allowed");
        }
        for (i, port) in se.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            if !port_names.insert(port.name.as_str()) {
                self.err(
                    format!("{p}.name"),
                    format!(
                        "Duplicate value: service entry port name {:?} already defined",
                        port.name
                    ),
                );
            }
            if !port_numbers.insert(port.number) {
                self.err(
                    format!("{p}.number"),
                    format!(
                        "port number cannot be duplicated: {} already defined",
                        port.number
                    ),
                );
            }
            if let Some(tp) = port.target_port
                && let Err(e) = validate_port(tp.into())
            {
                self.err(
                    format!("{p}.targetPort"),
                    format!("port must be between 1-65535: {e}"),
                );
            }
            let proto = port.protocol.as_deref().unwrap_or_default();
            if se.addresses.is_empty() && !auto_allocate && (proto.is_empty() || proto == "TCP") {
                self.warn(
                    &p,
                    "addresses are required for ports serving TCP (or unset) protocol when IP auto-allocation is not enabled",
                );
            }
            self.check(&format!("{p}.name"), validate_port_name(&port.name));
            self.check(&format!("{p}.protocol"), validate_protocol(proto));
            if let Err(e) = validate_port(port.number.into()) {
                self.err(
                    format!("{p}.number"),
                    format!("port must be between 1-65535: {e}"),
                );
            }
        }

        if se.endpoints.len() > 4096 {
            self.err("spec.endpoints", "at most 4096 endpoints are allowed");
        }
        match resolution {
            Resolution::None | Resolution::DynamicDns => {
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.endpoint(&format!("spec.endpoints[{i}]"), e, EntryUse::Other);
                }
            }
            Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin => {}
        }
        match resolution {
            Resolution::None => {
                if !se.endpoints.is_empty() {
                    self.err(
                        "spec.endpoints",
                        "NONE mode cannot set endpoints (no endpoints should be provided for resolution type NONE)",
                    );
                }
                if se.workload_selector.is_some() {
                    self.warn(
                        "spec.workloadSelector",
                        "workloadSelector should not be set when resolution mode is NONE",
                    );
                }
            }
            Resolution::Static => {
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.endpoint(
                        &format!("spec.endpoints[{i}]"),
                        e,
                        EntryUse::Static(&port_names),
                    );
                }
            }
            Resolution::Dns | Resolution::DnsRoundRobin => {
                if se.endpoints.is_empty()
                    && let Some((i, e)) = se
                        .hosts
                        .iter()
                        .enumerate()
                        .find_map(|(i, h)| validate_fqdn(h).err().map(|e| (i, e)))
                {
                    self.err(
                            format!("spec.hosts[{i}]"),
                            format!("hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {resolution:?}: {e}"),
                        );
                }
                if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                    self.err(
                        "spec.endpoints",
                        "DNS_ROUND_ROBIN mode cannot have multiple endpoints (there must only be 0 or 1)",
                    );
                }
                for (i, e) in se.endpoints.iter().enumerate() {
                    self.endpoint(
                        &format!("spec.endpoints[{i}]"),
                        e,
                        EntryUse::Dns(&port_names),
                    );
                }
                if !se.addresses.is_empty()
                    && se.hosts.len() > 1
                    && se
                        .ports
                        .iter()
                        .any(|p| protocol_is_tcp(p.protocol.as_deref().unwrap_or_default()))
                {
                    self.warn(
                        "spec.hosts",
                        "service entry can not have more than one host specified simultaneously with address and tcp port",
                    );
                }
            }
            Resolution::DynamicDns => {
                for (i, h) in se.hosts.iter().enumerate() {
                    if !host_is_wildcard(h) {
                        self.err(
                            format!("spec.hosts[{i}]"),
                            "host must be wildcarded for resolution mode DYNAMIC_DNS",
                        );
                    }
                }
                if !se.addresses.is_empty() {
                    self.err(
                        "spec.addresses",
                        "addresses cannot be set for resolution type DYNAMIC_DNS; route domains are generated from the hosts",
                    );
                }
                if !se.endpoints.is_empty() {
                    self.err(
                        "spec.endpoints",
                        "endpoints cannot be set for resolution type DYNAMIC_DNS; the destination address is determined from the hosts",
                    );
                }
                for (i, p) in se.ports.iter().enumerate() {
                    let proto = parse_protocol(p.protocol.as_deref().unwrap_or_default());
                    if !matches!(proto, Some("HTTP" | "TLS" | "GRPC" | "HTTP2")) {
                        self.err(
                            format!("spec.ports[{i}].protocol"),
                            "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution type DYNAMIC_DNS",
                        );
                    }
                }
                if se.location == Some(Location::MeshInternal) && self.uses_waypoint() {
                    self.err(
                        "spec.location",
                        "location MESH_INTERNAL with resolution type DYNAMIC_DNS is not supported when using waypoints",
                    );
                }
            }
        }
        if resolution != Resolution::None
            && se.hosts.len() > 1
            && let Some(i) = se.ports.iter().position(|p| {
                let proto = p.protocol.as_deref().unwrap_or_default();
                !protocol_is_http(proto) && !protocol_is_tls(proto)
            })
        {
            self.err(
                format!("spec.ports[{i}]"),
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
        self.export_to("spec.exportTo", &se.export_to, true, false);
    }

    pub(super) fn uses_waypoint(&self) -> bool {
        self.resource
            .meta
            .labels
            .get("istio.io/use-waypoint")
            .is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("none"))
    }

    pub(super) fn workload_entry(&mut self, we: &WorkloadEntry) {
        self.endpoint("spec", we, EntryUse::Standalone);
    }

    pub(super) fn endpoint(&mut self, p: &str, we: &WorkloadEntry, usage: EntryUse<'_>) {
        let addr = we.address.as_str();
        let network = we.network.as_deref().unwrap_or_default();
        let af = format!("{p}.address");
        if addr.len() > 256 {
            self.err(&af, "address may not exceed 256 characters");
        }
        // The CRD's rules, whatever the use.
        let mut address_ok = true;
        let unix = addr.starts_with(UNIX_PREFIX);
        if addr.is_empty() && network.is_empty() {
            self.err(&af, "Address is required (or a network)");
            address_ok = false;
        }
        if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
            if !(path.starts_with('/') || path.starts_with('@')) {
                self.err(&af, "UDS must be an absolute path or abstract socket");
                address_ok = false;
            } else if path.ends_with('/') {
                self.err(&af, "UDS may not be a dir");
                address_ok = false;
            }
            if !we.ports.is_empty() {
                self.err(
                    format!("{p}.ports"),
                    format!(
                        "UDS may not include ports: unix endpoint {addr} must not include ports"
                    ),
                );
            }
        }
        // istiod's rules, which depend on the use.
        if address_ok {
            match usage {
                EntryUse::Standalone | EntryUse::Static(_) => {
                    if addr.is_empty() {
                        self.warn(&af, format!("address is unset with network {network:?}"));
                    } else if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
                        self.check(&af, validate_unix_address(path));
                    } else if !is_ip(addr) {
                        if matches!(usage, EntryUse::Static(_)) {
                            self.err(
                                &af,
                                format!("endpoint address {addr:?} is not a valid IP address"),
                            );
                        } else if validate_fqdn(addr).is_err() {
                            self.err(
                                &af,
                                format!(
                                    "endpoint address {addr:?} is not a valid FQDN or an IP address"
                                ),
                            );
                        }
                    }
                }
                EntryUse::Dns(_) => {
                    if !is_ip(addr) && validate_fqdn(addr).is_err() {
                        self.err(
                            &af,
                            format!(
                                "endpoint address {addr:?} is not a valid FQDN or an IP address"
                            ),
                        );
                    }
                }
                EntryUse::Other => {}
            }
        }
        if we.ports.len() > 128 {
            self.err(format!("{p}.ports"), "at most 128 ports are allowed");
        }
        let service_ports = match usage {
            EntryUse::Static(s) | EntryUse::Dns(s) => Some(s),
            _ => None,
        };
        for (name, port) in &we.ports {
            let f = format!("{p}.ports.{name}");
            if let Some(sp) = service_ports
                && !sp.contains(name.as_str())
            {
                self.err(
                    &f,
                    format!("endpoint port {name:?} is not defined by the service entry"),
                );
            }
            if !is_dns1123_label(name) || name.len() >= 63 {
                self.err(
                    &f,
                    format!("Invalid value: port name {name:?} must be valid (a DNS-1123 label shorter than 63 characters)"),
                );
            }
            if let Err(e) = validate_port((*port).into()) {
                self.err(&f, format!("port must be between 1-65535: {e}"));
            }
        }
        if !matches!(usage, EntryUse::Other) {
            self.labels(&format!("{p}.labels"), &we.labels);
        }
        if we.labels.len() > 256 {
            self.err(format!("{p}.labels"), "at most 256 labels are allowed");
        }
        if unix
            && let EntryUse::Static(sp) = usage
            && sp.len() != 1
        {
            self.err(&af, "exactly 1 service port required for unix endpoints");
        }
        if let Some(sa) = &we.service_account
            && sa.len() > 253
        {
            self.err(
                format!("{p}.serviceAccount"),
                "serviceAccount may not exceed 253 characters",
            );
        }
    }
}

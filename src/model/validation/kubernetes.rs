//! The Kubernetes kinds read in file mode: Service and EndpointSlice.

use super::*;

impl Ctx<'_> {
    pub(super) fn service(&mut self, s: &kube::ServiceSpec) {
        let many = s.ports.len() > 1;
        let mut names = BTreeSet::new();
        for (i, port) in s.ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            self.check(&format!("{p}.port"), validate_port(port.port));
            let name = port.name.as_deref().filter(|n| !n.is_empty());
            if name.is_none() && many {
                self.err(
                    format!("{p}.name"),
                    "port name is required when a service has more than one port",
                );
            }
            if let Some(n) = name
                && !names.insert(n)
            {
                self.err(format!("{p}.name"), format!("duplicate port name {n:?}"));
            }
            if let Some(kube::IntOrString::Int(t)) = &port.target_port {
                self.check(&format!("{p}.targetPort"), validate_port(*t));
            }
        }
    }

    pub(super) fn endpoint_slice(&mut self, es: &kube::EndpointSlice) {
        if let Some(t) = es.address_type.as_deref()
            && !matches!(t, "IPv4" | "IPv6" | "FQDN")
        {
            self.err(
                "addressType",
                format!("unsupported addressType {t:?} (IPv4, IPv6 or FQDN)"),
            );
        }
        for (i, port) in es.ports.iter().flatten().enumerate() {
            if let Some(n) = port.port {
                self.check(&format!("ports[{i}].port"), validate_port(n));
            }
        }
    }
}

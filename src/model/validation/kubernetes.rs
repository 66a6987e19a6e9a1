//! The Kubernetes kinds read in file mode: Service, EndpointSlice and Secret (what the API
//! server's own validation of them refuses).

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

/// The largest Secret the API server stores (the sum of its values).
const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// A Secret or ConfigMap key as the API server accepts it: alphanumerics, `-`, `_` and `.`,
/// at most 253 characters, not `.`, `..` or starting with `..`.
fn validate_data_key(key: &str) -> Result<(), String> {
    let charset = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if key.is_empty() || key.len() > 253 || !charset {
        return Err(format!(
            "invalid key {key:?}: keys consist of at most 253 alphanumeric characters, '-', '_' or '.'"
        ));
    }
    if key == "." || key.starts_with("..") {
        return Err(format!(
            "invalid key {key:?}: must not be '.' or start with '..'"
        ));
    }
    Ok(())
}

impl Ctx<'_> {
    pub(super) fn secret(&mut self, s: &kube::Secret) {
        let mut size = 0;
        for (key, value) in s.data.entries() {
            self.check(&format!("data[{key}]"), validate_data_key(key));
            size += value.len();
        }
        if size > MAX_SECRET_SIZE {
            self.err(
                "data",
                format!("too long: the values must not exceed {MAX_SECRET_SIZE} bytes in total"),
            );
        }
        if s.type_ == kube::SECRET_TYPE_TLS {
            for key in ["tls.crt", "tls.key"] {
                if s.data.get(key).is_none() {
                    self.err(
                        format!("data[{key}]"),
                        format!(
                            "Required value: a {} Secret holds {key}",
                            kube::SECRET_TYPE_TLS
                        ),
                    );
                }
            }
        }
    }
}

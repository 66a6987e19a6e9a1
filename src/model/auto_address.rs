//! Addresses for ServiceEntries that declare none, as istiod's IP auto-allocation gives them
//! (`PILOT_ENABLE_IP_AUTOALLOCATE`, on by default): each ServiceEntry host that has no
//! `addresses`, is not a wildcard and is resolved by the mesh (resolution other than NONE) gets
//! an IPv4 address from istiod's range `240.240.0.0/16`. Proxies whose agent answers DNS
//! (`DNS_CAPTURE`) are told these addresses in their name table, so an application that looks
//! the host up connects to an address that names the service.
//!
//! istiod keeps the addresses it picks in each ServiceEntry's status. bowline derives them from
//! the configuration alone, so every replica, and every restart, agrees without writing
//! anything: a host's address is a hash of `<namespace>/<hostname>`, and a host whose slot is
//! taken moves on by a second hash (double hashing), hosts taking their slots in
//! (namespace, hostname) order. Adding or removing a host moves no other host's address unless
//! their slots collide.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::Kind;
use super::registry::{Resolution, Service};

/// The slots of `240.240.0.0/16` used: third octet 0–255, fourth octet 1–254.
const SLOTS: u32 = 256 * 254;
/// The largest prime below `SLOTS`: the second hash's modulus.
const PRIME: u32 = 65011;

/// Whether istiod allocates an address for this service.
pub fn eligible(service: &Service) -> bool {
    service.origin == Kind::ServiceEntry
        && service.addresses.is_empty()
        && !service.hostname.starts_with('*')
        && !matches!(
            service.resolution,
            Resolution::Passthrough | Resolution::DynamicDns
        )
}

/// The allocated address of each eligible (namespace, hostname).
pub fn allocate<'a>(
    services: impl IntoIterator<Item = &'a Service>,
) -> HashMap<(String, String), Ipv4Addr> {
    let mut keys: Vec<(String, String)> = services
        .into_iter()
        .filter(|s| eligible(s))
        .map(|s| (s.namespace.clone(), s.hostname.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut taken = vec![false; SLOTS as usize];
    let mut out = HashMap::with_capacity(keys.len());
    for key in keys.into_iter().take(SLOTS as usize) {
        let h = fnv1a(format!("{}/{}", key.0, key.1).as_bytes());
        let step = PRIME - (h % PRIME);
        let mut slot = h % SLOTS;
        while taken[slot as usize] {
            slot = (slot + step) % SLOTS;
        }
        taken[slot as usize] = true;
        out.insert(key, address(slot));
    }
    out
}

fn address(slot: u32) -> Ipv4Addr {
    Ipv4Addr::new(240, 240, (slot / 254) as u8, (slot % 254 + 1) as u8)
}

/// 32-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ns: &str, host: &str, addresses: &[&str], resolution: Resolution) -> Service {
        Service {
            hostname: host.to_string(),
            namespace: ns.to_string(),
            name: host.to_string(),
            origin: Kind::ServiceEntry,
            ports: Vec::new(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            resolution,
            mesh_external: true,
            export_to: Vec::new(),
            selector: None,
            endpoints: Default::default(),
        }
    }

    #[test]
    fn only_addressless_resolved_hosts_get_an_address() {
        let services = [
            service("a", "db.example", &[], Resolution::Dns),
            service("a", "vip.example", &["10.0.0.1"], Resolution::Dns),
            service("a", "*.wild.example", &[], Resolution::Dns),
            service("a", "orig.example", &[], Resolution::Passthrough),
            service("a", "static.example", &[], Resolution::Static),
        ];
        let got = allocate(&services);
        let mut keys: Vec<_> = got.keys().map(|(_, h)| h.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["db.example", "static.example"]);
        for ip in got.values() {
            assert_eq!(ip.octets()[..2], [240, 240]);
            assert!((1..=254).contains(&ip.octets()[3]), "{ip}");
        }
    }

    #[test]
    fn addresses_are_stable_and_distinct() {
        let many: Vec<Service> = (0..3000)
            .map(|i| service("ns", &format!("h{i}.example"), &[], Resolution::Dns))
            .collect();
        let all = allocate(&many);
        let distinct: std::collections::BTreeSet<_> = all.values().collect();
        assert_eq!(distinct.len(), 3000);
        // A host more (first in allocation order) moves at most the few whose slots it
        // takes, directly or down a probe sequence.
        let mut more = many.clone();
        more.push(service("ns", "a-new.example", &[], Resolution::Dns));
        let after = allocate(&more);
        let moved = all.iter().filter(|(k, v)| after[*k] != **v).count();
        assert!(moved <= 3, "{moved} addresses moved");
        // The same host in another namespace is another service.
        let two = allocate(&[
            service("x", "db.example", &[], Resolution::Dns),
            service("y", "db.example", &[], Resolution::Dns),
        ]);
        assert_eq!(two.len(), 2);
        assert_ne!(
            two[&("x".into(), "db.example".into())],
            two[&("y".into(), "db.example".into())]
        );
    }
}

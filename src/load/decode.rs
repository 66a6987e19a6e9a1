//! Decoding of received resources, shared by every simulated proxy: each distinct resource
//! body is decoded once (proxies of one class receive identical bytes), and what the load
//! generator needs from it is kept — the name, the EDS name of a cluster, the addresses of an
//! endpoint assignment, the route configurations a listener fetches — along with which of the
//! registered markers its bytes contain.
//!
//! A body that does not decode as its type is an error for the caller to count (a real Envoy
//! would NACK it). Bodies held by no proxy any more are dropped by `prune`.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
use envoy_types::pb::envoy::config::listener::v3 as xds_listener;
use envoy_types::pb::envoy::config::route::v3 as xds_route;
use envoy_types::pb::envoy::service::discovery::v3 as xds_discovery;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use crate::envoy::ResourceType;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("resource of type {found:?} in a {expected} response")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("{0} resource does not decode: {1}")]
    Malformed(&'static str, String),
    #[error("{0} resource has no name")]
    Unnamed(&'static str),
    #[error("{0} resources are not requested by the load generator")]
    Unrequested(&'static str),
}

/// What the load generator uses of a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Info {
    /// The EDS service name when the cluster's endpoints come over EDS.
    Cluster {
        eds: Option<String>,
    },
    /// Every endpoint address (`ip`, without port).
    Endpoints {
        addresses: Vec<String>,
    },
    /// Route configurations the listener's HTTP connection managers fetch over RDS.
    Listener {
        routes: Vec<String>,
    },
    Route,
}

/// One decoded resource body.
#[derive(Debug)]
pub struct Body {
    pub name: Arc<str>,
    pub info: Info,
    /// Ids of the registered markers found in the encoded bytes.
    pub markers: Vec<u32>,
    bytes: Vec<u8>,
}

impl Body {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

type Key = (ResourceType, u64);

/// The shared decoder.
pub struct Decoder {
    bodies: Mutex<HashMap<Key, Vec<Arc<Body>>>>,
    markers: RwLock<Vec<(u32, memchr::memmem::Finder<'static>)>>,
    hasher: foldhash::fast::FixedState,
    /// Bodies decoded (distinct) and reused (found already decoded).
    pub decoded: AtomicU64,
    pub reused: AtomicU64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            bodies: Mutex::new(HashMap::new()),
            markers: RwLock::new(Vec::new()),
            hasher: foldhash::fast::FixedState::with_seed(0x6c6f6164),
            decoded: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }
}

const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

impl Decoder {
    /// Registers a marker: bodies first seen from now on record whether they contain it.
    /// Markers must be new strings (not in anything received before).
    pub fn add_marker(&self, id: u32, text: &str) {
        let finder = memchr::memmem::Finder::new(text.as_bytes()).into_owned();
        self.markers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, finder));
    }

    pub fn remove_marker(&self, id: u32) {
        self.markers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(m, _)| *m != id);
    }

    /// The shared decoded form of a resource of type `t`.
    pub fn intern(&self, t: ResourceType, any: Any) -> Result<Arc<Body>, DecodeError> {
        let any = if any.type_url == RESOURCE_WRAPPER {
            let wrapped = xds_discovery::Resource::decode(any.value.as_slice())
                .map_err(|e| DecodeError::Malformed("Resource", e.to_string()))?;
            wrapped
                .resource
                .ok_or(DecodeError::Malformed("Resource", "empty wrapper".into()))?
        } else {
            any
        };
        if any.type_url != t.type_url() {
            return Err(DecodeError::WrongType {
                expected: t.as_str(),
                found: any.type_url,
            });
        }
        let key = (t, self.hasher.hash_one(any.value.as_slice()));
        if let Some(found) = self.find(&key, &any.value) {
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(found);
        }
        let (name, info) = decode(t, &any.value)?;
        let markers = {
            let markers = self.markers.read().unwrap_or_else(|p| p.into_inner());
            markers
                .iter()
                .filter(|(_, f)| f.find(&any.value).is_some())
                .map(|(id, _)| *id)
                .collect()
        };
        let body = Arc::new(Body {
            name: name.into(),
            info,
            markers,
            bytes: any.value,
        });
        let mut bodies = lock(&self.bodies);
        let list = bodies.entry(key).or_default();
        // Another proxy may have decoded the same bytes meanwhile.
        if let Some(found) = list.iter().find(|b| b.bytes == body.bytes) {
            self.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(found.clone());
        }
        list.push(body.clone());
        self.decoded.fetch_add(1, Ordering::Relaxed);
        Ok(body)
    }

    fn find(&self, key: &Key, bytes: &[u8]) -> Option<Arc<Body>> {
        lock(&self.bodies)
            .get(key)?
            .iter()
            .find(|b| b.bytes == bytes)
            .cloned()
    }

    /// Drops bodies no proxy holds; returns how many remain.
    pub fn prune(&self) -> usize {
        let mut bodies = lock(&self.bodies);
        bodies.retain(|_, list| {
            list.retain(|b| Arc::strong_count(b) > 1);
            !list.is_empty()
        });
        bodies.values().map(Vec::len).sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn malformed<T: Name>(e: prost::DecodeError) -> DecodeError {
    DecodeError::Malformed(T::NAME, e.to_string())
}

fn named(label: &'static str, name: String) -> Result<String, DecodeError> {
    if name.is_empty() {
        Err(DecodeError::Unnamed(label))
    } else {
        Ok(name)
    }
}

fn decode(t: ResourceType, bytes: &[u8]) -> Result<(String, Info), DecodeError> {
    match t {
        ResourceType::Cds => {
            let c =
                xds_cluster::Cluster::decode(bytes).map_err(malformed::<xds_cluster::Cluster>)?;
            let eds = matches!(
                c.cluster_discovery_type,
                Some(xds_cluster::cluster::ClusterDiscoveryType::Type(t))
                    if t == xds_cluster::cluster::DiscoveryType::Eds as i32
            );
            let eds = eds.then(|| {
                c.eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| c.name.clone())
            });
            Ok((named("cluster", c.name)?, Info::Cluster { eds }))
        }
        ResourceType::Eds => {
            let cla = xds_endpoint::ClusterLoadAssignment::decode(bytes)
                .map_err(malformed::<xds_endpoint::ClusterLoadAssignment>)?;
            let mut addresses = Vec::new();
            for locality in &cla.endpoints {
                for lb in &locality.lb_endpoints {
                    if let Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(e)) =
                        &lb.host_identifier
                        && let Some(address) = &e.address
                        && let Some(
                            envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s),
                        ) = &address.address
                    {
                        addresses.push(s.address.clone());
                    }
                }
            }
            addresses.sort();
            Ok((
                named("endpoint", cla.cluster_name)?,
                Info::Endpoints { addresses },
            ))
        }
        ResourceType::Lds => {
            let l = xds_listener::Listener::decode(bytes)
                .map_err(malformed::<xds_listener::Listener>)?;
            let mut routes = crate::envoy::rds_names(&l);
            routes.sort();
            routes.dedup();
            Ok((named("listener", l.name)?, Info::Listener { routes }))
        }
        ResourceType::Rds => {
            let r = xds_route::RouteConfiguration::decode(bytes)
                .map_err(malformed::<xds_route::RouteConfiguration>)?;
            Ok((named("route", r.name)?, Info::Route))
        }
        ResourceType::Sds | ResourceType::Nds => Err(DecodeError::Unrequested(t.as_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envoy::pack;

    #[test]
    fn identical_bodies_are_decoded_once_and_markers_found() {
        let d = Decoder::default();
        d.add_marker(7, "/bowline-load-edit-000001");
        let route = xds_route::RouteConfiguration {
            name: "80".into(),
            virtual_hosts: vec![xds_route::VirtualHost {
                name: "a".into(),
                domains: vec!["/bowline-load-edit-000001".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let a = d.intern(ResourceType::Rds, pack(&route)).unwrap();
        let b = d.intern(ResourceType::Rds, pack(&route)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.markers, vec![7]);
        assert_eq!(&*a.name, "80");
        assert_eq!(d.decoded.load(Ordering::Relaxed), 1);
        drop((a, b));
        assert_eq!(d.prune(), 0);
    }

    #[test]
    fn wrong_types_and_garbage_are_errors() {
        let d = Decoder::default();
        let route = pack(&xds_route::RouteConfiguration {
            name: "80".into(),
            ..Default::default()
        });
        assert!(matches!(
            d.intern(ResourceType::Cds, route),
            Err(DecodeError::WrongType { .. })
        ));
        let garbage = Any {
            type_url: ResourceType::Cds.type_url().into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(matches!(
            d.intern(ResourceType::Cds, garbage),
            Err(DecodeError::Malformed(..))
        ));
    }

    #[test]
    fn endpoint_addresses_and_eds_names_are_extracted() {
        use envoy_types::pb::envoy::config::core::v3 as core;
        let d = Decoder::default();
        let cla = xds_endpoint::ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![xds_endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![xds_endpoint::LbEndpoint {
                    host_identifier: Some(xds_endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        xds_endpoint::Endpoint {
                            address: Some(core::Address {
                                address: Some(core::address::Address::SocketAddress(
                                    core::SocketAddress {
                                        address: "10.0.0.1".into(),
                                        ..Default::default()
                                    },
                                )),
                            }),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = d.intern(ResourceType::Eds, pack(&cla)).unwrap();
        assert_eq!(
            body.info,
            Info::Endpoints {
                addresses: vec!["10.0.0.1".into()]
            }
        );
        let cluster = xds_cluster::Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(xds_cluster::cluster::ClusterDiscoveryType::Type(
                xds_cluster::cluster::DiscoveryType::Eds as i32,
            )),
            ..Default::default()
        };
        let body = d.intern(ResourceType::Cds, pack(&cluster)).unwrap();
        assert_eq!(
            body.info,
            Info::Cluster {
                eds: Some("c".into())
            }
        );
    }
}

//! The xDS resource types bowline serves: their type URLs, push order, and sets of them.

use serde::Serialize;

/// The resource types bowline generates, in the order they are pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    Cds,
    Eds,
    Lds,
    Rds,
    /// Secrets (SDS over ADS): made per stream by the CA, not by translation.
    Sds,
    /// Istio's name table, for a pilot-agent whose DNS proxy is on: made per stream.
    Nds,
}

impl ResourceType {
    /// Push order: clusters before endpoints, listeners before routes, secrets after them (as
    /// istiod), then the name table.
    pub const ALL: [ResourceType; 6] = [
        ResourceType::Cds,
        ResourceType::Eds,
        ResourceType::Lds,
        ResourceType::Rds,
        ResourceType::Sds,
        ResourceType::Nds,
    ];

    /// The types translation generates from the model (cached per proxy class).
    pub const CONFIG: [ResourceType; 4] = [
        ResourceType::Cds,
        ResourceType::Eds,
        ResourceType::Lds,
        ResourceType::Rds,
    ];

    pub const fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cds => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::Eds => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Lds => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::Rds => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceType::Sds => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
            ResourceType::Nds => "type.googleapis.com/istio.networking.nds.v1.NameTable",
        }
    }

    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Cds => "cds",
            ResourceType::Eds => "eds",
            ResourceType::Lds => "lds",
            ResourceType::Rds => "rds",
            ResourceType::Sds => "sds",
            ResourceType::Nds => "nds",
        }
    }

    /// CDS, LDS and NDS are subscribed to as a whole (wildcard); EDS, RDS and SDS by name.
    pub fn is_wildcard_type(self) -> bool {
        matches!(
            self,
            ResourceType::Cds | ResourceType::Lds | ResourceType::Nds
        )
    }

    /// The type's position in [`ResourceType::ALL`] (and in per-type arrays of the four
    /// config types).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A set of resource types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TypeSet(u8);

impl TypeSet {
    pub const ALL: TypeSet = TypeSet(0b1111);
    pub const NONE: TypeSet = TypeSet(0);

    pub fn only(t: ResourceType) -> TypeSet {
        TypeSet(1 << t.index())
    }
    pub fn contains(self, t: ResourceType) -> bool {
        self.0 & (1 << t.index()) != 0
    }
    pub fn union(self, other: TypeSet) -> TypeSet {
        TypeSet(self.0 | other.0)
    }
    pub fn intersection(self, other: TypeSet) -> TypeSet {
        TypeSet(self.0 & other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = ResourceType> {
        ResourceType::ALL
            .into_iter()
            .filter(move |t| self.contains(*t))
    }
}

impl Serialize for TypeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

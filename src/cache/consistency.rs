//! The consistency check a class's set passes before it is served: references between
//! types resolve (every EDS cluster has its endpoint assignment and every assignment a cluster;
//! every route configuration a listener names exists, and every one is named).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{CacheError, TypedResources};
use crate::envoy::ResourceType;

/// Checks references between types: every EDS cluster has an endpoint assignment and every
/// assignment a cluster; every route configuration a listener names exists and every one is
/// named. A pair of types is checked again only when it can have changed since `checked` (a
/// set that passed): clusters or listeners changed, or the names of the assignments or route
/// configurations did.
pub(super) fn check(
    types: &[Arc<TypedResources>; 4],
    checked: Option<&[Arc<TypedResources>; 4]>,
) -> Result<(), CacheError> {
    let same = |t: ResourceType| {
        checked.is_some_and(|c| {
            let (a, b) = (&c[t.index()], &types[t.index()]);
            Arc::ptr_eq(a, b) || a.version == b.version
        })
    };
    let same_names = |t: ResourceType| {
        checked.is_some_and(|c| {
            let (a, b) = (&c[t.index()], &types[t.index()]);
            Arc::ptr_eq(a, b) || a.names_version == b.names_version
        })
    };
    let linked = |t: ResourceType| -> BTreeSet<&str> {
        types[t.index()]
            .items
            .values()
            .flat_map(|v| v.links(t))
            .map(String::as_str)
            .collect()
    };
    if !(same(ResourceType::Cds) && same_names(ResourceType::Eds)) {
        let eds_clusters = linked(ResourceType::Cds);
        let assignments = &types[ResourceType::Eds.index()].items;
        if let Some(name) = assignments
            .keys()
            .find(|n| !eds_clusters.contains(n.as_str()))
        {
            return Err(CacheError::DanglingEndpoints(name.clone()));
        }
        if let Some(name) = eds_clusters.iter().find(|n| !assignments.contains_key(**n)) {
            return Err(CacheError::MissingEndpoints(name.to_string()));
        }
    }
    if !(same(ResourceType::Lds) && same_names(ResourceType::Rds)) {
        let routes = &types[ResourceType::Rds.index()].items;
        for l in types[ResourceType::Lds.index()].items.values() {
            if let Some(route) = l
                .links(ResourceType::Lds)
                .iter()
                .find(|r| !routes.contains_key(*r))
            {
                return Err(CacheError::MissingRoute(l.name.clone(), route.clone()));
            }
        }
        let referenced = linked(ResourceType::Lds);
        if let Some(name) = routes.keys().find(|n| !referenced.contains(n.as_str())) {
            return Err(CacheError::UnreferencedRoute(name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Versioned;
    use crate::envoy;
    use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;
    use envoy_types::pb::envoy::config::endpoint::v3 as xds_endpoint;
    use envoy_types::pb::google::protobuf::Any;

    fn typed(items: Vec<(&str, Any)>) -> Arc<TypedResources> {
        Arc::new(TypedResources::new(
            items
                .into_iter()
                .map(|(n, body)| {
                    (
                        n.to_string(),
                        Arc::new(Versioned::new(n.to_string(), "v".into(), body)),
                    )
                })
                .collect(),
        ))
    }

    #[test]
    fn consistency_check_catches_dangling_references() {
        let cla = envoy::pack(&xds_endpoint::ClusterLoadAssignment {
            cluster_name: "c".into(),
            ..Default::default()
        });
        let empty = typed(vec![]);
        let dangling = [
            empty.clone(),
            typed(vec![("c", cla)]),
            empty.clone(),
            empty.clone(),
        ];
        assert!(
            matches!(check(&dangling, None), Err(CacheError::DanglingEndpoints(n)) if n == "c")
        );
        let eds_cluster = envoy::pack(&xds_cluster::Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(xds_cluster::cluster::ClusterDiscoveryType::Type(
                xds_cluster::cluster::DiscoveryType::Eds as i32,
            )),
            ..Default::default()
        });
        let missing = [
            typed(vec![("c", eds_cluster)]),
            empty.clone(),
            empty.clone(),
            empty.clone(),
        ];
        assert!(matches!(check(&missing, None), Err(CacheError::MissingEndpoints(n)) if n == "c"));
        let route = envoy::pack(
            &envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
                name: "80".into(),
                ..Default::default()
            },
        );
        let unreferenced = [
            empty.clone(),
            empty.clone(),
            empty.clone(),
            typed(vec![("80", route)]),
        ];
        assert!(
            matches!(check(&unreferenced, None), Err(CacheError::UnreferencedRoute(n)) if n == "80")
        );
    }

    #[test]
    fn consistency_is_checked_again_when_references_can_have_changed() {
        let cla = |version: u32| {
            envoy::pack(&xds_endpoint::ClusterLoadAssignment {
                cluster_name: format!("c{version}"),
                ..Default::default()
            })
        };
        let cluster = envoy::pack(&xds_cluster::Cluster {
            name: "c".into(),
            cluster_discovery_type: Some(xds_cluster::cluster::ClusterDiscoveryType::Type(
                xds_cluster::cluster::DiscoveryType::Eds as i32,
            )),
            ..Default::default()
        });
        let empty = typed(vec![]);
        let clusters = typed(vec![("c", cluster)]);
        let good = [
            clusters.clone(),
            typed(vec![("c", cla(1))]),
            empty.clone(),
            empty.clone(),
        ];
        check(&good, None).unwrap();
        // New endpoints under the same names, clusters unchanged: nothing to check again.
        let moved = [
            clusters.clone(),
            typed(vec![("c", cla(2))]),
            empty.clone(),
            empty.clone(),
        ];
        check(&moved, Some(&good)).unwrap();
        // An assignment without a cluster is caught although the clusters did not change.
        let dangling = [
            clusters.clone(),
            typed(vec![("c", cla(2)), ("d", cla(3))]),
            empty.clone(),
            empty.clone(),
        ];
        assert!(
            matches!(check(&dangling, Some(&good)), Err(CacheError::DanglingEndpoints(n)) if n == "d")
        );
        // A cluster without an assignment is caught although the assignments did not change.
        let more_clusters = typed(vec![
            ("c", clusters.items["c"].body.clone()),
            (
                "e",
                envoy::pack(&xds_cluster::Cluster {
                    name: "e".into(),
                    cluster_discovery_type: Some(xds_cluster::cluster::ClusterDiscoveryType::Type(
                        xds_cluster::cluster::DiscoveryType::Eds as i32,
                    )),
                    ..Default::default()
                }),
            ),
        ]);
        let missing = [more_clusters, good[1].clone(), empty.clone(), empty.clone()];
        assert!(
            matches!(check(&missing, Some(&good)), Err(CacheError::MissingEndpoints(n)) if n == "e")
        );
    }
}

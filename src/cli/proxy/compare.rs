//! `bowline proxy-status <proxy>`: what bowline sent a proxy against what its Envoy holds, as
//! istioctl compares them: the dynamic clusters, listeners and route configurations of each
//! side, versions and update times left out, sorted by name (virtual hosts too), rendered as
//! JSON the same way, and a unified diff (`--- Istiod Clusters` / `+++ Envoy Clusters`, seven
//! lines of context) when they differ.

use anyhow::Context;
use envoy_types::pb::envoy::admin::v3 as admin;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::dump::{Dump, pretty_json, rfc1123, unpack};
use crate::envoy;

const CONTEXT: usize = 7;

/// Sorts `items` by the name `name` reads from each (items that do not decode last).
fn sort_by_name<T>(items: &mut [T], name: impl Fn(&T) -> Option<String>) {
    items.sort_by_cached_key(|i| name(i).map_or((true, String::new()), |n| (false, n)));
}

fn decoded_name<M: Message + Default>(
    any: Option<&Any>,
    name: impl Fn(&M) -> &str,
) -> Option<String> {
    let m = M::decode(any?.value.as_slice()).ok()?;
    Some(name(&m).to_string())
}

/// The compared form of the dynamic clusters.
fn clusters(dump: &Dump) -> anyhow::Result<admin::ClustersConfigDump> {
    let mut active = dump.clusters_section()?.dynamic_active_clusters;
    for c in &mut active {
        c.version_info.clear();
        c.last_updated = None;
    }
    sort_by_name(&mut active, |c| {
        decoded_name::<Cluster>(c.cluster.as_ref(), |c| &c.name)
    });
    Ok(admin::ClustersConfigDump {
        dynamic_active_clusters: active,
        ..Default::default()
    })
}

/// The compared form of the dynamic listeners: those with an active state, draining states
/// and the listeners' own names (the dump's, not the resource's) left out.
fn listeners(dump: &Dump) -> anyhow::Result<admin::ListenersConfigDump> {
    let mut dynamic: Vec<_> = dump
        .listeners_section()?
        .dynamic_listeners
        .into_iter()
        .filter(|l| l.active_state.is_some())
        .collect();
    for l in &mut dynamic {
        l.draining_state = None;
        l.name.clear();
        if let Some(a) = &mut l.active_state {
            a.version_info.clear();
            a.last_updated = None;
        }
    }
    sort_by_name(&mut dynamic, |l| {
        decoded_name::<Listener>(l.active_state.as_ref()?.listener.as_ref(), |l| &l.name)
    });
    Ok(admin::ListenersConfigDump {
        dynamic_listeners: dynamic,
        ..Default::default()
    })
}

/// The compared form of the dynamic route configurations, virtual hosts sorted by name.
fn routes(dump: &Dump) -> anyhow::Result<admin::RoutesConfigDump> {
    let mut dynamic = dump.routes_section()?.dynamic_route_configs;
    for r in &mut dynamic {
        r.version_info.clear();
        r.last_updated = None;
        if let Some(any) = &mut r.route_config {
            let mut config: RouteConfiguration = unpack(any, "route configuration")?;
            config.virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
            *any = envoy::pack(&config);
        }
    }
    sort_by_name(&mut dynamic, |r| {
        decoded_name::<RouteConfiguration>(r.route_config.as_ref(), |r| &r.name)
    });
    Ok(admin::RoutesConfigDump {
        dynamic_route_configs: dynamic,
        ..Default::default()
    })
}

/// The newest update time of Envoy's dynamic route configurations.
fn routes_loaded_at(dump: &Dump) -> anyhow::Result<Option<i64>> {
    Ok(dump
        .routes_section()?
        .dynamic_route_configs
        .iter()
        .filter_map(|r| r.last_updated.as_ref().map(|t| t.seconds))
        .filter(|s| *s > 0)
        .max())
}

/// A section's text: its JSON, or the error reading it (so that a missing section shows as a
/// difference).
fn text<T: Message + prost::Name>(section: anyhow::Result<T>) -> anyhow::Result<String> {
    match section {
        Ok(s) => {
            let json =
                envoy::any_to_json(&envoy::pack(&s)).context("rendering a config dump section")?;
            Ok(pretty_json(&json))
        }
        Err(e) => Ok(e.to_string()),
    }
}

/// Compares bowline's dump of a proxy (`istiod`) with its Envoy's (`envoy`); the report.
pub fn compare(istiod: &Dump, envoy: &Dump) -> anyhow::Result<String> {
    let mut out = String::new();
    let sections = [
        ("Clusters", text(clusters(istiod))?, text(clusters(envoy))?),
        (
            "Listeners",
            text(listeners(istiod))?,
            text(listeners(envoy))?,
        ),
        ("Routes", text(routes(istiod))?, text(routes(envoy))?),
    ];
    for (what, ours, theirs) in sections {
        let diff = unified_diff(
            &format!("Istiod {what}"),
            &format!("Envoy {what}"),
            &ours,
            &theirs,
            CONTEXT,
        );
        let loaded = if what == "Routes" {
            routes_loaded_at(envoy)
                .ok()
                .flatten()
                .map(|t| format!(" (RDS last loaded at {})", rfc1123(t)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        if diff.is_empty() {
            out.push_str(&format!("{what} Match{loaded}\n"));
        } else {
            out.push_str(&format!("{what} Don't Match{loaded}\n{diff}\n"));
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    Delete,
    Insert,
}

/// Line edits turning `a` into `b` (a shortest edit script, Myers' algorithm), as
/// (op, index in a, index in b).
fn edits(a: &[&str], b: &[&str]) -> Vec<(Op, usize, usize)> {
    // Common prefix and suffix are equal lines; the search runs on the middle only.
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out: Vec<(Op, usize, usize)> = (0..prefix).map(|i| (Op::Equal, i, i)).collect();
    out.extend(
        middle_edits(ma, mb)
            .into_iter()
            .map(|(op, i, j)| (op, i + prefix, j + prefix)),
    );
    let (sa, sb) = (a.len() - suffix, b.len() - suffix);
    out.extend((0..suffix).map(|k| (Op::Equal, sa + k, sb + k)));
    out
}

/// Edit distance beyond which the middle is reported as replaced whole (bounds the trace's
/// memory on unrelated inputs).
const MAX_EDITS: usize = 20_000;

fn middle_edits(a: &[&str], b: &[&str]) -> Vec<(Op, usize, usize)> {
    let (n, m) = (a.len() as isize, b.len() as isize);
    let replace_all = || {
        let mut v: Vec<_> = (0..a.len()).map(|i| (Op::Delete, i, 0)).collect();
        v.extend((0..b.len()).map(|j| (Op::Insert, a.len(), j)));
        v
    };
    if n == 0 || m == 0 {
        return replace_all();
    }
    let max = (n + m) as usize;
    let limit = max.min(MAX_EDITS);
    let offset = max as isize;
    let mut v = vec![0isize; 2 * max + 2];
    let mut trace: Vec<Vec<isize>> = Vec::new();
    let mut found = None;
    'search: for d in 0..=limit as isize {
        trace.push(v.clone());
        let mut k = -d;
        while k <= d {
            let idx = (k + offset) as usize;
            let mut x = if k == -d || (k != d && v[idx - 1] < v[idx + 1]) {
                v[idx + 1]
            } else {
                v[idx - 1] + 1
            };
            let mut y = x - k;
            while x < n && y < m && a[x as usize] == b[y as usize] {
                x += 1;
                y += 1;
            }
            v[idx] = x;
            if x >= n && y >= m {
                found = Some(d);
                break 'search;
            }
            k += 2;
        }
    }
    let Some(d_end) = found else {
        return replace_all();
    };
    // Walk back through the trace.
    let mut ops = Vec::new();
    let (mut x, mut y) = (n, m);
    for d in (1..=d_end).rev() {
        let v = &trace[d as usize];
        let k = x - y;
        let idx = (k + offset) as usize;
        let prev_k = if k == -d || (k != d && v[idx - 1] < v[idx + 1]) {
            k + 1
        } else {
            k - 1
        };
        let prev_x = v[(prev_k + offset) as usize];
        let prev_y = prev_x - prev_k;
        while x > prev_x && y > prev_y {
            x -= 1;
            y -= 1;
            ops.push((Op::Equal, x as usize, y as usize));
        }
        if x == prev_x {
            y -= 1;
            ops.push((Op::Insert, x as usize, y as usize));
        } else {
            x -= 1;
            ops.push((Op::Delete, x as usize, y as usize));
        }
    }
    while x > 0 && y > 0 {
        x -= 1;
        y -= 1;
        ops.push((Op::Equal, x as usize, y as usize));
    }
    ops.reverse();
    ops
}

/// A hunk range as unified diffs write it: `start,length` (1-based; `start` alone for one
/// line; the line before for none).
fn range(start: usize, len: usize) -> String {
    match len {
        1 => format!("{}", start + 1),
        0 => format!("{start},0"),
        _ => format!("{},{len}", start + 1),
    }
}

/// A unified diff of two texts by lines; empty when they are equal.
pub fn unified_diff(from: &str, to: &str, a: &str, b: &str, context: usize) -> String {
    let a_lines: Vec<&str> = a.lines().collect();
    let b_lines: Vec<&str> = b.lines().collect();
    let ops = edits(&a_lines, &b_lines);
    let changes: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].0 != Op::Equal).collect();
    if changes.is_empty() {
        return String::new();
    }
    // Hunks: changes with `context` equal lines around, merged when their contexts touch.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &c in &changes {
        let start = c.saturating_sub(context);
        let end = (c + context + 1).min(ops.len());
        match hunks.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    let mut out = format!("--- {from}\n+++ {to}\n");
    for (start, end) in hunks {
        let slice = &ops[start..end];
        let a_len = slice.iter().filter(|o| o.0 != Op::Insert).count();
        let b_len = slice.iter().filter(|o| o.0 != Op::Delete).count();
        let (a_start, b_start) = (slice[0].1, slice[0].2);
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(a_start, a_len),
            range(b_start, b_len)
        ));
        for &(op, i, j) in slice {
            match op {
                Op::Equal => out.push_str(&format!(" {}\n", a_lines[i])),
                Op::Delete => out.push_str(&format!("-{}\n", a_lines[i])),
                Op::Insert => out.push_str(&format!("+{}\n", b_lines[j])),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified_diff("a", "b", "x\ny\n", "x\ny\n", 7), "");
    }

    #[test]
    fn unified_hunks() {
        let a: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let b: String = (1..=20)
            .filter(|&i| i != 18)
            .map(|i| {
                if i == 3 {
                    "three\n".to_string()
                } else {
                    format!("{i}\n")
                }
            })
            .collect();
        let diff = unified_diff("Istiod Clusters", "Envoy Clusters", &a, &b, 2);
        assert_eq!(
            diff,
            "--- Istiod Clusters\n+++ Envoy Clusters\n\
             @@ -1,5 +1,5 @@\n 1\n 2\n-3\n+three\n 4\n 5\n\
             @@ -16,5 +16,4 @@\n 16\n 17\n-18\n 19\n 20\n"
        );
        // Close changes share one hunk; an empty side is `0,0`.
        let diff = unified_diff("a", "b", "", "x\n", 7);
        assert_eq!(diff, "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n");
    }

    #[test]
    fn edits_are_minimal_and_replay() {
        let a = ["a", "b", "c", "a", "b", "b", "a"];
        let b = ["c", "b", "a", "b", "a", "c"];
        let ops = edits(&a, &b);
        let changed = ops.iter().filter(|o| o.0 != Op::Equal).count();
        assert_eq!(changed, 5, "Myers' example: D = 5");
        let rebuilt: Vec<&str> = ops
            .iter()
            .filter(|o| o.0 != Op::Delete)
            .map(|&(op, i, j)| if op == Op::Equal { a[i] } else { b[j] })
            .collect();
        assert_eq!(rebuilt, b);
    }

    fn dump_with_cluster(name: &str, version: &str) -> Dump {
        let cluster = Cluster {
            name: name.into(),
            ..Default::default()
        };
        let clusters = admin::ClustersConfigDump {
            version_info: version.into(),
            dynamic_active_clusters: vec![admin::clusters_config_dump::DynamicCluster {
                version_info: version.into(),
                cluster: Some(envoy::pack(&cluster)),
                ..Default::default()
            }],
            ..Default::default()
        };
        Dump {
            configs: vec![
                envoy::pack(&clusters),
                envoy::pack(&admin::ListenersConfigDump::default()),
                envoy::pack(&admin::RoutesConfigDump::default()),
            ],
        }
    }

    #[test]
    fn versions_do_not_count_and_names_do() {
        let ours = dump_with_cluster("outbound|80||web", "1");
        let report = compare(&ours, &dump_with_cluster("outbound|80||web", "2")).unwrap();
        assert_eq!(report, "Clusters Match\nListeners Match\nRoutes Match\n");
        let report = compare(&ours, &dump_with_cluster("outbound|80||api", "1")).unwrap();
        assert!(
            report.starts_with("Clusters Don't Match\n--- Istiod Clusters\n+++ Envoy Clusters\n"),
            "{report}"
        );
        assert!(
            report.contains("-                \"name\": \"outbound|80||web\""),
            "{report}"
        );
        assert!(
            report.ends_with("Listeners Match\nRoutes Match\n"),
            "{report}"
        );
    }
}

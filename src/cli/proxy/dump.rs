//! Envoy's config dump (`/config_dump` JSON) decoded into Envoy's types, and the sections the
//! views read. The JSON is read through Envoy's descriptors (unknown fields of a newer Envoy are
//! skipped); an embedded type the descriptors do not know is an error naming it.

use anyhow::{Context, anyhow};
use envoy_types::pb::envoy::admin::v3 as admin;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage};

use crate::envoy;

/// A decoded config dump.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub configs: Vec<Any>,
}

/// The message name of a type URL (`type.googleapis.com/<name>`).
fn message_name(type_url: &str) -> &str {
    type_url.rsplit_once('/').map_or(type_url, |(_, n)| n)
}

/// Decodes an `Any` as `T`, naming `what` in the error.
pub fn unpack<T: Message + Default>(any: &Any, what: &str) -> anyhow::Result<T> {
    T::decode(any.value.as_slice())
        .with_context(|| format!("{what} ({}) does not decode", any.type_url))
}

impl Dump {
    /// Reads the JSON Envoy's admin `/config_dump` answers (or a file saved from it).
    pub fn from_json(bytes: &[u8]) -> anyhow::Result<Dump> {
        let descriptor = envoy::pool()
            .get_message_by_name("envoy.admin.v3.ConfigDump")
            .ok_or_else(|| anyhow!("Envoy's descriptors lack envoy.admin.v3.ConfigDump"))?;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let options = DeserializeOptions::new().deny_unknown_fields(false);
        let message = DynamicMessage::deserialize_with_options(descriptor, &mut de, &options)
            .map_err(|e| anyhow!("not an Envoy config dump: {e}"))?;
        de.end()
            .map_err(|e| anyhow!("not an Envoy config dump: {e}"))?;
        let dump: admin::ConfigDump = message
            .transcode_to()
            .map_err(|e| anyhow!("config dump: {e}"))?;
        Ok(Dump {
            configs: dump.configs,
        })
    }

    /// The section of type `T` (e.g. `ClustersConfigDump`), if the dump has one.
    pub fn section<T: Message + Default + prost::Name>(&self) -> anyhow::Result<Option<T>> {
        let name = T::full_name();
        self.configs
            .iter()
            .find(|c| message_name(&c.type_url) == name)
            .map(|c| unpack(c, &name))
            .transpose()
    }

    fn required<T: Message + Default + prost::Name>(&self, what: &str) -> anyhow::Result<T> {
        self.section::<T>()?
            .ok_or_else(|| anyhow!("the config dump has no {what} ({})", T::full_name()))
    }

    pub fn bootstrap(&self) -> anyhow::Result<admin::BootstrapConfigDump> {
        self.required("bootstrap")
    }

    pub fn clusters_section(&self) -> anyhow::Result<admin::ClustersConfigDump> {
        self.required("clusters")
    }

    pub fn listeners_section(&self) -> anyhow::Result<admin::ListenersConfigDump> {
        self.required("listeners")
    }

    pub fn routes_section(&self) -> anyhow::Result<admin::RoutesConfigDump> {
        self.required("routes")
    }

    pub fn secrets_section(&self) -> anyhow::Result<admin::SecretsConfigDump> {
        self.required("secrets")
    }

    /// Active dynamic clusters, then static ones.
    pub fn clusters(&self) -> anyhow::Result<Vec<Cluster>> {
        let s = self.clusters_section()?;
        let dynamic = s
            .dynamic_active_clusters
            .iter()
            .filter_map(|c| c.cluster.as_ref());
        let fixed = s.static_clusters.iter().filter_map(|c| c.cluster.as_ref());
        dynamic.chain(fixed).map(|a| unpack(a, "cluster")).collect()
    }

    /// Active dynamic listeners, then static ones.
    pub fn listeners(&self) -> anyhow::Result<Vec<Listener>> {
        let s = self.listeners_section()?;
        let dynamic = s
            .dynamic_listeners
            .iter()
            .filter_map(|l| l.active_state.as_ref()?.listener.as_ref());
        let fixed = s
            .static_listeners
            .iter()
            .filter_map(|l| l.listener.as_ref());
        dynamic
            .chain(fixed)
            .map(|a| unpack(a, "listener"))
            .collect()
    }

    /// Dynamic route configurations, then static ones.
    pub fn routes(&self) -> anyhow::Result<Vec<RouteConfiguration>> {
        let s = self.routes_section()?;
        let dynamic = s
            .dynamic_route_configs
            .iter()
            .filter_map(|r| r.route_config.as_ref());
        let fixed = s
            .static_route_configs
            .iter()
            .filter_map(|r| r.route_config.as_ref());
        dynamic
            .chain(fixed)
            .map(|a| unpack(a, "route configuration"))
            .collect()
    }

    /// Dynamic endpoint assignments, then static ones. Envoy's dump has them only when asked
    /// with `include_eds`.
    pub fn endpoints(&self) -> anyhow::Result<Vec<ClusterLoadAssignment>> {
        let s: admin::EndpointsConfigDump = self
            .section()?
            .ok_or_else(|| anyhow!("the config dump has no endpoints: Envoy includes them only in /config_dump?include_eds"))?;
        let dynamic = s
            .dynamic_endpoint_configs
            .iter()
            .filter_map(|e| e.endpoint_config.as_ref());
        let fixed = s
            .static_endpoint_configs
            .iter()
            .filter_map(|e| e.endpoint_config.as_ref());
        dynamic
            .chain(fixed)
            .map(|a| unpack(a, "endpoint assignment"))
            .collect()
    }
}

/// An Envoy message as pretty JSON in Envoy's own form (proto field names, `Any`s expanded),
/// indented by four spaces as istioctl prints.
pub fn pretty_json(value: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing a Value into memory cannot fail.
    value.serialize(&mut ser).expect("JSON value serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// A message as JSON, Envoy's form, without the top-level `@type`.
pub fn message_json<T: Message + prost::Name>(message: &T) -> anyhow::Result<serde_json::Value> {
    let mut json = envoy::any_to_json(&envoy::pack(message))?;
    if let Some(o) = json.as_object_mut() {
        o.remove("@type");
    }
    Ok(json)
}

/// The output formats of the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The table.
    Short,
    Json,
    Yaml,
}

/// A JSON value in the chosen machine-readable form.
pub fn print_value(value: &serde_json::Value, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Yaml => serde_saphyr::to_string(value).context("rendering YAML")?,
        _ => format!("{}\n", pretty_json(value)),
    })
}

fn utc(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC (`2026-12-08T04:37:24Z`), as Go formats a certificate's validity.
pub fn rfc3339(unix: i64) -> String {
    crate::admin::istiod::rfc3339(utc(unix).into())
}

/// RFC 1123 in UTC (`Tue, 08 Dec 2026 04:37:24 UTC`).
pub fn rfc1123(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = utc(unix);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} UTC",
        DAYS[usize::from(t.weekday().number_days_from_sunday())],
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_531_844), "2026-12-06T04:37:24Z");
        assert_eq!(rfc1123(1_796_531_844), "Sun, 06 Dec 2026 04:37:24 UTC");
        assert_eq!(rfc1123(951_782_400), "Tue, 29 Feb 2000 00:00:00 UTC");
    }

    #[test]
    fn reads_envoy_json_and_skips_unknown_fields() {
        let json = serde_json::json!({"configs": [{
            "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "version_info": "v1",
            "a_field_of_a_newer_envoy": true,
            "dynamic_active_clusters": [{"cluster": {
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": "outbound|80||web.default.svc.cluster.local", "type": "EDS"}}]
        }]});
        let dump = Dump::from_json(json.to_string().as_bytes()).unwrap();
        let clusters = dump.clusters().unwrap();
        assert_eq!(
            clusters[0].name,
            "outbound|80||web.default.svc.cluster.local"
        );
        let e = dump.listeners().unwrap_err().to_string();
        assert!(e.contains("no listeners"), "{e}");
        let e = Dump::from_json(b"{\"configs\": 3}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an Envoy config dump"), "{e}");
    }
}

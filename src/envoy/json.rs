//! Envoy's type catalogue: packing generated resources into `Any`, and rendering any Envoy
//! message as canonical protobuf JSON (for config dumps, golden files and content versions).
//!
//! Envoy's protobuf descriptors ship with the envoy-types crate; the build script copies them
//! into this crate's build output.

use std::sync::OnceLock;

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage};

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// Errors rendering a message.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("decoding {type_name}: {source}")]
    Decode {
        type_name: String,
        source: prost::DecodeError,
    },
    #[error("rendering {type_name} as JSON: {source}")]
    Json {
        type_name: String,
        source: serde_json::Error,
    },
}

/// The descriptor pool of every Envoy v3 API message (plus well-known types).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The descriptors are a build-time constant copied from envoy-types; failing to decode
        // them is a build defect, not an input error.
        DescriptorPool::decode(DESCRIPTORS)
            .expect("envoy descriptors shipped with envoy-types decode")
    })
}

/// Packs a message into `Any`.
pub fn pack<T: prost::Name + prost::Message>(message: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Renders an `Any` as canonical protobuf JSON: `@type` first, proto field names, default
/// values omitted, map keys sorted. Nested `Any` values are expanded.
pub fn any_to_json(any: &Any) -> Result<serde_json::Value, RenderError> {
    let type_name = any
        .type_url
        .rsplit_once('/')
        .map(|(_, n)| n)
        .unwrap_or(&any.type_url);
    let descriptor = pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| RenderError::UnknownType(type_name.to_string()))?;
    let message = DynamicMessage::decode(descriptor, any.value.as_slice()).map_err(|source| {
        RenderError::Decode {
            type_name: type_name.to_string(),
            source,
        }
    })?;
    // Proto field names (snake_case), as Envoy's own admin config dump prints them.
    let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    let body = message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| RenderError::Json {
            type_name: type_name.to_string(),
            source,
        })?;
    let mut out = serde_json::Map::new();
    out.insert(
        "@type".to_string(),
        serde_json::Value::String(any.type_url.clone()),
    );
    if let serde_json::Value::Object(fields) = body {
        out.extend(fields);
    }
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3 as xds_cluster;

    #[test]
    fn renders_cluster_json() {
        let cluster = xds_cluster::Cluster {
            name: "outbound|80||a.default.svc.cluster.local".into(),
            ..Default::default()
        };
        let json = any_to_json(&pack(&cluster)).unwrap();
        assert_eq!(
            json["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(json["name"], "outbound|80||a.default.svc.cluster.local");
    }

    #[test]
    fn unknown_type_is_an_error() {
        let any = Any {
            type_url: "type.googleapis.com/no.such.Type".into(),
            value: vec![],
        };
        assert!(matches!(
            any_to_json(&any),
            Err(RenderError::UnknownType(_))
        ));
    }
}

//! Envoy `ConfigDump` JSON of what bowline serves one proxy. Secrets appear with their
//! private keys replaced by `[redacted]`, as in Envoy's own config dump.

use crate::cache::ProxyResources;
use crate::envoy::{self, RenderError};

pub fn render(
    resources: &ProxyResources,
    secrets: &std::collections::BTreeMap<String, envoy_types::pb::google::protobuf::Any>,
) -> Result<serde_json::Value, RenderError> {
    let dump = crate::xds::debug::config_dump(resources, secrets);
    let mut json = envoy::any_to_json(&envoy::pack(&dump))?;
    if let Some(obj) = json.as_object_mut() {
        obj.remove("@type");
    }
    Ok(json)
}

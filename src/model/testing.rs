//! Test inputs: models and resources from YAML that must be valid.

use std::sync::Arc;

use super::resource::parse_yaml;
use super::{MeshConfig, Model, Resource};

/// The resources of `yaml`, every document of which must be valid (no error diagnostics).
pub fn resources(yaml: &str) -> Vec<Arc<Resource>> {
    parse_yaml(yaml, "test.yaml")
        .into_iter()
        .map(|p| {
            let errors: Vec<_> = p.diagnostics.iter().filter(|d| d.is_error()).collect();
            assert!(errors.is_empty(), "invalid test input: {errors:?}");
            Arc::new(p.resource.expect("a valid resource"))
        })
        .collect()
}

/// The model of `yaml` (valid, see [`resources`]) with the default mesh configuration.
pub fn model(yaml: &str) -> Model {
    Model::build(resources(yaml), Vec::new(), MeshConfig::default())
}

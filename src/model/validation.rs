//! Semantic validation (stub).
use super::diagnostic::Diagnostic;
use super::resource::Resource;
pub fn validate(_resource: &Resource) -> Vec<Diagnostic> {
    Vec::new()
}

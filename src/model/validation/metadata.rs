//! Metadata: names, namespaces, and the annotations istiod's webhook checks.

use super::*;

pub(super) const ANNOTATION_DRY_RUN: &str = "istio.io/dry-run";
pub(super) const ANNOTATION_ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";
pub(super) const ANNOTATION_PARENTS: [&str; 2] = [
    "internal.istio.io/parents",
    "internal.istio.io/parent-namespace",
];

impl Ctx<'_> {
    pub(super) fn metadata(&mut self) {
        if self.resource.kind == Kind::Namespace {
            return;
        }
        let annotations = &self.resource.meta.annotations;
        let is_istio = self.resource.kind.group_versions().0.ends_with(".istio.io");
        // AuthorizationPolicy supports it (checked with the policy's action).
        if is_istio
            && self.resource.kind != Kind::AuthorizationPolicy
            && annotations.contains_key(ANNOTATION_DRY_RUN)
        {
            self.err(
                "metadata.annotations",
                format!(
                    "annotation {ANNOTATION_DRY_RUN} is only supported on AuthorizationPolicy; remove it"
                ),
            );
        }
        if is_istio && annotations.contains_key(ANNOTATION_ALWAYS_REJECT) {
            self.err(
                "metadata.annotations",
                format!("annotation {ANNOTATION_ALWAYS_REJECT} found, rejecting"),
            );
        }
        for a in ANNOTATION_PARENTS {
            if is_istio && annotations.contains_key(a) {
                self.err(
                    "metadata.annotations",
                    format!("annotation {a} is internal to the control plane and may not be set"),
                );
            }
        }
    }
}

//! Diagnostics: what is wrong with one resource, and where.

use std::fmt;

use serde::Serialize;

/// One problem with one resource: which resource, which field, what is wrong.
///
/// A diagnostic is data, never a panic: the file source, `bowline validate` and the admission
/// webhook all turn invalid input into these.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// Where the resource came from (a file path), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The resource kind, e.g. `VirtualService`; empty when the document has none.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Dotted field path, e.g. `spec.http[0].route[1].weight`; `spec` or empty for the whole
    /// resource.
    pub field: String,
    pub message: String,
    pub severity: Severity,
}

/// The kind of a diagnostic about the configuration generated for a proxy rather than about
/// one input resource (a listener conflict, a rejected set). Generated configuration is shared
/// by every proxy of a class, so such a diagnostic names the proxy's namespace but no pod
/// until it is shown for one proxy ([`Diagnostic::for_proxy`]).
pub const PROXY_KIND: &str = "Proxy";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The resource is rejected.
    Error,
    /// The resource is used, but something in it is probably not what the author meant.
    Warning,
}

impl Diagnostic {
    pub fn error(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            origin: None,
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            field: field.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    pub fn warning(
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(kind, namespace, name, field, message)
        }
    }

    /// A problem with the configuration generated for the proxies of `namespace` that share
    /// it (see [`PROXY_KIND`]).
    pub fn about_proxy(
        severity: Severity,
        namespace: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity,
            ..Diagnostic::error(PROXY_KIND, namespace, "", "", message)
        }
    }

    /// The diagnostic as shown for the proxy `<name>` (its pod or workload name): one about
    /// generated configuration names it.
    pub fn for_proxy(mut self, name: &str) -> Self {
        if self.kind == PROXY_KIND && self.name.is_empty() {
            self.name = name.to_string();
        }
        self
    }

    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `<origin>:<kind>/<namespace>/<name>: <field>: <message>`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}:")?;
        }
        write!(f, "{}/{}/{}: ", self.kind, self.namespace, self.name)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        if self.severity == Severity::Warning {
            write!(f, "warning: ")?;
        }
        write!(f, "{}", self.message)
    }
}

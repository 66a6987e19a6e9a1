//! The control plane's Prometheus series, under istiod's names, types, labels and histogram
//! buckets, so that dashboards and alerts written for istiod read bowline's `/metrics` (the
//! admin port) unchanged. `docs/metrics.md` lists every series and when it changes.
//!
//! Contract: the series are recorded with the `metrics` macros where the work happens (the
//! sources, the push loop, the xDS streams, the CA, the webhooks); this module is their one
//! registry: the help texts ([`describe`]), the buckets of every histogram ([`HISTOGRAMS`]; a
//! histogram without buckets would be exported as a summary), the series that exist from
//! start-up ([`install`]), and the label values shared by several recorders. Counters are
//! exposed under their names as given, without an added `_total` (as istiod, whose exporter
//! adds none either).

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::envoy::ResourceType;

/// The `component` label of `istio_build`: istiod's discovery component.
pub const COMPONENT: &str = "pilot";

/// Every histogram and its bucket boundaries (istiod's).
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (
        "pilot_proxy_convergence_time",
        &[0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0],
    ),
    (
        "pilot_proxy_queue_time",
        &[0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0],
    ),
    (
        "pilot_xds_push_time",
        &[0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0],
    ),
    (
        "pilot_xds_send_time",
        &[0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0],
    ),
    (
        "pilot_debounce_time",
        &[0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0],
    ),
    (
        "pilot_pushcontext_init_seconds",
        &[0.01, 0.1, 0.5, 1.0, 3.0, 5.0],
    ),
    (
        // 10 kB, 1 MB, 4 MB (gRPC's default message limit), 10 MB, 40 MB.
        "pilot_xds_config_size_bytes",
        &[
            1.0,
            10_000.0,
            1_000_000.0,
            4_000_000.0,
            10_000_000.0,
            40_000_000.0,
        ],
    ),
    (
        "sidecar_injection_time_seconds",
        &[0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0],
    ),
];

/// The exporter with every histogram's buckets.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    HISTOGRAMS
        .iter()
        .try_fold(PrometheusBuilder::new(), |builder, (name, buckets)| {
            builder.set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
        })
}

/// Installs the process-wide recorder, describes every series and creates those that exist
/// from start-up.
pub fn install(tag: &str) -> Result<PrometheusHandle, BuildError> {
    let handle = builder()?.install_recorder()?;
    describe();
    initial(tag);
    Ok(handle)
}

/// The build information, and the series that exist before their first event, at 0, where
/// dashboards sum or rate them.
pub fn initial(tag: &str) {
    metrics::gauge!("istio_build", "component" => COMPONENT, "tag" => tag.to_string()).set(1.0);
    for t in ResourceType::ALL {
        metrics::counter!("pilot_xds_pushes", "type" => t.as_str()).absolute(0);
        metrics::counter!("pilot_total_xds_rejects", "type" => t.as_str()).absolute(0);
    }
    metrics::counter!("pilot_total_xds_internal_errors").absolute(0);
    // Series without labels; those with labels (the validation webhook's name the resource
    // reviewed) appear with their first event.
    for name in [
        "sidecar_injection_requests_total",
        "sidecar_injection_success_total",
        "sidecar_injection_failure_total",
        "sidecar_injection_skip_total",
        "citadel_server_csr_count",
        "citadel_server_success_cert_issuance_count",
    ] {
        metrics::counter!(name).absolute(0);
    }
}

/// istiod's reasons for a push (`pilot_push_triggers{type}`) that bowline has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Configuration (Istio resources, services, the mesh configuration) changed.
    Config,
    /// Only endpoints changed.
    Endpoint,
    /// Only the certificates or credentials a proxy holds changed.
    Secret,
    /// A forced push asked for on the debug views (`/debug/adsz?push=true`).
    Debug,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Config => "config",
            Trigger::Endpoint => "endpoint",
            Trigger::Secret => "secret",
            Trigger::Debug => "debug",
        }
    }
}

/// istiod's event names for `pilot_k8s_reg_events` and `pilot_k8s_cfg_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeEvent {
    Add,
    Update,
    Delete,
}

impl KubeEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            KubeEvent::Add => "add",
            KubeEvent::Update => "update",
            KubeEvent::Delete => "delete",
        }
    }
}

/// Help texts, istiod's meaning in bowline's words.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "istio_build",
        "Build of the control plane: 1 for the running version (labels component and tag)."
    );
    // Connections and pushes.
    describe_gauge!(
        "pilot_xds",
        "Proxies connected over ADS, by the Istio version they report (debug callers excluded)."
    );
    describe_counter!(
        "pilot_xds_pushes",
        "xDS responses sent to proxies, by type (cds, eds, lds, rds, sds)."
    );
    describe_histogram!(
        "pilot_xds_push_time",
        Unit::Seconds,
        "Time to make and send one xDS response to a proxy, by type."
    );
    describe_histogram!(
        "pilot_xds_send_time",
        Unit::Seconds,
        "Time to hand one xDS response to the stream's sender."
    );
    describe_histogram!(
        "pilot_xds_config_size_bytes",
        Unit::Bytes,
        "Size of the xDS responses sent to proxies, by type URL."
    );
    describe_counter!(
        "bowline_connections_refused_total",
        "Connections closed before their server saw them, by port and reason (silent past the first-byte timeout, too many waiting, too many waiting from one client, an accept error)."
    );
    describe_counter!(
        "pilot_push_triggers",
        "Pushes to proxies, by what caused them (config, endpoint, secret, debug: a forced push)."
    );
    describe_histogram!(
        "pilot_proxy_convergence_time",
        Unit::Seconds,
        "Time from a configuration change to a proxy acknowledging the configuration it needs."
    );
    describe_histogram!(
        "pilot_proxy_queue_time",
        Unit::Seconds,
        "Time from a new configuration being built to a proxy's stream taking it up to push."
    );
    describe_histogram!(
        "pilot_debounce_time",
        Unit::Seconds,
        "Time from the first change entering the debounce to the new configuration being published, model build included."
    );
    describe_counter!(
        "pilot_inbound_updates",
        "Updates received from the sources, by type (config, eds, svc, svcdelete)."
    );
    describe_histogram!(
        "pilot_pushcontext_init_seconds",
        Unit::Seconds,
        "Time to build the model of the mesh and index it for a push."
    );
    describe_counter!(
        "pilot_total_xds_rejects",
        "xDS responses proxies rejected (NACK), by type."
    );
    describe_gauge!(
        "pilot_xds_cds_reject",
        "Clusters responses rejected, by proxy and error code (pilot_total_xds_rejects is preferred)."
    );
    describe_gauge!(
        "pilot_xds_eds_reject",
        "Endpoint responses rejected, by proxy and error code (pilot_total_xds_rejects is preferred)."
    );
    describe_gauge!(
        "pilot_xds_lds_reject",
        "Listener responses rejected, by proxy and error code (pilot_total_xds_rejects is preferred)."
    );
    describe_gauge!(
        "pilot_xds_rds_reject",
        "Route responses rejected, by proxy and error code (pilot_total_xds_rejects is preferred)."
    );
    describe_counter!(
        "pilot_xds_expired_nonce",
        "xDS requests answering a response other than the last one sent, by type."
    );
    describe_counter!(
        "pilot_total_xds_internal_errors",
        "xDS streams ended by an error of the control plane's own."
    );
    describe_counter!(
        "pilot_xds_auth_failures",
        "ADS callers refused because they could not be authenticated or are not allowed the identity they claim (bowline's own series)."
    );
    describe_counter!(
        "pilot_sds_certificate_errors_total",
        "Gateway credentials that could not be read or served over SDS."
    );
    // The model.
    describe_gauge!("pilot_services", "Services in the mesh's registry.");
    describe_gauge!("pilot_virt_services", "VirtualServices in force.");
    // Kubernetes events.
    describe_counter!(
        "pilot_k8s_reg_events",
        "Service registry events from Kubernetes, by kind (type) and event (add, update, delete)."
    );
    describe_counter!(
        "pilot_k8s_cfg_events",
        "Istio configuration events from Kubernetes, by kind (type) and event (add, update, delete)."
    );
    // Webhooks.
    describe_counter!(
        "galley_validation_passed",
        "Resources the validation webhook found valid, by group, version and resource."
    );
    describe_counter!(
        "galley_validation_failed",
        "Resources the validation webhook did not pass, by group, version, resource and reason."
    );
    describe_counter!(
        "sidecar_injection_requests_total",
        "Requests to the injection webhook."
    );
    describe_counter!(
        "sidecar_injection_success_total",
        "Injection requests answered (injected, skipped, or not a pod being created)."
    );
    describe_counter!(
        "sidecar_injection_failure_total",
        "Injection requests that could not be read or whose injection failed."
    );
    describe_counter!(
        "sidecar_injection_skip_total",
        "Pods the injection webhook left as they are (already injected, opted out, host network, ignored namespace)."
    );
    describe_histogram!(
        "sidecar_injection_time_seconds",
        Unit::Seconds,
        "Time to answer one injection request."
    );
    // The CA.
    describe_counter!(
        "citadel_server_csr_count",
        "Certificate signing requests received."
    );
    describe_counter!(
        "citadel_server_authentication_failure_count",
        "Certificate signing requests refused because the caller could not be authenticated."
    );
    describe_counter!(
        "citadel_server_csr_parsing_err_count",
        "Certificate signing requests whose CSR could not be read or verified."
    );
    describe_counter!(
        "citadel_server_csr_sign_err_count",
        "Certificate signing requests that failed while signing."
    );
    describe_counter!(
        "citadel_server_success_cert_issuance_count",
        "Certificates issued."
    );
    describe_gauge!(
        "citadel_server_root_cert_expiry_timestamp",
        "When the root certificate expires (Unix time, seconds)."
    );
    describe_gauge!(
        "citadel_server_cert_chain_expiry_timestamp",
        "When the CA's signing certificate expires (Unix time, seconds)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition of what `record` records, through the same exporter set-up as `install`.
    fn exposition(record: impl FnOnce()) -> String {
        let recorder = builder().expect("builder").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            initial("1.2.3");
            record();
        });
        handle.render()
    }

    #[test]
    fn histograms_are_histograms_with_istiods_buckets() {
        let text = exposition(|| {
            for (name, _) in HISTOGRAMS {
                metrics::histogram!(*name).record(0.5);
            }
        });
        for (name, buckets) in HISTOGRAMS {
            assert!(
                text.contains(&format!("# TYPE {name} histogram")),
                "{name} is not a histogram:\n{text}"
            );
            for b in *buckets {
                assert!(
                    text.contains(&format!("{name}_bucket{{le=\"{b}\"}}")),
                    "{name} lacks the bucket {b}:\n{text}"
                );
            }
        }
    }

    #[test]
    fn counters_keep_istiods_names_without_an_added_suffix() {
        let text = exposition(|| {
            metrics::counter!("pilot_k8s_cfg_events", "type" => "VirtualService", "event" => KubeEvent::Add.as_str())
                .increment(1);
        });
        assert!(
            text.contains("# TYPE pilot_k8s_cfg_events counter"),
            "{text}"
        );
        assert!(
            text.contains("pilot_k8s_cfg_events{type=\"VirtualService\",event=\"add\"} 1"),
            "{text}"
        );
        assert!(!text.contains("pilot_k8s_cfg_events_total"), "{text}");
        // Names that end in _total in istiod keep exactly one.
        assert!(text.contains("sidecar_injection_success_total 0"), "{text}");
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn build_and_dashboard_series_exist_from_start_up() {
        let text = exposition(|| {});
        assert!(
            text.contains("istio_build{component=\"pilot\",tag=\"1.2.3\"} 1"),
            "{text}"
        );
        for t in ["cds", "eds", "lds", "rds", "sds"] {
            assert!(
                text.contains(&format!("pilot_xds_pushes{{type=\"{t}\"}} 0")),
                "{text}"
            );
            assert!(
                text.contains(&format!("pilot_total_xds_rejects{{type=\"{t}\"}} 0")),
                "{text}"
            );
        }
        for name in [
            "pilot_total_xds_internal_errors",
            "sidecar_injection_success_total",
            "sidecar_injection_failure_total",
            "citadel_server_csr_count",
        ] {
            assert!(text.contains(&format!("{name} 0")), "{name}:\n{text}");
        }
    }
}

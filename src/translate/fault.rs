//! Fault injection: `envoy.filters.http.fault` on every HTTP connection manager (empty, as
//! istiod installs it), configured per route from a VirtualService rule's `fault`.
//!
//! Percentages follow istiod: `percentage` (a double) becomes parts per million, the deprecated
//! integer `percent` of a delay parts per hundred; a delay with neither applies to no request,
//! and so does an abort without `percentage`.

use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common_fault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as xds_fault;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use super::values::{integer_fraction, percent_fraction, proto_duration};
use crate::envoy::pack;
use crate::model::networking::{AbortErrorType, HttpDelayType, HttpFaultInjection, parse_duration};
use crate::model::validation::GRPC_STATUSES;

pub const FILTER_NAME: &str = "envoy.filters.http.fault";

/// The filter as the connection manager lists it: no faults unless a route configures some.
pub fn http_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: FILTER_NAME.to_string(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
            &xds_fault::HttpFault::default(),
        ))),
        ..Default::default()
    }
}

/// A rule's faults as the filter's per-route configuration; `None` when nothing Envoy can inject
/// is left. Problems are returned as `(field, message)` relative to the `fault` field.
pub fn per_route(f: &HttpFaultInjection) -> (Option<xds_fault::HttpFault>, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = match &d.http_delay_type {
            Some(HttpDelayType::FixedDelay(s)) => match parse_duration(s) {
                Ok(v) => proto_duration(v),
                Err(e) => {
                    problems.push(("delay.fixedDelay".to_string(), e));
                    return None;
                }
            },
            Some(HttpDelayType::ExponentialDelay(_)) => {
                problems.push((
                    "delay.exponentialDelay".to_string(),
                    "exponential delays are not supported; delay ignored".to_string(),
                ));
                return None;
            }
            None => return None,
        };
        Some(common_fault::FaultDelay {
            percentage: Some(match &d.percentage {
                Some(p) => percent_fraction(p.value),
                None => integer_fraction(d.percent.unwrap_or(0)),
            }),
            fault_delay_secifier: Some(common_fault::fault_delay::FaultDelaySecifier::FixedDelay(
                fixed,
            )),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        use xds_fault::fault_abort::ErrorType;
        let error_type = match &a.error_type {
            Some(AbortErrorType::HttpStatus(s)) => match u32::try_from(*s) {
                Ok(s) => ErrorType::HttpStatus(s),
                Err(_) => {
                    problems.push((
                        "abort.httpStatus".to_string(),
                        format!("invalid HTTP status {s}; abort ignored"),
                    ));
                    return None;
                }
            },
            Some(AbortErrorType::GrpcStatus(name)) => {
                match GRPC_STATUSES.iter().position(|s| s == name) {
                    Some(code) => ErrorType::GrpcStatus(u32::try_from(code).unwrap_or(2)),
                    None => {
                        problems.push((
                            "abort.grpcStatus".to_string(),
                            format!("unknown gRPC status {name:?}; abort ignored"),
                        ));
                        return None;
                    }
                }
            }
            Some(AbortErrorType::Http2Error(_)) => {
                problems.push((
                    "abort.http2Error".to_string(),
                    "HTTP/2 error aborts are not supported; abort ignored".to_string(),
                ));
                return None;
            }
            None => return None,
        };
        Some(xds_fault::FaultAbort {
            percentage: a.percentage.as_ref().map(|p| percent_fraction(p.value)),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return (None, problems);
    }
    (
        Some(xds_fault::HttpFault {
            delay,
            abort,
            ..Default::default()
        }),
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::networking::{Abort, Delay, Percent};
    use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;

    #[test]
    fn percentages() {
        let f = HttpFaultInjection {
            delay: Some(Delay {
                http_delay_type: Some(HttpDelayType::FixedDelay("5s".into())),
                percent: None,
                percentage: Some(Percent { value: 0.1 }),
            }),
            abort: Some(Abort {
                error_type: Some(AbortErrorType::HttpStatus(503)),
                percentage: Some(Percent { value: 33.3333 }),
            }),
        };
        let (out, problems) = per_route(&f);
        assert!(problems.is_empty());
        let out = out.expect("a fault");
        let delay = out.delay.expect("delay");
        let p = delay.percentage.expect("percentage");
        assert_eq!(p.numerator, 1000);
        assert_eq!(p.denominator, DenominatorType::Million as i32);
        let p = out.abort.expect("abort").percentage.expect("percentage");
        assert_eq!(p.numerator, 333_333);
    }

    #[test]
    fn deprecated_percent_and_defaults() {
        let f = HttpFaultInjection {
            delay: Some(Delay {
                http_delay_type: Some(HttpDelayType::FixedDelay("1s".into())),
                percent: Some(20),
                percentage: None,
            }),
            abort: Some(Abort {
                error_type: Some(AbortErrorType::GrpcStatus("UNAVAILABLE".into())),
                percentage: None,
            }),
        };
        let out = per_route(&f).0.expect("a fault");
        let p = out.delay.expect("delay").percentage.expect("percentage");
        assert_eq!(
            (p.numerator, p.denominator),
            (20, DenominatorType::Hundred as i32)
        );
        let abort = out.abort.expect("abort");
        // No percentage: Envoy aborts no request, as istiod's output does.
        assert_eq!(abort.percentage, None);
        assert_eq!(
            abort.error_type,
            Some(xds_fault::fault_abort::ErrorType::GrpcStatus(14))
        );
    }

    #[test]
    fn nothing_left_is_no_fault() {
        let f = HttpFaultInjection {
            delay: Some(Delay {
                http_delay_type: Some(HttpDelayType::ExponentialDelay("1s".into())),
                percent: None,
                percentage: None,
            }),
            abort: None,
        };
        let (out, problems) = per_route(&f);
        assert!(out.is_none());
        assert_eq!(problems.len(), 1);
    }
}

//! `GET /metrics`: Prometheus text format. Engines record with the `metrics` facade
//! (`metrics::counter!`); this module installs the process-wide Prometheus recorder once and
//! renders it. Names follow Prometheus conventions (`scalify_…_total`); labels are
//! low-cardinality only (never a room or a user).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's recorder, installed on first use. `None` if another recorder was installed
/// first (an embedding application's own); `/metrics` then says so.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics is empty");
                None
            }
        })
        .as_ref()
}

pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

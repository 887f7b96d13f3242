//! Counters for `GET /metrics` (Prometheus text format 0.0.4): requests by route, method and
//! status; bytes sent and received by route; errors (status ≥ 400) by route and code; uploads
//! in progress.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// All counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    sent: Mutex<BTreeMap<&'static str, u64>>,
    received: Mutex<BTreeMap<&'static str, u64>>,
    /// Blob bytes received by uploads (counted in the log too, per blob).
    pub upload_bytes: AtomicU64,
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, route: &'static str, method: &str, status: u16) {
        *self
            .requests
            .lock()
            .expect("metrics")
            .entry((route, method.to_string(), status))
            .or_default() += 1;
    }

    /// Counts an error answer.
    pub fn error(&self, route: &'static str, code: &'static str) {
        *self
            .errors
            .lock()
            .expect("metrics")
            .entry((route, code))
            .or_default() += 1;
    }

    /// Counts body bytes sent.
    pub fn sent(&self, route: &'static str, n: u64) {
        *self.sent.lock().expect("metrics").entry(route).or_default() += n;
    }

    /// Counts body bytes received.
    pub fn received(&self, route: &'static str, n: u64) {
        *self
            .received
            .lock()
            .expect("metrics")
            .entry(route)
            .or_default() += n;
    }

    /// The text exposition, with `uploads` sessions open now.
    pub fn render(&self, uploads: usize) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP cairn_serve_requests_total Requests answered, by route, method and status.\n",
        );
        out.push_str("# TYPE cairn_serve_requests_total counter\n");
        for ((route, method, status), n) in self.requests.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "cairn_serve_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP cairn_serve_errors_total Error answers, by route and registry error code.\n",
        );
        out.push_str("# TYPE cairn_serve_errors_total counter\n");
        for ((route, code), n) in self.errors.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "cairn_serve_errors_total{{route=\"{route}\",code=\"{code}\"}} {n}"
            );
        }
        for (name, help, map) in [
            ("sent", "Body bytes sent", &self.sent),
            ("received", "Body bytes received", &self.received),
        ] {
            let _ = writeln!(
                out,
                "# HELP cairn_serve_bytes_{name}_total {help}, by route."
            );
            let _ = writeln!(out, "# TYPE cairn_serve_bytes_{name}_total counter");
            for (route, n) in map.lock().expect("metrics").iter() {
                let _ = writeln!(
                    out,
                    "cairn_serve_bytes_{name}_total{{route=\"{route}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP cairn_serve_uploads_open Blob upload sessions open.\n");
        out.push_str("# TYPE cairn_serve_uploads_open gauge\n");
        let _ = writeln!(out, "cairn_serve_uploads_open {uploads}");
        out.push_str("# HELP cairn_serve_upload_bytes_total Blob bytes received by uploads.\n");
        out.push_str("# TYPE cairn_serve_upload_bytes_total counter\n");
        let _ = writeln!(
            out,
            "cairn_serve_upload_bytes_total {}",
            self.upload_bytes.load(Ordering::Relaxed)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.request("blob", "GET", 200);
        m.request("blob", "GET", 200);
        m.error("manifest", "MANIFEST_UNKNOWN");
        m.sent("blob", 10);
        let text = m.render(3);
        assert!(text.contains(
            "cairn_serve_requests_total{route=\"blob\",method=\"GET\",status=\"200\"} 2"
        ));
        assert!(
            text.contains(
                "cairn_serve_errors_total{route=\"manifest\",code=\"MANIFEST_UNKNOWN\"} 1"
            )
        );
        assert!(text.contains("cairn_serve_bytes_sent_total{route=\"blob\"} 10"));
        assert!(text.contains("cairn_serve_uploads_open 3"));
    }
}

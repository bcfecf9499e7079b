//! The result of a run: a table for people, JSON for machines.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procfs::Sample;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

impl Latency {
    /// The histogram's percentiles, or `None` for an empty one (nothing was measured).
    pub(crate) fn of(h: &Histogram<u64>) -> Option<Latency> {
        (!h.is_empty()).then(|| Latency::from(h))
    }

    fn from(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            samples: h.len(),
        }
    }

    /// "p50 / p99 / p999 / max ms", as the report's latency rows print it.
    fn percentiles(&self) -> String {
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} ms",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub params: String,
    pub seconds: f64,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub acked_per_s: f64,
    pub ack_latency: Option<Latency>,
    /// Open-loop runs: send→ack p99 of the sends scheduled in each 0.5 s of the run, in order.
    pub ack_p99_timeline_ms: Option<Vec<f64>>,
    /// Open-loop runs: the warm-up send of each sender, the first to its room (not measured).
    pub first_send_latency: Option<Latency>,
    pub delivered: u64,
    /// Deliveries the receivers should have seen (acked × receivers), where defined.
    pub expected: Option<u64>,
    pub lost: Option<u64>,
    pub delivered_per_s: f64,
    pub delivery_latency: Option<Latency>,
    pub server_cpu_s: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub deliveries_per_server_cpu_s: Option<f64>,
    pub acked_per_server_cpu_s: Option<f64>,
    pub connections: Option<u64>,
    pub connects_per_s: Option<f64>,
    pub rss_per_connection_kb: Option<f64>,
    /// The `login` scenario's flood: requests answered per second, and the share refused
    /// with 429.
    pub flood: Option<FloodFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FloodFigures {
    pub per_s: f64,
    pub throttled_share: f64,
}

impl Report {
    pub fn new(scenario: &str, params: String, elapsed: Duration) -> Report {
        Report {
            scenario: scenario.into(),
            params,
            seconds: elapsed.as_secs_f64(),
            sent: 0,
            acked: 0,
            errors: 0,
            acked_per_s: 0.0,
            ack_latency: None,
            ack_p99_timeline_ms: None,
            first_send_latency: None,
            delivered: 0,
            expected: None,
            lost: None,
            delivered_per_s: 0.0,
            delivery_latency: None,
            server_cpu_s: None,
            server_rss_mb: None,
            deliveries_per_server_cpu_s: None,
            acked_per_server_cpu_s: None,
            connections: None,
            connects_per_s: None,
            rss_per_connection_kb: None,
            flood: None,
        }
    }

    /// Derived figures; call after the counters are set.
    pub(crate) fn set_server(&mut self, before: Option<Sample>, after: Option<Sample>) {
        let secs = self.seconds.max(1e-9);
        self.acked_per_s = self.acked as f64 / secs;
        self.delivered_per_s = self.delivered as f64 / secs;
        self.lost = self.expected.map(|e| e.saturating_sub(self.delivered));
        if let (Some(b), Some(a)) = (before, after) {
            let cpu = (a.cpu_s - b.cpu_s).max(1e-9);
            self.server_cpu_s = Some(cpu);
            self.server_rss_mb = Some(a.rss_kb as f64 / 1024.0);
            if self.delivered > 0 {
                self.deliveries_per_server_cpu_s = Some(self.delivered as f64 / cpu);
            }
            if self.acked > 0 {
                self.acked_per_server_cpu_s = Some(self.acked as f64 / cpu);
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "  {k:<30} {v}");
        writeln!(f, "scenario {} ({})", self.scenario, self.params)?;
        row(f, "measured for", format!("{:.1} s", self.seconds))?;
        if self.sent > 0 {
            if self.flood.is_some() {
                row(
                    f,
                    "logins / succeeded / refused",
                    format!("{} / {} / {}", self.sent, self.acked, self.errors),
                )?;
            } else {
                row(
                    f,
                    "sent / acked / errors",
                    format!("{} / {} / {}", self.sent, self.acked, self.errors),
                )?;
                row(f, "acked sends/s", format!("{:.0}", self.acked_per_s))?;
            }
        }
        if let Some(l) = &self.ack_latency {
            let what = if self.flood.is_some() {
                "login p50/p99/p999/max"
            } else {
                "send→ack p50/p99/p999/max"
            };
            row(f, what, l.percentiles())?;
        }
        if let Some(flood) = &self.flood {
            row(
                f,
                "flood answered",
                format!(
                    "{:.0}/s, {:.1} % refused (429)",
                    flood.per_s,
                    flood.throttled_share * 100.0
                ),
            )?;
        }
        if let Some(l) = &self.first_send_latency {
            row(
                f,
                "warm-up: first send per room",
                format!(
                    "p50 {:.2} / p99 {:.2} / max {:.2} ms ({} sends, not in the figures above)",
                    l.p50_ms, l.p99_ms, l.max_ms, l.samples
                ),
            )?;
        }
        if let Some(t) = &self.ack_p99_timeline_ms {
            let windows: Vec<String> = t.iter().map(|ms| format!("{ms:.0}")).collect();
            row(f, "send→ack p99 per 0.5 s (ms)", windows.join(" "))?;
        }
        if self.delivered > 0 || self.expected.is_some() {
            row(f, "delivered", format!("{}", self.delivered))?;
            row(f, "deliveries/s", format!("{:.0}", self.delivered_per_s))?;
        }
        if let (Some(e), Some(l)) = (self.expected, self.lost) {
            row(f, "expected / lost deliveries", format!("{e} / {l}"))?;
        }
        if let Some(l) = &self.delivery_latency {
            row(f, "delivery p50/p99/p999/max", l.percentiles())?;
        }
        if let Some(c) = self.connections {
            row(f, "connections", format!("{c}"))?;
        }
        if let Some(c) = self.connects_per_s {
            row(f, "connects/s", format!("{c:.0}"))?;
        }
        if let Some(r) = self.rss_per_connection_kb {
            row(f, "server RSS per connection", format!("{r:.1} KiB"))?;
        }
        if let Some(c) = self.server_cpu_s {
            row(f, "server CPU", format!("{c:.2} s"))?;
        }
        if let Some(r) = self.server_rss_mb {
            row(f, "server RSS", format!("{r:.1} MiB"))?;
        }
        if let Some(d) = self.deliveries_per_server_cpu_s {
            row(f, "deliveries per server CPU-s", format!("{d:.0}"))?;
        }
        if let Some(d) = self.acked_per_server_cpu_s {
            row(f, "acked sends per server CPU-s", format!("{d:.0}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_figures() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let mut r = Report::new("fanout", "x".into(), Duration::from_secs(2));
        r.acked = 100;
        r.delivered = 950;
        r.expected = Some(1000);
        r.delivery_latency = Latency::of(&h);
        r.set_server(
            Some(Sample {
                cpu_s: 1.0,
                rss_kb: 1000,
            }),
            Some(Sample {
                cpu_s: 1.5,
                rss_kb: 2048,
            }),
        );
        assert_eq!(r.lost, Some(50));
        assert_eq!(r.delivered_per_s, 475.0);
        assert_eq!(r.deliveries_per_server_cpu_s, Some(1900.0));
        assert_eq!(r.server_rss_mb, Some(2.0));
        let l = r.delivery_latency.clone().unwrap();
        assert!((l.p50_ms - 0.5).abs() < 0.01 && (l.max_ms - 1.0).abs() < 0.01);
        assert!(r.to_string().contains("expected / lost deliveries"));
        assert!(serde_json::to_string(&r).unwrap().contains("\"lost\":50"));
    }
}

//! Open-loop pacing: send times are fixed by the offered rate, not by when the previous send
//! finished, so a slow server cannot quietly lower the load it is measured under.

use std::time::{Duration, Instant};

pub struct Pacer {
    start: Instant,
    interval: Duration,
    n: u64,
}

impl Pacer {
    /// `rate` sends per second, the first one at `start`.
    pub fn new(rate: f64, start: Instant) -> Self {
        Pacer {
            start,
            interval: Duration::from_secs_f64(1.0 / rate.max(1e-9)),
            n: 0,
        }
    }

    /// The scheduled time of the next send. Late sends keep their schedule (the caller sends
    /// at once and measures from the scheduled time), they are not skipped.
    pub fn next_send(&mut self) -> Instant {
        let at = self.start + self.interval.mul_f64(self.n as f64);
        self.n += 1;
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_evenly_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100.0, t0);
        let times: Vec<_> = (0..101).map(|_| p.next_send()).collect();
        assert_eq!(times[0], t0);
        assert_eq!(times[100] - t0, Duration::from_secs(1));
        for w in times.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(10));
        }
    }

    #[test]
    fn fractional_rates_work() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0.5, t0);
        p.next_send();
        assert_eq!(p.next_send() - t0, Duration::from_secs(2));
    }
}

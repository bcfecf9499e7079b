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

    /// Like [`Pacer::new`], with the first send `phase` (0..1) of an interval after `start`.
    /// Senders sharing an offered rate get evenly spread phases, so their sends interleave
    /// instead of arriving as one burst per interval.
    pub fn with_phase(rate: f64, start: Instant, phase: f64) -> Self {
        let mut p = Pacer::new(rate, start);
        p.start += p.interval.mul_f64(phase.clamp(0.0, 1.0));
        p
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
    fn phases_spread_senders_over_the_interval() {
        let t0 = Instant::now();
        let mut a = Pacer::with_phase(10.0, t0, 0.0);
        let mut b = Pacer::with_phase(10.0, t0, 0.5);
        assert_eq!(a.next_send(), t0);
        assert_eq!(b.next_send() - t0, Duration::from_millis(50));
        assert_eq!(b.next_send() - t0, Duration::from_millis(150));
    }

    #[test]
    fn fractional_rates_work() {
        let t0 = Instant::now();
        let mut p = Pacer::new(0.5, t0);
        p.next_send();
        assert_eq!(p.next_send() - t0, Duration::from_secs(2));
    }
}

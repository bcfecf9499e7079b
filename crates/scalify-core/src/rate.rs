use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` saved up. The caller passes the
/// time in, so the rule is testable without sleeping. A rate of 0 disables limiting.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub fn is_disabled(&self) -> bool {
        self.rate == 0.0
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(1, now)
    }

    /// Takes `n` tokens if there are as many (a request that costs more than one send).
    pub fn try_take_n(&mut self, n: u32, now: Instant) -> bool {
        if self.is_disabled() {
            return true;
        }
        self.refill(now);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens spent elsewhere (on another node, for the same user): the bucket may
    /// go into debt, down to minus one burst, which its rate then pays back before the next
    /// take succeeds.
    pub fn debit(&mut self, n: u32, now: Instant) {
        if self.is_disabled() {
            return;
        }
        self.refill(now);
        self.tokens = (self.tokens - f64::from(n)).max(-self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
    }

    /// Whether the bucket is full at `now`: a user who has been idle that long can be
    /// forgotten without changing what they may do.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.tokens + elapsed.as_secs_f64() * self.rate >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_debit_can_leave_a_debt_that_the_rate_pays_back() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 10, t0);
        b.debit(25, t0);
        assert!(!b.try_take(t0), "in debt");
        // Debt is capped at one burst: -10, so 1.1 s of rate brings back one token.
        assert!(!b.try_take(t0 + Duration::from_millis(1_000)));
        assert!(b.try_take(t0 + Duration::from_millis(1_100)));
        let mut off = TokenBucket::new(0, 10, t0);
        off.debit(100, t0);
        assert!(off.try_take(t0), "a disabled bucket takes no debt");
    }

    #[test]
    fn weighted_takes_draw_several_tokens() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 20, t0);
        assert!(b.try_take_n(15, t0));
        assert!(!b.try_take_n(6, t0), "only 5 left");
        assert!(b.try_take_n(5, t0));
        assert!(!b.is_full(t0));
        assert!(b.is_full(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20, 40, t0);
        assert_eq!((0..100).filter(|_| b.try_take(t0)).count(), 40);
        // One second later, 20 more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.try_take(t1)).count(), 20);
        // Long idle time never saves more than the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.try_take(t2)).count(), 40);
    }

    #[test]
    fn zero_rate_disables() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 0, t0);
        assert!((0..10_000).all(|_| b.try_take(t0)));
    }
}

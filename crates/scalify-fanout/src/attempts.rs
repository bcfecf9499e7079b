//! Counts of repeated attempts (logins, registrations) per key, as [`Backoff`] rules them:
//! [`LocalAttempts`] in one process, [`crate::redis::RedisAttempts`] shared by a cluster, so a
//! throttle earned on one node holds on every node.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use scalify_core::{now_ms, Attempts, Backoff};

use crate::FanoutError;

/// Whether an attempt may go ahead: `Ok` (it is counted) or `Err(ms to wait)`.
pub type Admission = Result<(), u64>;

#[async_trait]
pub trait AttemptLog: Send + Sync + 'static {
    /// Counts an attempt under `key` if `policy` admits it now.
    async fn attempt(&self, key: &str, policy: &Backoff) -> Result<Admission, FanoutError>;
    /// Takes back one attempt under `key` (it succeeded); `forget` drops the key's whole record.
    async fn take_back(&self, key: &str, forget: bool) -> Result<(), FanoutError>;
}

/// Records kept by one process before the forgotten ones are swept out.
const SWEEP_AT: usize = 100_000;

/// One process's attempt log: a map of records, each kept until its policy forgets it. The
/// map is swept of forgotten records when it reaches 100,000 entries; if they are all
/// live (a flood of distinct keys), the oldest half goes — the per-address key of the same
/// flood is among the newest and stays.
#[derive(Default)]
pub struct LocalAttempts {
    records: Mutex<HashMap<String, (Attempts, i64)>>,
}

impl LocalAttempts {
    pub fn new() -> Self {
        Self::default()
    }

    fn attempt_at(&self, key: &str, policy: &Backoff, now: i64) -> Admission {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let prior = records.get(key).map(|(a, _)| *a);
        let record = policy.admit(prior, now)?;
        if policy.is_disabled() {
            return Ok(());
        }
        if records.len() >= SWEEP_AT && !records.contains_key(key) {
            records.retain(|_, (_, until)| *until > now);
            if records.len() >= SWEEP_AT / 2 {
                let mut ages: Vec<i64> = records.values().map(|(a, _)| a.last_ms).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                records.retain(|_, (a, _)| a.last_ms > cutoff);
            }
        }
        let until = now.saturating_add(policy.keep_ms(record.count) as i64);
        records.insert(key.to_owned(), (record, until));
        Ok(())
    }
}

#[async_trait]
impl AttemptLog for LocalAttempts {
    async fn attempt(&self, key: &str, policy: &Backoff) -> Result<Admission, FanoutError> {
        Ok(self.attempt_at(key, policy, now_ms()))
    }

    async fn take_back(&self, key: &str, forget: bool) -> Result<(), FanoutError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if forget {
            records.remove(key);
        } else if let Some((a, _)) = records.get_mut(key) {
            a.count = a.count.saturating_sub(1);
        }
        Ok(())
    }
}

/// What every [`AttemptLog`] must do, run against each engine by its tests.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub const POLICY: Backoff = Backoff {
        free: 3,
        base_ms: 60_000,
        max_ms: 600_000,
        forget_ms: 60_000,
    };

    /// `key` must be fresh.
    pub async fn free_attempts_then_a_wait(log: &dyn AttemptLog, key: &str) {
        for i in 0..3 {
            assert_eq!(
                log.attempt(key, &POLICY).await.unwrap(),
                Ok(()),
                "attempt {i}"
            );
        }
        let wait = log.attempt(key, &POLICY).await.unwrap().unwrap_err();
        assert!(wait > 50_000 && wait <= 60_000, "wait {wait}");
        // Refused attempts are not counted: the wait does not grow.
        let again = log.attempt(key, &POLICY).await.unwrap().unwrap_err();
        assert!(again <= wait, "{again} > {wait}");
    }

    /// `key` must be fresh.
    pub async fn a_success_is_taken_back(log: &dyn AttemptLog, key: &str) {
        for _ in 0..3 {
            log.attempt(key, &POLICY).await.unwrap().unwrap();
        }
        log.take_back(key, false).await.unwrap();
        assert_eq!(log.attempt(key, &POLICY).await.unwrap(), Ok(()));
        assert!(log.attempt(key, &POLICY).await.unwrap().is_err());
        log.take_back(key, true).await.unwrap();
        for _ in 0..3 {
            assert_eq!(log.attempt(key, &POLICY).await.unwrap(), Ok(()));
        }
        // Taking back on a key with no record is harmless.
        log.take_back(&format!("{key}-none"), false).await.unwrap();
        log.take_back(&format!("{key}-none"), true).await.unwrap();
    }

    /// Parallel attempts on a fresh `key` admit exactly the free ones.
    pub async fn parallel_attempts_admit_exactly_the_free_ones(log: &dyn AttemptLog, key: &str) {
        let results =
            futures_util::future::join_all((0..20).map(|_| log.attempt(key, &POLICY))).await;
        let admitted = results
            .into_iter()
            .filter(|r| matches!(r, Ok(Ok(()))))
            .count();
        assert_eq!(admitted, 3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_attempts_keep_the_contract() {
        let log = LocalAttempts::new();
        contract::free_attempts_then_a_wait(&log, "a").await;
        contract::a_success_is_taken_back(&log, "b").await;
        contract::parallel_attempts_admit_exactly_the_free_ones(&log, "c").await;
    }

    #[test]
    fn a_flood_of_keys_stays_bounded_and_keeps_the_newest() {
        let log = LocalAttempts::new();
        let policy = contract::POLICY;
        for i in 0..(SWEEP_AT as i64 + 10) {
            log.attempt_at(&format!("k{i}"), &policy, i).unwrap();
        }
        let records = log.records.lock().unwrap();
        assert!(records.len() <= SWEEP_AT, "{}", records.len());
        assert!(records.contains_key(&format!("k{}", SWEEP_AT + 9)));
    }
}

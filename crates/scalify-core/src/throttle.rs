//! Throttling of attempts that an attacker repeats (logins, registrations) and the client
//! address they are counted under.
//!
//! An [`Attempts`] record counts the attempts under one key (an account, a client address) and
//! remembers when the last one was made. Every attempt is counted *before* it is tried — so a
//! burst of parallel attempts cannot all slip through before the first failure is recorded —
//! and one that succeeds is taken back afterwards. Past a number of free attempts, the next one
//! waits twice as long as the one before (exponential backoff), up to a cap; a key left alone
//! for a while is forgotten.
//!
//! The rule is here, pure, so the in-memory store of one node and the Redis store of a cluster
//! apply the same one (the Redis script mirrors [`Backoff::admit`]; a contract test runs both).

use std::fmt;
use std::net::IpAddr;

/// How many attempts a key gets and how it is slowed down after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts allowed before any wait. 0 disables the throttle.
    pub free: u32,
    /// The wait after the first attempt past `free`, in ms; it doubles with each further one.
    pub base_ms: u64,
    /// The longest wait, in ms.
    pub max_ms: u64,
    /// A key with no attempt for this long (in ms, after its last wait ended) starts over.
    pub forget_ms: u64,
}

/// A key's count of attempts and the time of the last one (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempts {
    pub count: u32,
    pub last_ms: i64,
}

impl Backoff {
    pub fn is_disabled(&self) -> bool {
        self.free == 0
    }

    /// How long after the last of `count` attempts the next one may be made.
    pub fn wait_ms(&self, count: u32) -> u64 {
        if self.is_disabled() || count < self.free {
            return 0;
        }
        let doublings = (count - self.free).min(62);
        self.base_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
    }

    /// How long a record must be kept after an attempt that brought its count to `count`.
    pub fn keep_ms(&self, count: u32) -> u64 {
        self.wait_ms(count).saturating_add(self.forget_ms)
    }

    /// Admits an attempt at `now_ms` on a key whose record is `prior` (`None`: no record, or a
    /// forgotten one): `Ok` with the record to store, or `Err` with the ms to wait.
    pub fn admit(&self, prior: Option<Attempts>, now_ms: i64) -> Result<Attempts, u64> {
        let prior = prior
            .filter(|p| now_ms - p.last_ms < self.keep_ms(p.count) as i64)
            .unwrap_or_default();
        if self.is_disabled() {
            return Ok(prior);
        }
        let wait = self.wait_ms(prior.count);
        let ready_at = prior.last_ms.saturating_add(wait as i64);
        if wait > 0 && now_ms < ready_at {
            return Err((ready_at - now_ms) as u64);
        }
        Ok(Attempts {
            count: prior.count.saturating_add(1),
            last_ms: now_ms,
        })
    }
}

/// The peers whose `X-Forwarded-For` is believed: addresses or CIDR blocks
/// (`10.0.0.0/8`, `127.0.0.1`, `::1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a list of addresses and blocks; an entry that is neither is an error naming it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let bad = || format!("`{entry}` is not an IP address or a CIDR block");
            let (addr, len) = match entry.split_once('/') {
                Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
                None => (entry, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = len.unwrap_or(max);
            if len > max {
                return Err(bad());
            }
            nets.push((addr, len));
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|&(net, len)| in_block(ip, canonical(net), len))
    }

    /// The client's address: the peer's own, unless the peer is a trusted proxy — then the
    /// last address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy
    /// appends the address it received from; anything left of the first untrusted hop could
    /// be written by the client). A header that does not parse leaves the peer's address.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.contains(client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self.0.iter().map(|(a, l)| format!("{a}/{l}")).collect();
        f.write_str(&entries.join(","))
    }
}

/// An IPv4 address written as IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket reports) is
/// the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn in_block(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Backoff = Backoff {
        free: 3,
        base_ms: 1000,
        max_ms: 8000,
        forget_ms: 60_000,
    };

    /// Runs attempts at the given times; each either succeeds (its record stored) or is refused.
    fn run(times: &[i64]) -> Vec<Result<u32, u64>> {
        let mut record = None;
        times
            .iter()
            .map(|&t| match POLICY.admit(record, t) {
                Ok(r) => {
                    record = Some(r);
                    Ok(r.count)
                }
                Err(wait) => Err(wait),
            })
            .collect()
    }

    #[test]
    fn free_attempts_then_doubling_waits_up_to_the_cap() {
        assert_eq!(
            run(&[0, 0, 0, 0, 999, 1000, 1000, 2999, 3000]),
            vec![
                Ok(1),
                Ok(2),
                Ok(3),
                Err(1000),
                Err(1),
                Ok(4),
                Err(2000),
                Err(1),
                Ok(5)
            ]
        );
        let waits: Vec<u64> = (0..10).map(|n| POLICY.wait_ms(n)).collect();
        assert_eq!(waits, [0, 0, 0, 1000, 2000, 4000, 8000, 8000, 8000, 8000]);
        assert_eq!(POLICY.wait_ms(u32::MAX), 8000, "no overflow at huge counts");
    }

    #[test]
    fn a_key_left_alone_is_forgotten() {
        let record = Attempts {
            count: 10,
            last_ms: 0,
        };
        // Locked for 8 s, then remembered for a minute after that.
        assert_eq!(POLICY.admit(Some(record), 5000), Err(3000));
        assert_eq!(POLICY.admit(Some(record), 67_999).map(|r| r.count), Ok(11));
        assert_eq!(POLICY.admit(Some(record), 68_000).map(|r| r.count), Ok(1));
    }

    #[test]
    fn a_disabled_throttle_admits_everything() {
        let off = Backoff { free: 0, ..POLICY };
        for t in 0..100 {
            assert!(off
                .admit(
                    Some(Attempts {
                        count: 1000,
                        last_ms: t
                    }),
                    t
                )
                .is_ok());
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_blocks() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1", " ::1 ", ""]).unwrap();
        assert!(t.contains(ip("10.200.3.4")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("127.0.0.1")));
        assert!(!t.contains(ip("127.0.0.2")));
        assert!(t.contains(ip("::1")));
        assert!(
            t.contains(ip("::ffff:10.1.1.1")),
            "a v4-mapped address is its v4 address"
        );
        assert!(TrustedProxies::parse(&["0.0.0.0/0"])
            .unwrap()
            .contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::1/129"] {
            let e = TrustedProxies::parse(&[bad]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_client_address_comes_from_a_trusted_proxy_only() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        // An untrusted peer's header is ignored: anyone can write one.
        assert_eq!(t.client(ip("8.8.8.8"), Some("1.2.3.4")), ip("8.8.8.8"));
        // Through one proxy.
        assert_eq!(t.client(ip("10.0.0.1"), Some("1.2.3.4")), ip("1.2.3.4"));
        // A client that forges a first hop: the last untrusted hop counts, not the forgery.
        assert_eq!(
            t.client(ip("10.0.0.1"), Some("6.6.6.6, 1.2.3.4, 10.0.0.9")),
            ip("1.2.3.4")
        );
        // No header, or garbage: the proxy itself.
        assert_eq!(t.client(ip("10.0.0.1"), None), ip("10.0.0.1"));
        assert_eq!(t.client(ip("10.0.0.1"), Some("junk")), ip("10.0.0.1"));
        // Nothing trusted: always the peer.
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), Some("1.2.3.4")),
            ip("10.0.0.1")
        );
    }
}

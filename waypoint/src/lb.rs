//! Load-balancing algorithms over a list of healthy candidates, as pure functions.
//!
//! Consistent hashing is rendezvous (highest random weight) hashing: each candidate scores
//! `mix(hash(key), hash(candidate))` and the highest score wins. A key sticks to its
//! endpoint for as long as that endpoint is a candidate, and when endpoints come or go only
//! the keys of those endpoints move — the property a ketama ring approximates, exactly and
//! without a ring to rebuild. Candidates are identified by their address, which is stable
//! across configuration reloads.

use std::net::SocketAddr;

use rand::Rng;

/// A candidate endpoint as the algorithms see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Stable identity for hashing.
    pub addr: SocketAddr,
    /// Requests in flight to it now.
    pub in_flight: usize,
}

/// Round robin: the candidate at `cursor` (the caller advances it).
pub fn round_robin(candidates: &[Candidate], cursor: usize) -> Option<usize> {
    (!candidates.is_empty()).then(|| cursor % candidates.len())
}

/// A uniformly random candidate.
pub fn random(candidates: &[Candidate], rng: &mut impl Rng) -> Option<usize> {
    (!candidates.is_empty()).then(|| rng.random_range(0..candidates.len()))
}

/// Power of two choices: two distinct random candidates, the one with fewer requests in
/// flight wins (the first on a tie).
pub fn least_request(candidates: &[Candidate], rng: &mut impl Rng) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(0),
        n => {
            let first = rng.random_range(0..n);
            // A second index different from the first, uniformly.
            let second = (first + rng.random_range(1..n)) % n;
            if candidates[second].in_flight < candidates[first].in_flight {
                Some(second)
            } else {
                Some(first)
            }
        }
    }
}

/// The candidate with the highest rendezvous score for `key`.
pub fn consistent_hash(candidates: &[Candidate], key: &[u8]) -> Option<usize> {
    let key_hash = fnv1a(key);
    candidates
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| (score(key_hash, &c.addr), c.addr))
        .map(|(i, _)| i)
}

fn score(key_hash: u64, addr: &SocketAddr) -> u64 {
    let addr_hash = match addr {
        SocketAddr::V4(v4) => fnv1a(&[&v4.ip().octets()[..], &v4.port().to_be_bytes()].concat()),
        SocketAddr::V6(v6) => fnv1a(&[&v6.ip().octets()[..], &v6.port().to_be_bytes()].concat()),
    };
    splitmix64(key_hash ^ addr_hash.rotate_left(32))
}

/// FNV-1a, 64 bits: deterministic in every process (unlike `std`'s randomly keyed hasher),
/// so a key maps to the same endpoint on every waypoint replica.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The splitmix64 finalizer: spreads FNV's weak low bits over the whole word.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn candidates(n: u16) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                addr: SocketAddr::from(([10, 0, 0, 1], 8000 + i)),
                in_flight: 0,
            })
            .collect()
    }

    #[test]
    fn round_robin_and_random_spread() {
        let all = candidates(4);
        let picks: Vec<usize> = (0..8).filter_map(|c| round_robin(&all, c)).collect();
        assert_eq!(picks, [0, 1, 2, 3, 0, 1, 2, 3]);
        let mut rng = StdRng::seed_from_u64(3);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[random(&all, &mut rng).unwrap()] += 1;
        }
        // Binomial(4000, 1/4): sd ≈ 27; 6 sd of slack.
        assert!(
            counts.iter().all(|c| (840..=1160).contains(c)),
            "{counts:?}"
        );
        assert_eq!(round_robin(&[], 3), None);
        assert_eq!(random(&[], &mut rng), None);
    }

    #[test]
    fn least_request_prefers_the_less_loaded() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut two = candidates(2);
        two[0].in_flight = 3;
        // With two candidates both are always compared: the idle one always wins.
        assert!((0..100).all(|_| least_request(&two, &mut rng) == Some(1)));
        let mut many = candidates(10);
        many[0].in_flight = 100;
        let mut counts = [0usize; 10];
        for _ in 0..10_000 {
            counts[least_request(&many, &mut rng).unwrap()] += 1;
        }
        // The busy one only wins when it is drawn twice, which distinct draws never do.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(
            counts[1..].iter().all(|c| (800..=1420).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn consistent_hash_is_stable_and_moves_little() {
        let all = candidates(5);
        let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let before: Vec<SocketAddr> = keys
            .iter()
            .map(|k| all[consistent_hash(&all, k.as_bytes()).unwrap()].addr)
            .collect();
        // Deterministic.
        for (key, addr) in keys.iter().zip(&before) {
            assert_eq!(
                all[consistent_hash(&all, key.as_bytes()).unwrap()].addr,
                *addr
            );
        }
        // Spread: each of 5 endpoints gets 200 ± 80.
        for c in &all {
            let n = before.iter().filter(|a| **a == c.addr).count();
            assert!((120..=280).contains(&n), "{n}");
        }
        // Removing one endpoint moves only its keys; the others stay.
        let removed = all[2].addr;
        let rest: Vec<Candidate> = all.iter().copied().filter(|c| c.addr != removed).collect();
        for (key, addr) in keys.iter().zip(&before) {
            let now = rest[consistent_hash(&rest, key.as_bytes()).unwrap()].addr;
            if *addr != removed {
                assert_eq!(now, *addr, "{key} moved");
            }
        }
        // Order of candidates does not matter.
        let reversed: Vec<Candidate> = all.iter().rev().copied().collect();
        assert_eq!(
            reversed[consistent_hash(&reversed, b"user-7").unwrap()].addr,
            before[7]
        );
    }
}

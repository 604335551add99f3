//! Referral claims per source address: a claim from an address that made more than
//! `referral.claims_per_address_per_hour` within the hour is carried out with its
//! rewards flagged (a partner approves or voids them). Counted in memory over a sliding
//! hour (the times of an address's latest paid claims, at most the limit of them: a
//! flagged claim is not one the limit let through), for at most
//! `referral.claim_sources_max` addresses (addresses idle for an hour are dropped
//! first; past that, a new address counts as over the limit). IPv6 clients are counted
//! per /64, the block one subscriber usually holds.

use playtree_actors::rate::SlidingCount;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

const HOUR_MS: u64 = 3_600_000;

#[derive(Debug)]
pub struct ClaimSources {
    /// Per address: its latest claims.
    windows: Mutex<HashMap<IpAddr, SlidingCount>>,
    limit: u32,
    addresses_max: usize,
}

impl ClaimSources {
    pub fn new(limit: u32, addresses_max: usize) -> Self {
        ClaimSources {
            windows: Mutex::default(),
            limit,
            addresses_max: addresses_max.max(1),
        }
    }

    /// Counts a claim from `address` at `now_ms`; says whether it is past the limit.
    pub fn claim_is_suspect(&self, address: IpAddr, now_ms: u64) -> bool {
        if self.limit == 0 {
            return false;
        }
        let address = counted_as(address);
        // Every change is a single map operation: a panic elsewhere leaves it whole.
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if !windows.contains_key(&address) && windows.len() >= self.addresses_max {
            windows.retain(|_, claims| !claims.is_idle(now_ms, HOUR_MS));
            if windows.len() >= self.addresses_max {
                metrics::counter!("playtree_claim_sources_full_total").increment(1);
                return true;
            }
        }
        let claims = windows.entry(address).or_default();
        let suspect = claims.count_at(now_ms, HOUR_MS) >= self.limit;
        if !suspect {
            claims.record(now_ms, HOUR_MS, self.limit as usize);
        }
        if suspect {
            metrics::counter!("playtree_referral_claims_flagged_by_address_total").increment(1);
        }
        suspect
    }
}

/// The address a claim is counted under: IPv4 as it is, IPv6 by its /64.
fn counted_as(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_past_the_hourly_limit_of_an_address_are_suspect_within_any_hour() {
        let sources = ClaimSources::new(2, 10);
        let (one, two): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert!(!sources.claim_is_suspect(one, 0));
        assert!(!sources.claim_is_suspect(one, 10));
        assert!(
            sources.claim_is_suspect(one, 20),
            "the third within the hour"
        );
        assert!(
            !sources.claim_is_suspect(two, 20),
            "another address has its own count"
        );
        assert!(
            !sources.claim_is_suspect(one, HOUR_MS),
            "the claim at 0 has left the hour; 10's is the one paid within it (20's was flagged)"
        );
        assert!(
            sources.claim_is_suspect(one, HOUR_MS + 5),
            "10's and the hour's are within the hour"
        );
        assert!(!sources.claim_is_suspect(one, HOUR_MS + 10));
        let (home, neighbour, elsewhere): (IpAddr, IpAddr, IpAddr) = (
            "2001:db8:1:2::1".parse().expect("ip"),
            "2001:db8:1:2:ffff::9".parse().expect("ip"),
            "2001:db8:1:3::1".parse().expect("ip"),
        );
        assert!(!sources.claim_is_suspect(home, 0));
        assert!(!sources.claim_is_suspect(neighbour, 0));
        assert!(
            sources.claim_is_suspect(home, 0),
            "one /64 is one subscriber"
        );
        assert!(!sources.claim_is_suspect(elsewhere, 0));
        assert!(
            !ClaimSources::new(0, 10).claim_is_suspect(one, 0),
            "0: no limit"
        );
    }

    #[test]
    fn a_full_table_drops_expired_windows_and_then_counts_new_addresses_as_suspect() {
        let sources = ClaimSources::new(5, 1);
        let (one, two): (IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        );
        assert!(!sources.claim_is_suspect(one, 0));
        assert!(
            sources.claim_is_suspect(two, 10),
            "no room for a second address"
        );
        assert!(
            !sources.claim_is_suspect(two, HOUR_MS),
            "the first one's window ended"
        );
    }
}

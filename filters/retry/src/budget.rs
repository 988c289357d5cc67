//! The retry budget: a sliding 10-second window of per-second buckets, stored in shared data so
//! every worker sees the same counts. Pure state machine; the clock is passed in.

use crate::config::BudgetConfig;
use wasmgate_core::shared::{update, SharedStore, UpdateError};

/// Length of the window, in one-second buckets.
pub const WINDOW_SECONDS: u64 = 10;

/// Whether the bucket of second `sec` counts at `now`, without overflow for any stored second
/// (a corrupt or foreign value in shared data may hold one near `u64::MAX`).
fn in_window(sec: u64, now: u64) -> bool {
    sec <= now && now - sec < WINDOW_SECONDS
}

/// Requests and retries per second over the last [`WINDOW_SECONDS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// `(unix second, requests, retries)`, oldest first.
    buckets: Vec<(u64, u64, u64)>,
}

impl Window {
    /// Reads the shared-data encoding (`sec:req:ret;...`); garbage reads as empty.
    pub fn decode(bytes: &[u8]) -> Self {
        let text = std::str::from_utf8(bytes).unwrap_or_default();
        let mut buckets = Vec::new();
        for part in text.split(';').filter(|p| !p.is_empty()) {
            let mut fields = part.split(':').map(|f| f.parse::<u64>());
            if let (Some(Ok(sec)), Some(Ok(req)), Some(Ok(ret))) =
                (fields.next(), fields.next(), fields.next())
            {
                buckets.push((sec, req, ret));
            }
        }
        Self { buckets }
    }

    /// The shared-data encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.buckets
            .iter()
            .map(|(s, q, r)| format!("{s}:{q}:{r}"))
            .collect::<Vec<_>>()
            .join(";")
            .into_bytes()
    }

    fn prune(&mut self, now: u64) {
        self.buckets.retain(|(sec, _, _)| in_window(*sec, now));
    }

    fn current(&mut self, now: u64) -> &mut (u64, u64, u64) {
        self.prune(now);
        if self.buckets.last().is_none_or(|(sec, _, _)| *sec != now) {
            self.buckets.push((now, 0, 0));
        }
        let last = self.buckets.len() - 1;
        &mut self.buckets[last]
    }

    /// `(requests, retries)` in the window ending at `now`.
    pub fn totals(&self, now: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|(sec, _, _)| in_window(*sec, now))
            .fold((0, 0), |(q, r), (_, bq, br)| {
                (q.saturating_add(*bq), r.saturating_add(*br))
            })
    }

    /// Counts one request.
    pub fn record_request(&mut self, now: u64) {
        let requests = &mut self.current(now).1;
        *requests = requests.saturating_add(1);
    }

    /// Would one more retry fit the budget at `now`?
    pub fn allows_retry(&self, now: u64, config: &BudgetConfig) -> bool {
        let this_second = self
            .buckets
            .iter()
            .find(|(sec, _, _)| *sec == now)
            .map_or(0, |(_, _, r)| *r);
        if this_second < u64::from(config.min_per_second) {
            return true;
        }
        let (requests, retries) = self.totals(now);
        #[allow(clippy::cast_precision_loss)]
        let allowed = config.ratio * requests as f64;
        #[allow(clippy::cast_precision_loss)]
        let used = retries.saturating_add(1) as f64;
        used <= allowed
    }

    /// Takes one retry from the budget if it fits; returns whether it did.
    pub fn try_retry(&mut self, now: u64, config: &BudgetConfig) -> bool {
        if self.allows_retry(now, config) {
            let retries = &mut self.current(now).2;
            *retries = retries.saturating_add(1);
            true
        } else {
            false
        }
    }

    /// Gives back `n` retries that were reserved but not used (router mode).
    pub fn refund(&mut self, now: u64, mut n: u64) {
        self.prune(now);
        for bucket in self.buckets.iter_mut().rev() {
            let take = n.min(bucket.2);
            bucket.2 -= take;
            n -= take;
            if n == 0 {
                break;
            }
        }
    }
}

/// Counts a request in the shared window.
pub fn record_request<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    now: u64,
) -> Result<(), UpdateError> {
    update(store, key, |bytes| {
        let mut w = Window::decode(bytes);
        w.record_request(now);
        (Some(w.encode()), ())
    })
}

/// Counts a request and takes up to `wanted` retries for it in one write; returns how many it got.
pub fn record_and_reserve<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    now: u64,
    config: &BudgetConfig,
    wanted: u32,
) -> Result<u32, UpdateError> {
    update(store, key, |bytes| {
        let mut w = Window::decode(bytes);
        w.record_request(now);
        let mut got = 0;
        while got < wanted && w.try_retry(now, config) {
            got += 1;
        }
        (Some(w.encode()), got)
    })
}

/// Takes up to `wanted` retries from the shared budget; returns how many it got.
pub fn reserve<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    now: u64,
    config: &BudgetConfig,
    wanted: u32,
) -> Result<u32, UpdateError> {
    update(store, key, |bytes| {
        let mut w = Window::decode(bytes);
        let mut got = 0;
        while got < wanted && w.try_retry(now, config) {
            got += 1;
        }
        (Some(w.encode()), got)
    })
}

/// Gives back unused reserved retries.
pub fn refund<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    now: u64,
    n: u32,
) -> Result<(), UpdateError> {
    if n == 0 {
        return Ok(());
    }
    update(store, key, |bytes| {
        let mut w = Window::decode(bytes);
        w.refund(now, u64::from(n));
        (Some(w.encode()), ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_core::host::FakeHost;

    const NO_FLOOR: BudgetConfig = BudgetConfig {
        ratio: 0.5,
        min_per_second: 0,
    };

    /// Found by fuzzing (fuzz/artifacts/state_budget): counts and seconds near `u64::MAX` in
    /// a stored window (another module version, a corrupt write) overflowed.
    #[test]
    fn counters_near_u64_max_saturate() {
        let max = u64::MAX;
        let mut w = Window::decode(format!("{max}:{max}:{max};{}:{max}:{max}", max - 1).as_bytes());
        assert_eq!(w.totals(max), (max, max), "saturated, not wrapped");
        w.record_request(max);
        let all = BudgetConfig {
            ratio: 1.0,
            min_per_second: 0,
        };
        assert!(w.try_retry(max, &all));
        assert_eq!(w.totals(max), (max, max));
        let mut w = Window::decode(format!("{max}:1:1").as_bytes());
        assert_eq!(
            w.totals(5),
            (0, 0),
            "a second from the future does not count"
        );
        w.record_request(5);
        assert_eq!(w.totals(5), (1, 0));
    }

    #[test]
    fn ratio_limits_retries() {
        let mut w = Window::default();
        for _ in 0..4 {
            w.record_request(100);
        }
        assert!(w.try_retry(100, &NO_FLOOR));
        assert!(w.try_retry(101, &NO_FLOOR));
        assert!(
            !w.try_retry(101, &NO_FLOOR),
            "2 retries for 4 requests at 0.5"
        );
        w.record_request(102);
        w.record_request(102);
        assert!(w.try_retry(102, &NO_FLOOR));
        assert_eq!(w.totals(102), (6, 3));
    }

    #[test]
    fn floor_allows_min_per_second() {
        let cfg = BudgetConfig {
            ratio: 0.0,
            min_per_second: 2,
        };
        let mut w = Window::default();
        assert!(w.try_retry(10, &cfg));
        assert!(w.try_retry(10, &cfg));
        assert!(!w.try_retry(10, &cfg));
        assert!(w.try_retry(11, &cfg), "a new second has a new floor");
    }

    #[test]
    fn window_slides() {
        let mut w = Window::default();
        w.record_request(100);
        w.record_request(100);
        assert!(w.try_retry(100, &NO_FLOOR));
        assert!(!w.try_retry(105, &NO_FLOOR));
        assert_eq!(w.totals(109), (2, 1));
        assert_eq!(w.totals(110), (0, 0), "old buckets leave the window");
        w.record_request(110);
        w.record_request(110);
        assert!(w.try_retry(110, &NO_FLOOR));
        assert_eq!(w.buckets.len(), 1);
    }

    #[test]
    fn encoding_round_trips_and_tolerates_garbage() {
        let mut w = Window::default();
        w.record_request(7);
        w.record_request(8);
        assert!(w.try_retry(
            8,
            &BudgetConfig {
                ratio: 1.0,
                min_per_second: 0
            }
        ));
        assert_eq!(Window::decode(&w.encode()), w);
        assert_eq!(
            Window::decode(b"x;1:2;;3:4:5"),
            Window {
                buckets: vec![(3, 4, 5)]
            }
        );
        assert_eq!(Window::decode(&[0xff]), Window::default());
    }

    #[test]
    fn refund_returns_reserved_retries() {
        let mut w = Window::default();
        w.record_request(5);
        w.record_request(5);
        assert!(w.try_retry(5, &NO_FLOOR));
        w.refund(5, 3);
        assert_eq!(w.totals(5), (2, 0));
    }

    #[test]
    fn shared_helpers() {
        let host = FakeHost::default();
        for _ in 0..4 {
            record_request(&host, "b", 50).unwrap();
        }
        assert_eq!(reserve(&host, "b", 50, &NO_FLOOR, 3).unwrap(), 2);
        assert_eq!(reserve(&host, "b", 50, &NO_FLOOR, 3).unwrap(), 0);
        refund(&host, "b", 50, 1).unwrap();
        assert_eq!(reserve(&host, "b", 50, &NO_FLOOR, 3).unwrap(), 1);
        // 5 requests allow 2.5 retries and 2 are taken: none left; 7 allow 3.5: one more.
        assert_eq!(record_and_reserve(&host, "b", 50, &NO_FLOOR, 2).unwrap(), 0);
        assert_eq!(record_and_reserve(&host, "b", 50, &NO_FLOOR, 0).unwrap(), 0);
        assert_eq!(record_and_reserve(&host, "b", 50, &NO_FLOOR, 2).unwrap(), 1);
    }
}

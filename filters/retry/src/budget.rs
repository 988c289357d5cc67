//! The retry budget: a sliding 10-second window of per-second buckets, stored in shared data so
//! every worker sees the same counts, one per upstream. A worker counts requests locally
//! ([`Local`]) and writes them at most once a second, with the retries it charges, or on its
//! tick: the hot path reads no shared data and writes none. Pure state machine; the clock is
//! passed in.

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

    /// Counts `n` requests in the bucket of second `sec` (none when `sec` is out of the window
    /// at `now`), keeping the buckets oldest first.
    pub fn add_requests(&mut self, sec: u64, now: u64, n: u64) {
        self.prune(now);
        if n == 0 || !in_window(sec, now) {
            return;
        }
        match self.buckets.iter().position(|(s, _, _)| *s >= sec) {
            Some(i) if self.buckets[i].0 == sec => {
                self.buckets[i].1 = self.buckets[i].1.saturating_add(n);
            }
            Some(i) => self.buckets.insert(i, (sec, n, 0)),
            None => self.buckets.push((sec, n, 0)),
        }
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

    /// How many of `wanted` retries would fit the budget at `now`, without taking them.
    pub fn allowance(&self, now: u64, config: &BudgetConfig, wanted: u32) -> u32 {
        let mut probe = self.clone();
        let mut got = 0;
        while got < wanted && probe.try_retry(now, config) {
            got += 1;
        }
        got
    }

    /// Counts `n` retries that were made (router mode: after the response), whether or not
    /// they fit.
    pub fn charge(&mut self, now: u64, n: u64) {
        let retries = &mut self.current(now).2;
        *retries = retries.saturating_add(n);
    }
}

/// One worker's view of one upstream's budget: the shared window as this worker last wrote or
/// read it, and the requests it counted since, not yet written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// The shared window at the last write or read (`None`: never read).
    snapshot: Option<Window>,
    /// Requests counted since, all in second `pending_sec`.
    pending: u64,
    pending_sec: u64,
    /// The second of the last write or read.
    synced_sec: u64,
}

impl Local {
    /// True when the next request must first write what is pending and read the window afresh:
    /// never read yet, or a new second started.
    pub fn stale(&self, now: u64) -> bool {
        self.snapshot.is_none() || self.synced_sec != now
    }

    /// Requests counted and not written yet.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Counts one request locally (call after [`sync`] when [`Local::stale`]).
    pub fn count_request(&mut self, now: u64) {
        if self.pending > 0 && self.pending_sec != now {
            // Not synced this second (the host refused the write): count it where it belongs.
            let snapshot = self.snapshot.get_or_insert_with(Window::default);
            snapshot.add_requests(self.pending_sec, now, self.pending);
            self.pending = 0;
        }
        self.pending_sec = now;
        self.pending = self.pending.saturating_add(1);
    }

    /// The window as this worker sees it at `now`: the snapshot and its pending requests.
    pub fn view(&self, now: u64) -> Window {
        let mut w = self.snapshot.clone().unwrap_or_default();
        w.add_requests(self.pending_sec, now, self.pending);
        w
    }
}

/// Writes `local`'s pending requests and applies `change` in one CAS write, and keeps the
/// window written as `local`'s snapshot; returns what `change` returned.
pub fn sync<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    local: &mut Local,
    now: u64,
    mut change: impl FnMut(&mut Window) -> T,
) -> Result<T, UpdateError> {
    let (pending, pending_sec) = (local.pending, local.pending_sec);
    let (result, window) = update(store, key, |bytes| {
        let mut w = Window::decode(bytes);
        w.add_requests(pending_sec, now, pending);
        w.prune(now);
        let result = change(&mut w);
        (Some(w.encode()), (result, w))
    })?;
    local.snapshot = Some(window);
    local.pending = 0;
    local.synced_sec = now;
    Ok(result)
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

/// Router mode, on a request's arrival: counts it and returns how many of `wanted` retries
/// fit the budget now, without taking them (they are charged when made, [`charge`]). Nothing is
/// reserved, so slow requests in flight do not hold budget, and a reset stream leaks none.
pub fn record_and_allow<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    now: u64,
    config: &BudgetConfig,
    wanted: u32,
) -> Result<u32, UpdateError> {
    update(store, key, |bytes| {
        let mut w = Window::decode(bytes);
        w.record_request(now);
        let got = w.allowance(now, config, wanted);
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

/// Counts `n` retries that were made.
pub fn charge<S: SharedStore + ?Sized>(
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
        w.charge(now, u64::from(n));
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
    fn allowance_takes_nothing_and_charge_counts_what_was_made() {
        let mut w = Window::default();
        for _ in 0..4 {
            w.record_request(5);
        }
        assert_eq!(w.allowance(5, &NO_FLOOR, 3), 2);
        assert_eq!(w.allowance(5, &NO_FLOOR, 3), 2, "nothing was taken");
        w.charge(5, 3);
        assert_eq!(
            w.totals(5),
            (4, 3),
            "made retries count even past the budget"
        );
        assert_eq!(w.allowance(5, &NO_FLOOR, 3), 0);
        w.charge(6, u64::MAX);
        assert_eq!(w.totals(6), (4, u64::MAX));
    }

    #[test]
    fn requests_are_added_to_their_second() {
        let mut w = Window::default();
        w.record_request(10);
        w.add_requests(8, 10, 3);
        w.add_requests(10, 10, 2);
        w.add_requests(12, 12, 1);
        w.add_requests(1, 12, 5);
        w.add_requests(u64::MAX, 12, 5);
        assert_eq!(w.buckets, vec![(8, 3, 0), (10, 3, 0), (12, 1, 0)]);
        w.add_requests(9, 12, 4);
        assert_eq!(w.buckets[1], (9, 4, 0), "kept in order");
        assert_eq!(w.totals(12), (11, 0));
    }

    #[test]
    fn a_worker_writes_its_requests_once_a_second() {
        let host = FakeHost::default();
        let mut local = Local::default();
        assert!(local.stale(100));
        sync(&host, "b", &mut local, 100, |_| ()).unwrap();
        for _ in 0..4 {
            assert!(!local.stale(100));
            local.count_request(100);
        }
        assert_eq!(local.view(100).totals(100), (4, 0));
        assert!(
            host.get_shared("b").unwrap().0.unwrap().is_empty(),
            "nothing written yet"
        );
        // Another worker's retry, then this worker's first request of a new second.
        let floor = BudgetConfig {
            ratio: 0.0,
            min_per_second: 1,
        };
        assert_eq!(reserve(&host, "b", 100, &floor, 1).unwrap(), 1);
        assert!(local.stale(101));
        sync(&host, "b", &mut local, 101, |_| ()).unwrap();
        local.count_request(101);
        assert_eq!(
            local.view(101).totals(101),
            (5, 1),
            "4 written, the retry seen"
        );
        let stored = Window::decode(&host.get_shared("b").unwrap().0.unwrap());
        assert_eq!(stored.totals(101), (4, 1));
        // A retry charged with the pending request in the same write.
        let granted = sync(&host, "b", &mut local, 101, |w| w.try_retry(101, &NO_FLOOR)).unwrap();
        assert!(granted, "5 requests allow 2.5 retries");
        let stored = Window::decode(&host.get_shared("b").unwrap().0.unwrap());
        assert_eq!(stored.totals(101), (5, 2));
        assert_eq!(local.pending(), 0);
        // A write the host refused leaves the requests pending, counted in their second.
        local.count_request(101);
        local.count_request(102);
        assert_eq!(local.view(102).totals(102), (7, 2));
    }

    #[test]
    fn shared_helpers() {
        let host = FakeHost::default();
        for _ in 0..4 {
            record_request(&host, "b", 50).unwrap();
        }
        assert_eq!(reserve(&host, "b", 50, &NO_FLOOR, 3).unwrap(), 2);
        assert_eq!(reserve(&host, "b", 50, &NO_FLOOR, 3).unwrap(), 0);
        // 5 requests allow 2.5 retries and 2 are taken: none fit; 7 allow 3.5: one more.
        assert_eq!(record_and_allow(&host, "b", 50, &NO_FLOOR, 2).unwrap(), 0);
        assert_eq!(record_and_allow(&host, "b", 50, &NO_FLOOR, 0).unwrap(), 0);
        assert_eq!(record_and_allow(&host, "b", 50, &NO_FLOOR, 2).unwrap(), 1);
        assert_eq!(
            record_and_allow(&host, "b", 50, &NO_FLOOR, 2).unwrap(),
            2,
            "nothing was taken: 8 requests allow 4"
        );
        charge(&host, "b", 50, 1).unwrap();
        charge(&host, "b", 50, 0).unwrap();
        assert_eq!(record_and_allow(&host, "b", 50, &NO_FLOOR, 2).unwrap(), 1);
        assert_eq!(
            record_and_allow(&host, "other", 50, &NO_FLOOR, 2).unwrap(),
            0
        );
    }
}

//! The three rate-limit algorithms as pure functions of a small state and the current time.
//!
//! Every limit keeps three `u64` words of state in its slot (see `store`); time is nanoseconds
//! since the Unix epoch, passed in by the caller so that tests run against a fake clock. Windows
//! are aligned to the epoch, so every worker agrees on where a window starts.

/// Nanoseconds in a second.
pub const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The state of one limit for one key: three words whose meaning depends on the algorithm.
///
/// - token bucket: `[tat, 0, 0]`, the "theoretical arrival time" at which the bucket is full again;
/// - fixed window: `[window_start, count, 0]`;
/// - sliding window: `[window_start, current_count, previous_count]`.
///
/// `[0, 0, 0]` is the state of a key never seen: a full bucket, an empty window.
pub type State = [u64; 3];

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `requests` tokens per `window`, refilled continuously, holding at most `burst` tokens.
    TokenBucket {
        /// Bucket capacity.
        burst: u64,
    },
    /// At most `requests` per epoch-aligned window.
    FixedWindow,
    /// The previous window's count weighted by how much of it still overlaps the sliding window,
    /// plus the current window's count, at most `requests`.
    SlidingWindow,
}

/// One limit: `requests` per `window_ns` with an algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Policy name, shown in the response headers.
    pub name: String,
    /// Quota per window (at least 1).
    pub requests: u64,
    /// Window length in nanoseconds (at least 1 ms).
    pub window_ns: u64,
    /// The algorithm.
    pub algorithm: Algorithm,
}

/// What a limit reports about a key after a request was counted (or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Quota units left (`r` of the `RateLimit` header, `x-ratelimit-remaining`).
    pub remaining: u64,
    /// Nanoseconds until more quota is available (`t`, `x-ratelimit-reset`); `None` when the
    /// quota is complete and nothing is pending (a full bucket).
    pub reset_ns: Option<u64>,
}

impl Limit {
    /// The state brought forward to `now`: windows that have passed are rolled over. A state
    /// from a window *after* `now` (another worker's clock read a little later) is kept, so
    /// clock jitter between workers can never reset a count.
    pub fn normalize(&self, state: State, now: u64) -> State {
        let w = self.window_ns.max(1);
        let current = now - now % w;
        match self.algorithm {
            Algorithm::TokenBucket { .. } => state,
            Algorithm::FixedWindow => {
                if state[0] >= current {
                    state
                } else {
                    [current, 0, 0]
                }
            }
            Algorithm::SlidingWindow => {
                if state[0] >= current {
                    state
                } else if state[0].saturating_add(w) == current {
                    [current, 0, state[1]]
                } else {
                    [current, 0, 0]
                }
            }
        }
    }

    /// The earliest instant (ns since the epoch) from which `state` counts nothing: from then
    /// on it decides, reports and counts exactly like `[0, 0, 0]`, the state of a key never
    /// seen, and it stays so until the key is counted again. 0 for a state that counts nothing.
    ///
    /// - token bucket: the bucket is full again at `tat`;
    /// - fixed window: a count stops counting at the end of its window;
    /// - sliding window: the current count still weighs during the next window, the previous
    ///   count until the current window ends.
    pub fn idle_at(&self, state: &State) -> u64 {
        let w = self.window_ns.max(1);
        match self.algorithm {
            Algorithm::TokenBucket { .. } => state[0],
            Algorithm::FixedWindow if state[1] > 0 => state[0].saturating_add(w),
            Algorithm::SlidingWindow if state[1] > 0 => {
                state[0].saturating_add(w.saturating_mul(2))
            }
            Algorithm::SlidingWindow if state[2] > 0 => state[0].saturating_add(w),
            Algorithm::FixedWindow | Algorithm::SlidingWindow => 0,
        }
    }

    /// Whether one more request fits, for a state already normalized to `now`.
    pub fn allows(&self, state: &State, now: u64) -> bool {
        self.retry_after_ns(state, now) == 0
    }

    /// The most units one request may cost under this limit: what an untouched state admits
    /// (`requests` per window, `burst` for a token bucket). A rule's `cost` and `max_cost` are
    /// checked against it at load, so every cost a rule charges can pass an idle key.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::TokenBucket { burst } => burst,
            Algorithm::FixedWindow | Algorithm::SlidingWindow => self.requests,
        }
    }

    /// Nanoseconds until one more request would fit (0: it fits now), for a normalized state.
    pub fn retry_after_ns(&self, state: &State, now: u64) -> u64 {
        self.retry_after_cost_ns(state, now, 1)
    }

    /// Nanoseconds until a request costing `cost` units would fit (0: it fits now), for a
    /// normalized state. A cost above [`Limit::capacity`] never fits; the configuration refuses
    /// such costs, and the arithmetic saturates rather than overflow.
    pub fn retry_after_cost_ns(&self, state: &State, now: u64, cost: u64) -> u64 {
        let w = u128::from(self.window_ns.max(1));
        let q = u128::from(self.requests);
        let c = u128::from(cost.max(1));
        match self.algorithm {
            Algorithm::TokenBucket { burst } => {
                let t = u128::from(self.interval_ns());
                let debt = u128::from(state[0].saturating_sub(now));
                let capacity = u128::from(burst) * t;
                to_u64((debt + t * c).saturating_sub(capacity))
            }
            Algorithm::FixedWindow => {
                if u128::from(state[1]).saturating_add(c) <= q {
                    0
                } else {
                    self.window_end(state).saturating_sub(now)
                }
            }
            Algorithm::SlidingWindow => {
                let elapsed = self.elapsed(state, now);
                let (cur, prev) = (u128::from(state[1]), u128::from(state[2]));
                let used = sliding_used(prev, cur, w, elapsed);
                let need = used
                    .saturating_add(c.saturating_mul(w))
                    .saturating_sub(q * w);
                if need == 0 {
                    return 0;
                }
                // Within this window the previous count's weight falls by `prev` per ns.
                let left = w - elapsed;
                if prev > 0 {
                    let wait = need.div_ceil(prev);
                    if wait < left {
                        return to_u64(wait);
                    }
                }
                // Next window: the current count becomes the previous one, weighted (w - e) / w.
                let extra = if cur.saturating_add(c) <= q {
                    0
                } else {
                    w.saturating_mul(cur.saturating_add(c) - q)
                        .div_ceil(cur.max(1))
                };
                to_u64(left.saturating_add(extra))
            }
        }
    }

    /// The state after one request was counted (call only when [`Limit::allows`] said yes).
    pub fn consume(&self, state: State, now: u64) -> State {
        self.consume_cost(state, now, 1)
    }

    /// The state after a request costing `cost` units was counted (call only when
    /// [`Limit::retry_after_cost_ns`] said 0).
    pub fn consume_cost(&self, state: State, now: u64, cost: u64) -> State {
        let cost = cost.max(1);
        match self.algorithm {
            Algorithm::TokenBucket { .. } => [
                state[0]
                    .max(now)
                    .saturating_add(self.interval_ns().saturating_mul(cost)),
                0,
                0,
            ],
            Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                [state[0], state[1].saturating_add(cost), state[2]]
            }
        }
    }

    /// Gives back what [`Limit::consume_cost`] took at `now` (a request counted by one group of
    /// limits and then refused by another, concurrently changed one). Never gives back more
    /// than was taken: a window that has rolled over since is left alone, and a bucket never
    /// holds more than when the request arrived.
    pub fn refund(&self, state: State, now: u64, cost: u64) -> State {
        let cost = cost.max(1);
        match self.algorithm {
            Algorithm::TokenBucket { .. } => {
                let back = self.interval_ns().saturating_mul(cost);
                [state[0].saturating_sub(back).max(now.min(state[0])), 0, 0]
            }
            Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                let w = self.window_ns.max(1);
                if state[0] == now - now % w {
                    [state[0], state[1].saturating_sub(cost), state[2]]
                } else {
                    state
                }
            }
        }
    }

    /// Remaining quota and time to more quota, for a normalized state.
    pub fn report(&self, state: &State, now: u64) -> Report {
        let w = u128::from(self.window_ns.max(1));
        let q = u128::from(self.requests);
        match self.algorithm {
            Algorithm::TokenBucket { burst } => {
                let t = u128::from(self.interval_ns());
                let debt = u128::from(state[0].saturating_sub(now));
                let capacity = u128::from(burst) * t;
                let remaining = to_u64(capacity.saturating_sub(debt) / t);
                let reset_ns = match debt % t {
                    _ if debt == 0 => None,
                    0 => Some(to_u64(t)),
                    part => Some(to_u64(part)),
                };
                Report {
                    remaining,
                    reset_ns,
                }
            }
            Algorithm::FixedWindow => Report {
                remaining: self.requests.saturating_sub(state[1]),
                reset_ns: Some(self.window_end(state).saturating_sub(now)),
            },
            Algorithm::SlidingWindow => {
                let elapsed = self.elapsed(state, now);
                let used = sliding_used(u128::from(state[2]), u128::from(state[1]), w, elapsed);
                let remaining = to_u64((q * w).saturating_sub(used) / w);
                let reset_ns = if remaining > 0 {
                    to_u64(w - elapsed)
                } else {
                    self.retry_after_ns(state, now)
                };
                Report {
                    remaining,
                    reset_ns: Some(reset_ns),
                }
            }
        }
    }

    /// Token bucket emission interval: one token every `ceil(window / requests)` ns (rounded up,
    /// so rounding can only make the limit stricter, never more permissive).
    fn interval_ns(&self) -> u64 {
        self.window_ns.div_ceil(self.requests.max(1)).max(1)
    }

    fn window_end(&self, state: &State) -> u64 {
        state[0].saturating_add(self.window_ns)
    }

    /// Nanoseconds since the state's window started, in `0..window`.
    fn elapsed(&self, state: &State, now: u64) -> u128 {
        let w = u128::from(self.window_ns.max(1));
        u128::from(now.saturating_sub(state[0])).min(w - 1)
    }
}

/// The sliding window's weighted count, scaled by `w`: `prev * (w - elapsed) + cur * w`.
/// Saturating: counts come from shared data, where a corrupt or foreign value may hold anything
/// up to `u64::MAX`, and two such products overflow even a `u128`.
fn sliding_used(prev: u128, cur: u128, w: u128, elapsed: u128) -> u128 {
    prev.saturating_mul(w - elapsed)
        .saturating_add(cur.saturating_mul(w))
}

fn to_u64(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Whole seconds, rounded up (`delay-seconds` of the headers).
pub fn ceil_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS_PER_SECOND;
    const MS: u64 = 1_000_000;

    /// Found by fuzzing (fuzz/artifacts/state_rate_limit): a stored sliding-window state with
    /// counts near `u64::MAX` overflowed the weighted count.
    #[test]
    fn sliding_counts_near_u64_max_saturate() {
        let limit = Limit {
            name: "p".into(),
            requests: 10,
            window_ns: u64::MAX,
            algorithm: Algorithm::SlidingWindow,
        };
        let state = [0, u64::MAX, u64::MAX];
        let now = 5;
        assert!(!limit.allows(&state, now));
        assert!(limit.retry_after_ns(&state, now) > 0);
        assert_eq!(limit.report(&state, now).remaining, 0);
    }

    /// A fake clock: an instant well after the epoch, aligned to every window used here.
    const T0: u64 = 1_700_000_040 * S;

    fn limit(requests: u64, window_ns: u64, algorithm: Algorithm) -> Limit {
        Limit {
            name: "l".into(),
            requests,
            window_ns,
            algorithm,
        }
    }

    /// Runs one request through a limit like the filter does; returns whether it passed.
    fn hit(limit: &Limit, state: &mut State, now: u64) -> bool {
        let normalized = limit.normalize(*state, now);
        if limit.allows(&normalized, now) {
            *state = limit.consume(normalized, now);
            true
        } else {
            *state = normalized;
            false
        }
    }

    fn admitted(limit: &Limit, state: &mut State, now: u64, n: usize) -> usize {
        (0..n).filter(|_| hit(limit, state, now)).count()
    }

    #[test]
    fn fixed_window_counts_to_the_limit() {
        let l = limit(100, 60 * S, Algorithm::FixedWindow);
        let mut st = [0; 3];
        assert_eq!(admitted(&l, &mut st, T0 + 5 * S, 1000), 100);
        let r = l.report(&st, T0 + 5 * S);
        assert_eq!(r.remaining, 0);
        assert_eq!(r.reset_ns, Some(55 * S));
        assert_eq!(l.retry_after_ns(&st, T0 + 5 * S), 55 * S);
    }

    #[test]
    fn fixed_window_boundaries() {
        let l = limit(2, 10 * S, Algorithm::FixedWindow);
        let mut st = [0; 3];
        assert_eq!(
            admitted(&l, &mut st, T0 + 10 * S - 1, 5),
            2,
            "last ns of a window"
        );
        assert_eq!(l.retry_after_ns(&st, T0 + 10 * S - 1), 1);
        assert_eq!(
            admitted(&l, &mut st, T0 + 10 * S, 5),
            2,
            "first ns of the next"
        );
        let r = l.report(&st, T0 + 10 * S);
        assert_eq!((r.remaining, r.reset_ns), (0, Some(10 * S)));
        // Skipping several windows starts from zero as well.
        assert_eq!(admitted(&l, &mut st, T0 + 55 * S, 5), 2);
    }

    #[test]
    fn fixed_window_ignores_a_late_clock() {
        let l = limit(2, 10 * S, Algorithm::FixedWindow);
        let mut st = [0; 3];
        assert_eq!(admitted(&l, &mut st, T0 + 10 * S, 2), 2);
        // Another worker read the time just before the boundary: no reset to the old window.
        assert_eq!(admitted(&l, &mut st, T0 + 10 * S - 1, 2), 0);
    }

    #[test]
    fn token_bucket_burst_then_refill() {
        let l = limit(10, S, Algorithm::TokenBucket { burst: 20 });
        let mut st = [0; 3];
        assert_eq!(admitted(&l, &mut st, T0, 100), 20, "the burst");
        let r = l.report(&st, T0);
        assert_eq!((r.remaining, r.reset_ns), (0, Some(100 * MS)));
        assert_eq!(l.retry_after_ns(&st, T0), 100 * MS);
        assert_eq!(admitted(&l, &mut st, T0 + 99 * MS, 5), 0, "no token yet");
        assert_eq!(admitted(&l, &mut st, T0 + 100 * MS, 5), 1, "one token");
        assert_eq!(
            admitted(&l, &mut st, T0 + 650 * MS, 10),
            5,
            "5.5 tokens later"
        );
        // After a long pause the bucket is full again, never more than the burst.
        assert_eq!(admitted(&l, &mut st, T0 + 100 * S, 100), 20);
    }

    #[test]
    fn token_bucket_burst_defaults_to_requests_and_reports() {
        let l = limit(3, S, Algorithm::TokenBucket { burst: 3 });
        let mut st = [0; 3];
        let full = l.report(&st, T0);
        assert_eq!((full.remaining, full.reset_ns), (3, None));
        assert!(hit(&l, &mut st, T0));
        let r = l.report(&st, T0);
        // One token taken: the next one is back in a third of a second.
        assert_eq!(r.remaining, 2);
        assert_eq!(r.reset_ns, Some(333_333_334));
        assert_eq!(ceil_seconds(r.reset_ns.unwrap()), 1);
    }

    #[test]
    fn token_bucket_steady_rate_never_exceeds() {
        // 5 per second, burst 1: one request every 200 ms and never two in the same 200 ms.
        let l = limit(5, S, Algorithm::TokenBucket { burst: 1 });
        let mut st = [0; 3];
        let mut total = 0;
        for step in 0..1000u64 {
            total += admitted(&l, &mut st, T0 + step * 10 * MS, 3);
        }
        assert_eq!(total, 50, "10 s at 5/s with a burst of 1");
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        let l = limit(10, 10 * S, Algorithm::SlidingWindow);
        let mut st = [0; 3];
        assert_eq!(admitted(&l, &mut st, T0 + 5 * S, 20), 10);
        // 30% into the next window: 10 * 0.7 = 7 still count, so 3 more pass.
        assert_eq!(admitted(&l, &mut st, T0 + 13 * S, 20), 3);
        let r = l.report(&st, T0 + 13 * S);
        assert_eq!(r.remaining, 0);
        // used = 10 * 0.7 + 3 = 10; one more needs 1 unit of the previous weight: 1 s.
        assert_eq!(l.retry_after_ns(&st, T0 + 13 * S), S);
        assert_eq!(r.reset_ns, Some(S));
        assert_eq!(admitted(&l, &mut st, T0 + 14 * S - 1, 1), 0);
        assert_eq!(admitted(&l, &mut st, T0 + 14 * S, 1), 1);
        // Two windows later nothing of the past counts.
        assert_eq!(admitted(&l, &mut st, T0 + 35 * S, 20), 10);
    }

    #[test]
    fn sliding_window_retry_crosses_into_next_window() {
        let l = limit(4, 10 * S, Algorithm::SlidingWindow);
        let mut st = [0; 3];
        // The previous window is empty, the current one is full at 2 s: wait for its end, then
        // for 4 * (10 - e) / 10 + 1 <= 4, i.e. e >= 2.5 s.
        assert_eq!(admitted(&l, &mut st, T0 + 2 * S, 10), 4);
        let retry = l.retry_after_ns(&st, T0 + 2 * S);
        assert_eq!(retry, 8 * S + 2_500 * MS);
        assert_eq!(admitted(&l, &mut st, T0 + 2 * S + retry - 1, 1), 0);
        assert_eq!(admitted(&l, &mut st, T0 + 2 * S + retry, 1), 1);
        let r = l.report(&st, T0 + 2 * S + retry);
        assert_eq!(r.remaining, 0);
    }

    #[test]
    fn sliding_window_report_before_the_limit() {
        let l = limit(10, 60 * S, Algorithm::SlidingWindow);
        let mut st = [0; 3];
        assert!(hit(&l, &mut st, T0 + 15 * S));
        let r = l.report(&st, T0 + 15 * S);
        assert_eq!((r.remaining, r.reset_ns), (9, Some(45 * S)));
    }

    /// What a state decides at `t`: the report, the wait, and the state after one more request.
    fn behaviour(l: &Limit, state: State, t: u64) -> (Report, u64, State) {
        let normalized = l.normalize(state, t);
        (
            l.report(&normalized, t),
            l.retry_after_ns(&normalized, t),
            l.consume(normalized, t),
        )
    }

    /// From `idle_at` on a state acts exactly like a key never seen (so its slot entry may go to
    /// another key); one nanosecond before, it still counts.
    #[test]
    fn idle_at_is_when_a_state_stops_counting() {
        let limits = [
            limit(3, 10 * S, Algorithm::TokenBucket { burst: 3 }),
            limit(3, 10 * S, Algorithm::FixedWindow),
            limit(3, 10 * S, Algorithm::SlidingWindow),
        ];
        for l in &limits {
            assert_eq!(l.idle_at(&[0; 3]), 0, "{:?}: never seen", l.algorithm);
            for sent in 1..=4 {
                let mut st = [0; 3];
                admitted(l, &mut st, T0 + 2 * S, sent);
                let mut states = vec![st];
                if l.algorithm == Algorithm::SlidingWindow {
                    // Rolled into the next window: only the previous count weighs.
                    states.push(l.normalize(st, T0 + 12 * S));
                }
                for st in states {
                    let idle = l.idle_at(&st);
                    assert!(idle > T0 + 2 * S, "{:?} {st:?}", l.algorithm);
                    for t in [idle, idle + 1, idle + 7 * S, idle + 1000 * S] {
                        assert_eq!(
                            behaviour(l, st, t),
                            behaviour(l, [0; 3], t),
                            "{:?} {st:?} at idle_at + {}",
                            l.algorithm,
                            t - idle
                        );
                    }
                    assert_ne!(
                        behaviour(l, st, idle - 1).0,
                        behaviour(l, [0; 3], idle - 1).0,
                        "{:?} {st:?} still counts just before idle_at",
                        l.algorithm
                    );
                }
            }
        }
        let fixed = &limits[1];
        assert_eq!(fixed.idle_at(&[T0, 3, 0]), T0 + 10 * S);
        let sliding = &limits[2];
        assert_eq!(sliding.idle_at(&[T0, 1, 0]), T0 + 20 * S);
        assert_eq!(sliding.idle_at(&[T0, 0, 2]), T0 + 10 * S);
    }

    #[test]
    fn ceil_seconds_rounds_up() {
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(S), 1);
        assert_eq!(ceil_seconds(S + 1), 2);
    }

    /// Runs one request of `cost` units; returns whether it passed.
    fn hit_cost(limit: &Limit, state: &mut State, now: u64, cost: u64) -> bool {
        let normalized = limit.normalize(*state, now);
        if limit.retry_after_cost_ns(&normalized, now, cost) == 0 {
            *state = limit.consume_cost(normalized, now, cost);
            true
        } else {
            *state = normalized;
            false
        }
    }

    /// A request costing `c` takes exactly `c` units from every algorithm, and fits only when
    /// `c` units are there; a refund gives them back.
    #[test]
    fn costs_take_and_refunds_give_back_exactly() {
        let limits = [
            limit(10, 10 * S, Algorithm::TokenBucket { burst: 10 }),
            limit(10, 10 * S, Algorithm::FixedWindow),
            limit(10, 10 * S, Algorithm::SlidingWindow),
        ];
        for l in &limits {
            let mut st = [0; 3];
            assert!(hit_cost(l, &mut st, T0, 4), "{:?}", l.algorithm);
            assert_eq!(l.report(&st, T0).remaining, 6, "{:?}", l.algorithm);
            assert!(!hit_cost(l, &mut st, T0, 7), "{:?}: 7 > 6", l.algorithm);
            assert_eq!(l.report(&st, T0).remaining, 6, "a refusal takes nothing");
            assert!(hit_cost(l, &mut st, T0, 6), "{:?}", l.algorithm);
            assert_eq!(l.report(&st, T0).remaining, 0);
            let back = l.refund(st, T0, 6);
            assert_eq!(l.report(&back, T0).remaining, 6, "{:?}", l.algorithm);
            assert!(
                l.retry_after_cost_ns(&back, T0, 11) > 0,
                "over capacity never fits"
            );
            assert_eq!(l.capacity(), 10);
        }
        // Refunding after the window rolled over gives nothing back to the new window.
        let fixed = &limits[1];
        let mut st = [0; 3];
        assert!(hit_cost(fixed, &mut st, T0, 10));
        let later = fixed.normalize(st, T0 + 10 * S);
        assert_eq!(fixed.refund(later, T0 + 10 * S, 10), later);
        // A token bucket's wait for a costly request: the tokens missing, one interval each.
        let tb = &limits[0];
        let mut st = [0; 3];
        assert!(hit_cost(tb, &mut st, T0, 10));
        assert_eq!(tb.retry_after_cost_ns(&st, T0, 3), 3 * S);
        // Sliding window: a full previous window weighs 10 * (1 - e): 3 units fit from 30%.
        let sw = &limits[2];
        let mut st = [0; 3];
        assert!(hit_cost(sw, &mut st, T0, 10));
        let next = sw.normalize(st, T0 + 10 * S);
        assert_eq!(sw.retry_after_cost_ns(&next, T0 + 10 * S, 3), 3 * S);
        assert!(!hit_cost(sw, &mut st, T0 + 13 * S - 1, 3));
        assert!(hit_cost(sw, &mut st, T0 + 13 * S, 3));
    }
}

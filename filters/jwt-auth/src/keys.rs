//! Each worker's view of the remote key sets: read from shared data when another worker fetched
//! new keys, fetched by one worker when due (claimed with a CAS), refetched on an unknown `kid`.

use crate::config::{Config, KeySource, RemoteJwks};
use crate::decide::Keys;
use crate::jwks::Jwks;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use wasmgate_core::fetched::SharedFetch;
use wasmgate_core::host::Host;
use wasmgate_core::Callout;

/// When nothing waits and the keys are there, shared data is read this often.
pub const IDLE_SYNC_MS: u64 = 1_000;

/// A worker's view of one remote provider's keys.
#[derive(Default, Clone)]
struct RemoteView {
    generation: u64,
    completed: u64,
    fetched_at: u64,
    jwks: Option<Rc<Jwks>>,
}

/// The remote key sets as one worker sees them, and its fetches in flight.
#[derive(Default)]
pub struct RemoteKeys {
    /// By provider index (local providers keep an empty view).
    views: RefCell<Vec<RemoteView>>,
    fetching: RefCell<Vec<usize>>,
    last_sync_ms: Cell<u64>,
}

/// Every remote provider with its index.
pub fn remotes(config: &Config) -> Vec<(usize, RemoteJwks)> {
    config
        .providers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match &p.keys {
            KeySource::Remote(r) => Some((i, r.clone())),
            KeySource::Local(_) | KeySource::Introspection(_) => None,
        })
        .collect()
}

/// The shared-data key holding just the generation of a provider's key set.
pub fn generation_key(shared_key: &str) -> String {
    format!("{shared_key}.generation")
}

/// The generation of a provider's shared key set (a cheap read on every request).
fn shared_generation(host: &dyn Host, shared_key: &str) -> Option<u64> {
    let (bytes, _) = host.get_shared(&generation_key(shared_key)).ok()?;
    std::str::from_utf8(&bytes?).ok()?.parse().ok()
}

/// Creates a remote provider's shared value if it does not exist yet; true when it existed.
pub fn ensure_shared(host: &dyn Host, key: &str) -> bool {
    match host.get_shared(key) {
        Ok((Some(_), Some(_))) => true,
        _ => {
            let _ = host.set_shared(key, &SharedFetch::default().encode(), None);
            false
        }
    }
}

/// The request that fetches a provider's JWKS.
pub fn fetch_request(remote: &RemoteJwks) -> Callout {
    let scheme = if remote.uri.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let header = |n: &str, v: &str| (n.to_string(), v.to_string());
    Callout::Http {
        cluster: remote.cluster.clone(),
        headers: vec![
            header(":method", "GET"),
            header(":path", &remote.path),
            header(":authority", &remote.authority),
            header(":scheme", scheme),
            header("accept", "application/json"),
        ],
        body: None,
        trailers: Vec::new(),
        timeout: remote.timeout,
    }
}

/// The request that fetches the key set a discovery document named.
pub fn jwks_request(target: &crate::discovery::JwksTarget, timeout: Duration) -> Callout {
    let header = |n: &str, v: &str| (n.to_string(), v.to_string());
    Callout::Http {
        cluster: target.cluster.clone(),
        headers: vec![
            header(":method", "GET"),
            header(":path", &target.path),
            header(":authority", &target.authority),
            header(":scheme", target.scheme),
            header("accept", "application/json"),
        ],
        body: None,
        trailers: Vec::new(),
        timeout,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RemoteKeys {
    /// Reads a remote provider's shared value and updates this worker's view.
    fn sync(&self, host: &dyn Host, index: usize, remote: &RemoteJwks) -> RemoteView {
        let bytes = host
            .get_shared(&remote.shared_key)
            .ok()
            .and_then(|(b, _)| b)
            .unwrap_or_default();
        let shared = SharedFetch::decode(&bytes);
        let mut views = self.views.borrow_mut();
        if views.len() <= index {
            views.resize_with(index + 1, RemoteView::default);
        }
        let Some(view) = views.get_mut(index) else {
            return RemoteView::default();
        };
        if shared.generation != view.generation || view.jwks.is_none() {
            if let Some(text) = &shared.document {
                match Jwks::parse_limited(text, &remote.limits) {
                    Ok(jwks) => {
                        view.jwks = Some(Rc::new(jwks));
                        view.generation = shared.generation;
                    }
                    Err(reason) => log::warn!(
                        "wasmgate jwt-auth: shared JWKS of {} unusable: {reason}",
                        remote.uri
                    ),
                }
            }
        }
        view.completed = shared.completed;
        view.fetched_at = shared.fetched_at;
        view.clone()
    }

    /// Reads every remote provider's shared value.
    pub fn sync_all(&self, host: &dyn Host, config: &Config) {
        for (index, remote) in remotes(config) {
            self.sync(host, index, &remote);
        }
    }

    /// The keys of provider `index`, reloaded first when another worker fetched new ones.
    pub fn keys(&self, host: &dyn Host, config: &Config, index: usize) -> Keys {
        let Some(provider) = config.providers.get(index) else {
            return Keys::Unavailable;
        };
        let remote = match &provider.keys {
            KeySource::Local(jwks) => {
                return Keys::Ready {
                    jwks: Rc::clone(jwks),
                    generation: 0,
                }
            }
            KeySource::Remote(remote) => remote,
            KeySource::Introspection(_) => return Keys::Unavailable,
        };
        let known = self.views.borrow().get(index).cloned().unwrap_or_default();
        // Keys not here yet, or another worker fetched new ones: reload before deciding.
        let changed = shared_generation(host, &remote.shared_key)
            .is_some_and(|generation| generation != known.generation);
        let now = host.now_ms();
        let stale = |v: &RemoteView| {
            SharedFetch::too_stale(
                v.fetched_at,
                now,
                millis(remote.cache_duration),
                remote.max_stale_ms,
            )
        };
        // Keys too old by this worker's view: another worker may have refreshed them since.
        let view = if known.jwks.is_none() || changed || stale(&known) {
            self.sync(host, index, remote)
        } else {
            known
        };
        if view.jwks.is_some() && stale(&view) {
            log::debug!(
                "wasmgate jwt-auth: the keys of {} are older than cache_duration + max_stale; not used",
                remote.uri
            );
            return Keys::Unavailable;
        }
        match view.jwks {
            Some(jwks) => Keys::Ready {
                jwks,
                generation: view.generation,
            },
            None if view.completed == 0 => Keys::Pending,
            None => Keys::Unavailable,
        }
    }

    /// Seconds since each remote key set in use was fetched, by provider index (providers
    /// without keys yet left out), for the key-age gauges.
    pub fn ages_seconds(&self, now_ms: u64) -> Vec<(usize, u64)> {
        self.views
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, v)| v.jwks.is_some() && v.fetched_at > 0)
            .map(|(i, v)| (i, now_ms.saturating_sub(v.fetched_at) / 1000))
            .collect()
    }

    /// What a waiting request saw: each provider's generation and completed fetches.
    pub fn snapshot(&self, config: &Config) -> Vec<(u64, u64)> {
        let views = self.views.borrow();
        (0..config.providers.len())
            .map(|i| views.get(i).map_or((0, 0), |v| (v.generation, v.completed)))
            .collect()
    }

    /// True when the periodic work can be skipped: nothing waits or is fetched, every key set
    /// is here, and shared data was read less than [`IDLE_SYNC_MS`] ago.
    pub fn idle(&self, config: &Config, waiting: usize, now: u64) -> bool {
        let all_fetched = remotes(config).iter().all(|(i, _)| {
            self.views
                .borrow()
                .get(*i)
                .is_some_and(|v| v.jwks.is_some())
        });
        let busy = waiting > 0 || !self.fetching.borrow().is_empty();
        !busy && all_fetched && now < self.last_sync_ms.get().saturating_add(IDLE_SYNC_MS)
    }

    /// Notes a periodic sync at `now`.
    pub fn synced(&self, now: u64) {
        self.last_sync_ms.set(now);
    }

    /// The providers whose fetch is due, each claimed with a CAS so one worker fetches it.
    pub fn claim_fetches(&self, host: &dyn Host, config: &Config, now: u64) -> Vec<usize> {
        let mut claimed = Vec::new();
        for (index, remote) in remotes(config) {
            if self.fetching.borrow().contains(&index) {
                continue;
            }
            // Claims only ever CAS an existing value: a value created now is claimed at a later
            // tick, so another worker's unconditional create can never overwrite a claim.
            if !ensure_shared(host, &remote.shared_key) {
                continue;
            }
            let cache_ms = millis(remote.cache_duration);
            // Discovery then the key set: two fetches under one claim.
            let fetches = if remote.discovery.is_some() { 2 } else { 1 };
            let timeout_ms = millis(remote.timeout).saturating_mul(fetches);
            let won = wasmgate_core::shared::update(host, &remote.shared_key, |bytes| {
                let mut shared = SharedFetch::decode(bytes);
                if shared.due(now, cache_ms) {
                    shared.claim(now, timeout_ms);
                    (Some(shared.encode()), true)
                } else {
                    (None, false)
                }
            })
            .unwrap_or(false);
            if won {
                self.fetching.borrow_mut().push(index);
                claimed.push(index);
            }
        }
        claimed
    }

    /// Stores a fetch's result in shared data for every worker, then in this worker's view.
    pub fn finish_fetch(
        &self,
        host: &dyn Host,
        index: usize,
        remote: &RemoteJwks,
        result: &Result<String, String>,
    ) {
        self.fetching.borrow_mut().retain(|i| *i != index);
        let now = host.now_ms();
        let generation = wasmgate_core::shared::update(host, &remote.shared_key, |bytes| {
            let mut shared = SharedFetch::decode(bytes);
            match result {
                Ok(text) => shared.succeeded(now, text.clone()),
                Err(_) => shared.failed(now, remote.retry_base_ms, remote.retry_max_ms),
            }
            (Some(shared.encode()), shared.generation)
        });
        if let Ok(generation) = generation {
            // Every worker compares this small value on each request and reloads on a change.
            let _ = host.set_shared(
                &generation_key(&remote.shared_key),
                generation.to_string().as_bytes(),
                None,
            );
        }
        self.sync(host, index, remote);
    }
}

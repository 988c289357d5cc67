//! Read-modify-write of Envoy shared data with compare-and-swap retries.
//!
//! Shared data is one key/value map per VM id, shared by every worker of an Envoy process. A
//! write carrying the CAS token of the value it read fails if another worker wrote in between;
//! [`update`] then reads again and recomputes, so concurrent updates are never lost. One caveat
//! of the host: a key that does not exist yet is created unconditionally, so two workers creating
//! the same key at the same instant can race once; [`update`] narrows that by creating an empty
//! value first and only then updating it with CAS.

/// Outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Another writer changed the value since it was read.
    CasMismatch,
    /// The host refused the write for another reason.
    Failed,
}

/// Why [`update`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost the race to another writer.
    Contended,
    /// The host refused a read or a write.
    HostError,
}

/// The shared-data calls [`update`] needs; implemented by the real host and by test doubles.
pub trait SharedStore {
    /// The value and its CAS token, or `(None, None)` when the key does not exist.
    fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError>;
    /// Writes `value` if the key's CAS token still equals `cas` (`None`: unconditionally).
    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// The CAS token used to create a missing key. Envoy hands out CAS tokens from one counter
/// starting at 1, so an existing key holds this token only after 2^32 - 1 writes, and even then
/// the create is only wrong if that exact key was created concurrently.
pub const CREATE_CAS: u32 = u32::MAX;

/// How many times [`update`] re-reads after losing a CAS race before it gives up.
pub const MAX_CAS_ATTEMPTS: usize = 64;

/// Applies `change` to the current value (`&[]` when new) and writes the result with CAS,
/// retrying on contention. `change` returns the new value (or `None` to leave it untouched) and
/// a result handed back to the caller. It may run several times and must not have side effects.
pub fn update<S, T>(
    store: &S,
    key: &str,
    mut change: impl FnMut(&[u8]) -> (Option<Vec<u8>>, T),
) -> Result<T, UpdateError>
where
    S: SharedStore + ?Sized,
{
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get_shared(key).map_err(|_| UpdateError::HostError)?;
        // The proxy-wasm SDK reports an existing empty value as `(None, Some(cas))`: only a
        // missing CAS token means the key does not exist.
        let Some(cas) = cas else {
            // Create the key with a CAS token no existing key holds: the host creates a missing
            // key whatever the token, but if another worker created it since our read, the write
            // fails instead of overwriting (and so losing) that worker's update.
            match store.set_shared(key, &[], Some(CREATE_CAS)) {
                Ok(()) | Err(SetError::CasMismatch) => continue,
                Err(SetError::Failed) => return Err(UpdateError::HostError),
            }
        };
        let current = value.unwrap_or_default();
        let (new_value, result) = change(&current);
        let Some(new_value) = new_value else {
            return Ok(result);
        };
        match store.set_shared(key, &new_value, Some(cas)) {
            Ok(()) => return Ok(result),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return Err(UpdateError::HostError),
        }
    }
    Err(UpdateError::Contended)
}

/// Where a filter's shared-data keys live: `wasmgate/<filter>/<plugin name>/...`, so two
/// filters, or two plugins of one filter, never read each other's keys.
///
/// What survives a configuration change is chosen per namespace: [`Namespace::plugin`] keys stay
/// (a rate-limit counter keeps counting when an unrelated field changes; the filter adds what
/// must reset, such as a rule's fingerprint, to its own keys), [`Namespace::configuration`] keys
/// start afresh with every new configuration (replay ids, retry budgets, circuit state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// Keys that outlive configuration changes of one plugin.
    pub fn plugin(filter: &str, plugin: &str) -> Self {
        Self(format!("wasmgate/{filter}/{plugin}"))
    }

    /// Keys of one configuration of one plugin: a changed configuration gets new keys.
    pub fn configuration(filter: &str, plugin: &str, configuration: &[u8]) -> Self {
        Self(format!(
            "wasmgate/{filter}/{plugin}/{:016x}",
            crate::fnv1a(configuration)
        ))
    }

    /// The key for one purpose (`"budget"`, `"slot.17"`).
    pub fn key(&self, purpose: &str) -> String {
        format!("{}/{purpose}", self.0)
    }

    /// The namespace itself, for filters that build many keys under it.
    pub fn prefix(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    fn counter(bytes: &[u8]) -> u64 {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn increments_from_empty() {
        let host = FakeHost::default();
        for expected in 1..=3 {
            let n = update(&host, "k", |v| {
                let n = counter(v) + 1;
                (Some(n.to_string().into_bytes()), n)
            })
            .unwrap();
            assert_eq!(n, expected);
        }
    }

    #[test]
    fn retries_after_a_concurrent_write() {
        let host = FakeHost::default();
        host.set_shared("k", b"10", None).unwrap();
        let mut first = true;
        let n = update(&host, "k", |v| {
            if first {
                first = false;
                // Another worker writes between our read and our write.
                host.set_shared("k", b"20", None).unwrap();
            }
            let n = counter(v) + 1;
            (Some(n.to_string().into_bytes()), n)
        })
        .unwrap();
        assert_eq!(n, 21);
    }

    #[test]
    fn gives_up_when_always_contended() {
        let host = FakeHost::default();
        let result = update(&host, "k", |_| {
            host.set_shared("k", b"x", None).unwrap();
            (Some(b"y".to_vec()), ())
        });
        assert_eq!(result, Err(UpdateError::Contended));
    }

    /// Two workers see a missing key; the second one's create must not wipe the first one's update.
    #[test]
    fn first_touch_race_loses_no_update() {
        struct RacingStore<'a> {
            host: &'a FakeHost,
            first_get: std::cell::Cell<bool>,
        }
        impl SharedStore for RacingStore<'_> {
            fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
                if self.first_get.replace(false) {
                    // Our read sees the key missing; then the other worker creates it and counts.
                    update(self.host, key, |v| {
                        let n = counter(v) + 1;
                        (Some(n.to_string().into_bytes()), n)
                    })
                    .unwrap();
                    return Ok((None, None));
                }
                self.host.get_shared(key)
            }
            fn set_shared(
                &self,
                key: &str,
                value: &[u8],
                cas: Option<u32>,
            ) -> Result<(), SetError> {
                self.host.set_shared(key, value, cas)
            }
        }
        let host = FakeHost::default();
        let racing = RacingStore {
            host: &host,
            first_get: std::cell::Cell::new(true),
        };
        let n = update(&racing, "k", |v| {
            let n = counter(v) + 1;
            (Some(n.to_string().into_bytes()), n)
        })
        .unwrap();
        assert_eq!(n, 2, "both increments count");
    }

    /// The proxy-wasm SDK returns `(None, Some(cas))` for a key holding an empty value.
    #[test]
    fn empty_value_reported_without_bytes_is_an_existing_key() {
        struct SdkShaped(FakeHost);
        impl SharedStore for SdkShaped {
            fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
                let (value, cas) = self.0.get_shared(key)?;
                Ok((value.filter(|v| !v.is_empty()), cas))
            }
            fn set_shared(
                &self,
                key: &str,
                value: &[u8],
                cas: Option<u32>,
            ) -> Result<(), SetError> {
                self.0.set_shared(key, value, cas)
            }
        }
        let store = SdkShaped(FakeHost::default());
        for expected in 1..=2 {
            let n = update(&store, "k", |v| {
                let n = counter(v) + 1;
                (Some(n.to_string().into_bytes()), n)
            })
            .unwrap();
            assert_eq!(n, expected);
        }
    }

    #[test]
    fn namespaces_separate_filters_plugins_and_configurations() {
        let a = Namespace::plugin("rate-limit", "p1");
        assert_eq!(a.key("slot.1"), "wasmgate/rate-limit/p1/slot.1");
        assert_ne!(a, Namespace::plugin("rate-limit", "p2"));
        assert_ne!(a, Namespace::plugin("retry", "p1"));
        let c1 = Namespace::configuration("retry", "p1", b"{}");
        assert_eq!(c1, Namespace::configuration("retry", "p1", b"{}"));
        assert_ne!(c1, Namespace::configuration("retry", "p1", b"{\"a\":1}"));
    }

    #[test]
    fn no_write_when_change_returns_none() {
        let host = FakeHost::default();
        host.set_shared("k", b"7", None).unwrap();
        let n = update(&host, "k", |v| (None, counter(v))).unwrap();
        assert_eq!(n, 7);
    }
}

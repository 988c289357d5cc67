//! What logic reads from the host, as a trait: the real host lives in crate `wasmgate-host`, and
//! [`FakeHost`] here lets every decision be tested natively.

use crate::clock::Clock;
use crate::rules::RequestInfo;
use crate::shared::{SetError, SharedStore};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::SystemTime;

/// A header map of the current stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderMap {
    /// Request headers, pseudo-headers included.
    Request,
    /// Request trailers.
    RequestTrailers,
    /// Response headers, `:status` included.
    Response,
    /// Response trailers.
    ResponseTrailers,
}

/// What a filter's logic reads from the host while it decides: header maps, properties, shared
/// data, the clock and foreign functions. Everything it changes it returns as values (see
/// [`crate::outcome`]); the frame (crate `wasmgate-host`) writes them.
pub trait Host: SharedStore + Clock {
    /// Every header of a map as text, names lowercase (see [`lossy_text`]).
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)>;
    /// The first value of one header of a map.
    fn header(&self, map: HeaderMap, name: &str) -> Option<String> {
        self.headers(map)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    /// A host property such as `["xds", "route_name"]` or `["source", "address"]`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Calls a host foreign function (`verify_signature`, `clear_route_cache`); `None` if absent.
    fn call_foreign(&self, name: &str, args: &[u8]) -> Option<Vec<u8>>;

    /// All request headers (pseudo-headers included), names lowercase.
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers(HeaderMap::Request)
    }

    /// The first value of one request header.
    fn request_header(&self, name: &str) -> Option<String> {
        self.header(HeaderMap::Request, name)
    }

    /// A property as UTF-8 text.
    fn property_string(&self, path: &[&str]) -> Option<String> {
        self.property(path)
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    /// Now in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        crate::clock::unix_nanos(self.now()) / 1_000_000
    }
}

/// What rule matching needs, read from the host once per request. The route name is read only
/// when `with_route` is true (see [`crate::rules::needs_route`]): an Envoy property read costs
/// several microseconds per request, more than the rest of a typical filter's work.
pub fn request_info<H: Host + ?Sized>(host: &H, with_route: bool) -> RequestInfo {
    request_info_reading(host, with_route, &HeaderNeeds::All)
}

/// The request headers a filter's decision reads: every one, or only the named ones (lowercase,
/// pseudo-headers included). Each host call costs microseconds and reading the whole map costs
/// about as much as three single reads (`make bench`, the probe rows), so a filter whose rules
/// and keys read a few names asks for just those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HeaderNeeds {
    /// The whole header map, in one call.
    #[default]
    All,
    /// Only these names, one call each (first value only, as [`RequestInfo::header`] reads).
    Only(Vec<String>),
}

impl HeaderNeeds {
    /// Single reads pay off up to this many names.
    pub const MAX_SINGLE_READS: usize = 2;

    /// `names` without repeats while they are at most [`Self::MAX_SINGLE_READS`]; else `All`.
    pub fn only(names: impl IntoIterator<Item = String>) -> Self {
        let mut unique: Vec<String> = Vec::new();
        for name in names {
            if !unique.contains(&name) {
                unique.push(name);
            }
        }
        if unique.len() > Self::MAX_SINGLE_READS {
            Self::All
        } else {
            Self::Only(unique)
        }
    }
}

/// [`request_info`] reading only the headers in `needs`; the others look absent.
pub fn request_info_reading<H: Host + ?Sized>(
    host: &H,
    with_route: bool,
    needs: &HeaderNeeds,
) -> RequestInfo {
    let headers = match needs {
        HeaderNeeds::All => host.request_headers(),
        HeaderNeeds::Only(names) => names
            .iter()
            .filter_map(|name| host.request_header(name).map(|value| (name.clone(), value)))
            .collect(),
    };
    let route = if with_route { route_name(host) } else { None };
    RequestInfo::from_headers(route, headers)
}

/// The route name: current Envoy exposes it as `xds.route_name`; `route_name` is the older
/// attribute (empty in current Envoy), kept as a fallback for older hosts.
pub fn route_name<H: Host + ?Sized>(host: &H) -> Option<String> {
    host.property_string(&["xds", "route_name"])
        .filter(|r| !r.is_empty())
        .or_else(|| host.property_string(&["route_name"]))
}

/// Header bytes as text: HTTP allows header values that are not UTF-8 (obs-text bytes such as
/// Latin-1), so invalid sequences become U+FFFD instead of failing the stream.
pub fn lossy_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// True when a value read by [`lossy_text`] had bytes that are not UTF-8: it must not be written
/// back, since it no longer holds the bytes the client sent.
pub fn was_lossy(value: &str) -> bool {
    value.contains(char::REPLACEMENT_CHARACTER)
}

/// An in-memory host for unit tests of glue code and of shared-data logic.
#[derive(Debug)]
pub struct FakeHost {
    /// Request headers the filter will see.
    pub headers: Vec<(String, String)>,
    /// Response headers the filter will see.
    pub response_headers: Vec<(String, String)>,
    /// Properties by their path joined with `.` (`"source.address"`).
    pub properties: HashMap<String, Vec<u8>>,
    /// The time the host reports.
    pub now: SystemTime,
    /// Foreign functions the host offers, as canned answers.
    pub foreign: HashMap<String, Vec<u8>>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: RefCell<u32>,
}

impl Default for FakeHost {
    fn default() -> Self {
        Self {
            headers: Vec::new(),
            response_headers: Vec::new(),
            properties: HashMap::new(),
            now: SystemTime::UNIX_EPOCH,
            foreign: HashMap::new(),
            shared: RefCell::new(HashMap::new()),
            next_cas: RefCell::new(1),
        }
    }
}

impl FakeHost {
    /// A host whose request has these method, authority and path.
    pub fn with_request(method: &str, authority: &str, path: &str) -> Self {
        Self {
            headers: vec![
                (":method".into(), method.into()),
                (":authority".into(), authority.into()),
                (":path".into(), path.into()),
            ],
            ..Self::default()
        }
    }
}

impl SharedStore for FakeHost {
    fn get_shared(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), SetError> {
        Ok(match self.shared.borrow().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    /// Same semantics as Envoy: a CAS of 0/None writes unconditionally, a missing key is created.
    fn set_shared(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let mut shared = self.shared.borrow_mut();
        if let (Some((_, current)), Some(expected)) = (shared.get(key), cas.filter(|c| *c != 0)) {
            if *current != expected {
                return Err(SetError::CasMismatch);
            }
        }
        let mut next = self.next_cas.borrow_mut();
        *next += 1;
        shared.insert(key.to_string(), (value.to_vec(), *next));
        Ok(())
    }
}

impl Clock for FakeHost {
    fn now(&self) -> SystemTime {
        self.now
    }
}

impl Host for FakeHost {
    fn headers(&self, map: HeaderMap) -> Vec<(String, String)> {
        match map {
            HeaderMap::Request => self.headers.clone(),
            HeaderMap::Response => self.response_headers.clone(),
            HeaderMap::RequestTrailers | HeaderMap::ResponseTrailers => Vec::new(),
        }
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties.get(&path.join(".")).cloned()
    }

    fn call_foreign(&self, name: &str, _args: &[u8]) -> Option<Vec<u8>> {
        self.foreign.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_info_from_host() {
        let mut host = FakeHost::with_request("GET", "Example.com:80", "/a/b?x=1");
        host.headers.push(("x-k".into(), "v".into()));
        host.properties.insert("route_name".into(), b"r1".to_vec());
        assert_eq!(
            request_info(&host, false).route,
            None,
            "read only when asked"
        );
        let info = request_info(&host, true);
        assert_eq!(info.route.as_deref(), Some("r1"));
        assert_eq!(info.host, "example.com");
        assert_eq!(info.path, "/a/b");
        assert_eq!(info.method, "GET");
        assert_eq!(host.request_header("X-K").as_deref(), Some("v"));
        host.properties
            .insert("xds.route_name".into(), b"r2".to_vec());
        assert_eq!(
            request_info(&host, true).route.as_deref(),
            Some("r2"),
            "xds.route_name first"
        );
    }

    #[test]
    fn header_bytes_that_are_not_utf8_become_replacement_characters() {
        assert_eq!(lossy_text(b"caf\xe9".to_vec()), "caf\u{fffd}");
        assert_eq!(lossy_text(b"plain".to_vec()), "plain");
        assert!(was_lossy(&lossy_text(vec![0xff])));
        assert!(!was_lossy("plain"));
    }

    #[test]
    fn request_info_reads_only_the_needed_headers() {
        let mut host = FakeHost::with_request("GET", "example.com", "/a?x=1");
        host.headers.push(("x-k".into(), "v".into()));
        let needs = HeaderNeeds::only([":path".to_string(), "x-k".to_string(), "x-k".to_string()]);
        assert_eq!(
            needs,
            HeaderNeeds::Only(vec![":path".into(), "x-k".into()]),
            "repeats dropped"
        );
        let info = request_info_reading(&host, false, &needs);
        assert_eq!(info.path, "/a");
        assert_eq!(info.header("x-k"), Some("v"));
        assert_eq!(info.host, "", "not read");
        assert_eq!(info.method, "", "not read");
        let many = (0..=HeaderNeeds::MAX_SINGLE_READS).map(|i| format!("h{i}"));
        assert_eq!(HeaderNeeds::only(many), HeaderNeeds::All);
    }

    #[test]
    fn fake_shared_data_cas() {
        let host = FakeHost::default();
        host.set_shared("k", b"a", None).unwrap();
        let (_, cas) = host.get_shared("k").unwrap();
        host.set_shared("k", b"b", cas).unwrap();
        assert_eq!(host.set_shared("k", b"c", cas), Err(SetError::CasMismatch));
    }
}

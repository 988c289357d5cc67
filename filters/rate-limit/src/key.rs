//! Building a request's rate-limit key from the rule's key parts.

use wasmgate_core::RequestInfo;

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address: the downstream address, or an X-Forwarded-For entry.
    ClientIp,
    /// A request header's first value (name lowercase).
    Header(String),
    /// A query parameter's first value, as sent (not percent-decoded).
    Query(String),
    /// The path without its query string.
    Path,
    /// The method.
    Method,
    /// Envoy's route name.
    Route,
    /// A fixed string.
    Constant(String),
}

/// What the key builder reads besides [`RequestInfo`].
#[derive(Debug, Clone)]
pub struct KeyInput<'a> {
    /// The rule-matching view of the request.
    pub info: &'a RequestInfo,
    /// The `source.address` property (`ip:port`).
    pub source_address: Option<&'a str>,
    /// Trusted proxies in front of Envoy.
    pub xff_num_trusted_hops: u32,
    /// How clients' addresses are grouped (`client_ip.ipv4_prefix` / `ipv6_prefix`).
    pub prefixes: Prefixes,
}

/// The network prefix lengths a client address is cut to (`client_ip.ipv4_prefix`,
/// `client_ip.ipv6_prefix`): every address of one network counts as one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefixes {
    /// 1 to 32.
    pub ipv4: u8,
    /// 1 to 128.
    pub ipv6: u8,
}

impl Default for Prefixes {
    /// Whole IPv4 addresses; IPv6 /64 networks (the smallest network an ISP or cloud assigns a
    /// customer, so one customer cannot take a fresh quota per address).
    fn default() -> Self {
        Self { ipv4: 32, ipv6: 64 }
    }
}

/// `address` cut to its network: `2001:db8:1:2::/64`, `10.1.0.0/16`; unchanged when the prefix
/// keeps the whole address or `address` is not an IP (an X-Forwarded-For entry is whatever the
/// trusted proxy wrote). An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, a dual-stack socket's
/// view of an IPv4 client) is an IPv4 address: it gets the IPv4 prefix, so such clients do not
/// all share the one /64 `::ffff:0:0`.
pub fn mask(address: String, prefixes: Prefixes) -> String {
    use std::net::{IpAddr, Ipv4Addr};
    // Whole IPv4 addresses (the default) need no parsing: an IPv4 address has no ':' (an
    // IPv4-mapped IPv6 address has, and is parsed).
    if prefixes.ipv4 >= 32 && !address.contains(':') {
        return address;
    }
    let v4 = |ip: Ipv4Addr| -> Option<String> {
        let len = prefixes.ipv4.min(32);
        (len < 32).then(|| {
            let bits = u32::from(ip) & (u32::MAX << (32 - u32::from(len)));
            format!("{}/{len}", Ipv4Addr::from(bits))
        })
    };
    let masked = match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => v4(ip),
        Ok(IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
            Some(ip) => v4(ip).or_else(|| Some(ip.to_string())),
            None => {
                let len = prefixes.ipv6.min(128);
                (len < 128).then(|| {
                    let bits = u128::from(ip) & (u128::MAX << (128 - u32::from(len)));
                    v6_network(bits, len)
                })
            }
        },
        Err(_) => None,
    };
    masked.unwrap_or(address)
}

/// A masked IPv6 network as `2001:db8:1:2::/64`: the groups up to the last one that is not zero,
/// then `::` for the zero groups after it (one canonical form per network; std's `Display`, which
/// also compresses inner zeros, costs the module more than this).
fn v6_network(bits: u128, len: u8) -> String {
    use std::fmt::Write;
    let groups: [u16; 8] = std::array::from_fn(|i| (bits >> (112 - 16 * i)) as u16);
    let used = groups.iter().rposition(|g| *g != 0).map_or(0, |i| i + 1);
    let mut out = String::with_capacity(44);
    for (i, group) in groups[..used].iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{group:x}");
    }
    if used < 8 {
        out.push_str("::");
    }
    let _ = write!(out, "/{len}");
    out
}

/// The client's address as the `client_ip` part finds it, cut to its network.
pub fn client_ip(input: &KeyInput<'_>) -> Option<String> {
    input
        .info
        .client_ip(input.source_address, input.xff_num_trusted_hops)
        .map(|ip| mask(ip, input.prefixes))
}

/// What stands for a missing part under `on_missing_key: "client_ip"`: the client's address
/// (or, when the `client_ip` part itself is missing, the downstream address Envoy saw).
pub fn fallback(input: &KeyInput<'_>) -> Option<String> {
    client_ip(input).or_else(|| {
        input
            .info
            .client_ip(input.source_address, 0)
            .map(|ip| mask(ip, input.prefixes))
    })
}

/// The joined key, or the first missing part's description.
pub fn build(parts: &[KeyPart], input: &KeyInput<'_>) -> Result<String, &'static str> {
    let mut key = String::new();
    for part in parts {
        push(&mut key, &value(part, input)?);
    }
    Ok(key)
}

/// The joined key with every missing part replaced by `fallback` (`on_missing_key:
/// "client_ip"`), marked so that no request value can equal it: a client sending the header
/// `x-api-key: 10.0.0.1` does not share the quota of keyless requests from 10.0.0.1.
pub fn build_with_fallback(parts: &[KeyPart], input: &KeyInput<'_>, fallback: &str) -> String {
    let mut key = String::new();
    for part in parts {
        match value(part, input) {
            Ok(value) => push(&mut key, &value),
            // Not length-prefixed: a length-prefixed part starts with a digit, this with `!`.
            Err(_) => {
                key.push_str("!ip:");
                push(&mut key, fallback);
            }
        }
    }
    key
}

/// Appends one part, length-prefixed, so no value can forge the boundary between two parts.
fn push(key: &mut String, value: &str) {
    use std::fmt::Write;
    let _ = write!(key, "{}:{value};", value.len());
}

/// One key part's value, or the part's description when the request lacks it.
pub fn value(part: &KeyPart, input: &KeyInput<'_>) -> Result<String, &'static str> {
    Ok(match part {
        KeyPart::ClientIp => client_ip(input).ok_or("client_ip")?,
        KeyPart::Header(name) => input
            .info
            .header(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or("header")?,
        KeyPart::Query(name) => input
            .info
            .query_raw(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or("query")?,
        KeyPart::Path => input.info.path.clone(),
        KeyPart::Method => input.info.method.clone(),
        KeyPart::Route => input.info.route.clone().ok_or("route")?,
        KeyPart::Constant(c) => c.clone(),
    })
}

/// The descriptor entry key a part is sent under to a rate limit service: `client_ip` ->
/// `remote_address`, `{"header": h}` -> `h`, `{"query": q}` -> `q`, `path` -> `path`,
/// `method` -> `method`, `route` -> `route`, `{"constant": c}` -> `generic_key` (value `c`),
/// the names Envoy's own rate limit actions use where it has one.
pub fn descriptor_key(part: &KeyPart) -> &str {
    match part {
        KeyPart::ClientIp => "remote_address",
        KeyPart::Header(name) | KeyPart::Query(name) => name,
        KeyPart::Path => "path",
        KeyPart::Method => "method",
        KeyPart::Route => "route",
        KeyPart::Constant(_) => "generic_key",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(headers: &[(&str, &str)]) -> RequestInfo {
        RequestInfo::new(
            Some("r1".into()),
            "example.com",
            "/a/b?x=1&tenant=acme&e=",
            "GET",
            std::iter::once(&(":path", "/a/b?x=1&tenant=acme&e="))
                .chain(headers)
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn input<'a>(info: &'a RequestInfo, hops: u32) -> KeyInput<'a> {
        KeyInput {
            info,
            source_address: Some("10.0.0.1:5555"),
            xff_num_trusted_hops: hops,
            prefixes: Prefixes::default(),
        }
    }

    #[test]
    fn joins_every_part() {
        let i = info(&[("x-user", "bob")]);
        let parts = [
            KeyPart::ClientIp,
            KeyPart::Header("x-user".into()),
            KeyPart::Query("tenant".into()),
            KeyPart::Path,
            KeyPart::Method,
            KeyPart::Route,
            KeyPart::Constant("c".into()),
        ];
        assert_eq!(
            build(&parts, &input(&i, 0)).unwrap(),
            "8:10.0.0.1;3:bob;4:acme;4:/a/b;3:GET;2:r1;1:c;"
        );
    }

    #[test]
    fn parts_cannot_be_forged_by_separators() {
        let a = info(&[("x-a", "1;2"), ("x-b", "3")]);
        let b = info(&[("x-a", "1"), ("x-b", "2;3")]);
        let parts = [KeyPart::Header("x-a".into()), KeyPart::Header("x-b".into())];
        assert_ne!(
            build(&parts, &input(&a, 0)).unwrap(),
            build(&parts, &input(&b, 0)).unwrap()
        );
    }

    #[test]
    fn missing_parts() {
        let i = info(&[("x-empty", "")]);
        let inp = input(&i, 0);
        assert_eq!(
            build(&[KeyPart::Header("x-no".into())], &inp),
            Err("header")
        );
        assert_eq!(
            build(&[KeyPart::Header("x-empty".into())], &inp),
            Err("header")
        );
        assert_eq!(build(&[KeyPart::Query("nope".into())], &inp), Err("query"));
        assert_eq!(build(&[KeyPart::Query("e".into())], &inp), Err("query"));
        let mut no_route = info(&[]);
        no_route.route = None;
        assert_eq!(build(&[KeyPart::Route], &input(&no_route, 0)), Err("route"));
        let mut no_source = input(&i, 0);
        no_source.source_address = None;
        assert_eq!(build(&[KeyPart::ClientIp], &no_source), Err("client_ip"));
    }

    fn masked(address: &str, ipv4: u8, ipv6: u8) -> String {
        mask(address.to_string(), Prefixes { ipv4, ipv6 })
    }

    /// An IPv6 client owns at least a /64: rotating addresses inside it gives no fresh key.
    #[test]
    fn ipv6_addresses_of_one_network_share_a_key() {
        let a = masked("2001:db8:1:2:aaaa::1", 32, 64);
        assert_eq!(a, "2001:db8:1:2::/64");
        for other in [
            "2001:db8:1:2::2",
            "2001:db8:1:2:ffff:ffff:ffff:ffff",
            "2001:DB8:1:2::9",
        ] {
            assert_eq!(masked(other, 32, 64), a, "{other}");
        }
        assert_ne!(masked("2001:db8:1:3::1", 32, 64), a, "another /64");
        assert_eq!(masked("2001:db8:1:2:aaaa::1", 32, 48), "2001:db8:1::/48");
        assert_eq!(
            masked("2001:db8::1", 32, 128),
            "2001:db8::1",
            "whole address"
        );
        assert_eq!(masked("2001:db8::1", 32, 1), "::/1");
        assert_eq!(masked("2001:0:0:5::1", 32, 64), "2001:0:0:5::/64");
        assert_eq!(masked("2001:0:0:5::1", 32, 127), "2001:0:0:5::/127");
        assert_eq!(
            masked("1:2:3:4:5:6:7:ffff", 32, 127),
            "1:2:3:4:5:6:7:fffe/127"
        );
    }

    #[test]
    fn ipv4_prefixes_and_ipv4_mapped_addresses() {
        assert_eq!(
            masked("10.1.2.3", 32, 64),
            "10.1.2.3",
            "default: whole address"
        );
        assert_eq!(masked("10.1.2.3", 24, 64), "10.1.2.0/24");
        assert_eq!(masked("10.1.2.3", 1, 64), "0.0.0.0/1");
        // A dual-stack socket shows an IPv4 client as ::ffff:a.b.c.d: it is an IPv4 client,
        // not one more address of the single /64 ::ffff:0:0 that every such client would share.
        assert_eq!(masked("::ffff:10.1.2.3", 32, 64), "10.1.2.3");
        assert_eq!(masked("::ffff:10.1.2.3", 16, 64), "10.1.0.0/16");
        assert_eq!(
            masked("::ffff:10.1.2.3", 32, 128),
            "10.1.2.3",
            "whatever the v6 prefix"
        );
        assert_ne!(
            masked("::ffff:10.1.2.3", 32, 64),
            masked("::ffff:10.9.9.9", 32, 64)
        );
        // Not an address (a trusted proxy's odd X-Forwarded-For entry): kept as written.
        for odd in ["unknown", "fe80::1%eth0", "10.1.2.3:80", ""] {
            assert_eq!(masked(odd, 8, 8), odd);
        }
    }

    #[test]
    fn client_ip_parts_are_cut_to_the_prefix() {
        let i = info(&[("x-forwarded-for", "2001:db8:5:6::77, 10.9.9.9")]);
        let mut inp = input(&i, 2);
        assert_eq!(
            build(&[KeyPart::ClientIp], &inp).unwrap(),
            "17:2001:db8:5:6::/64;"
        );
        inp.prefixes.ipv4 = 8;
        inp.xff_num_trusted_hops = 0;
        assert_eq!(build(&[KeyPart::ClientIp], &inp).unwrap(), "10:10.0.0.0/8;");
    }

    /// `on_missing_key: "client_ip"`: the missing part is the client address, marked so that
    /// no value sent in its place (the address itself, a crafted length prefix) equals it.
    #[test]
    fn a_fallback_key_cannot_be_forged() {
        let keyless = info(&[]);
        let parts = [KeyPart::Header("x-api-key".into())];
        let fallback_key = build_with_fallback(&parts, &input(&keyless, 0), "10.0.0.1");
        assert_eq!(fallback_key, "!ip:8:10.0.0.1;");
        for forged in ["10.0.0.1", "!ip:8:10.0.0.1;", "8:10.0.0.1;"] {
            let i = info(&[("x-api-key", forged)]);
            assert_ne!(
                build(&parts, &input(&i, 0)).unwrap(),
                fallback_key,
                "{forged}"
            );
            assert_ne!(
                build_with_fallback(&parts, &input(&i, 0), "10.0.0.1"),
                fallback_key,
                "{forged}"
            );
        }
        // The client address of a request without enough X-Forwarded-For entries: the
        // downstream address.
        let i = info(&[]);
        assert_eq!(fallback(&input(&i, 3)).as_deref(), Some("10.0.0.1"));
        assert_eq!(fallback(&input(&i, 0)).as_deref(), Some("10.0.0.1"));
    }
}

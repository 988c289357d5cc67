//! OpenID Connect discovery (OpenID Connect Discovery 1.0, section 4): a `remote_jwks` whose
//! URI names the issuer's `/.well-known/openid-configuration` is fetched first; its `issuer`
//! must equal the provider's `issuer` exactly, and its `jwks_uri` is then fetched from the
//! cluster configured for that URI's host.

use serde_json::Value;

/// The path suffix that turns a `remote_jwks` into a discovery document.
pub const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// Where the key set named by a discovery document is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksTarget {
    /// The `jwks_uri` as published (for logs).
    pub uri: String,
    /// `:scheme`.
    pub scheme: &'static str,
    /// `:authority`.
    pub authority: String,
    /// `:path` (with its query).
    pub path: String,
    /// Envoy cluster to send the fetch to.
    pub cluster: String,
}

/// What the filter knows when it reads a discovery answer.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The provider's `issuer`.
    pub issuer: &'a str,
    /// Whether the discovery document came over `https` (then `jwks_uri` must too).
    pub https: bool,
    /// The discovery document's `:authority` and cluster.
    pub authority: &'a str,
    /// Its cluster (used for a `jwks_uri` on the same authority).
    pub cluster: &'a str,
    /// `remote_jwks.jwks_clusters`: authority to cluster.
    pub clusters: &'a [(String, String)],
    /// The size cap of the document.
    pub max_bytes: usize,
}

/// Checks a discovery answer and returns where to fetch the keys.
pub fn accept(
    status: Option<&str>,
    body: Option<&[u8]>,
    expect: &Expect<'_>,
) -> Result<JwksTarget, String> {
    if status != Some("200") {
        return Err(format!("discovery status {}", status.unwrap_or("none")));
    }
    let body = body.ok_or("empty discovery document")?;
    if body.len() > expect.max_bytes {
        return Err(format!(
            "discovery document over {} bytes",
            expect.max_bytes
        ));
    }
    let doc = crate::claims::strict_object(body)
        .ok_or("the discovery document is not a JSON object without duplicate names")?;
    match doc.get("issuer") {
        Some(Value::String(issuer)) if issuer == expect.issuer => {}
        Some(Value::String(_)) => {
            return Err("the discovery document's issuer is not the provider's issuer".into())
        }
        _ => return Err("the discovery document has no issuer".into()),
    }
    let Some(Value::String(uri)) = doc.get("jwks_uri") else {
        return Err("the discovery document has no jwks_uri".into());
    };
    target(uri, expect)
}

/// Where `jwks_uri` is fetched: same scheme strength, an authority without user information,
/// and a cluster (the discovery document's for its own authority, else `jwks_clusters`).
pub fn target(uri: &str, expect: &Expect<'_>) -> Result<JwksTarget, String> {
    let (scheme, rest) = if let Some(rest) = uri.strip_prefix("https://") {
        ("https", rest)
    } else if let Some(rest) = uri.strip_prefix("http://") {
        if expect.https {
            return Err("jwks_uri is http:// but discovery was https://".into());
        }
        ("http", rest)
    } else {
        return Err("jwks_uri is not an absolute http(s) URI".into());
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let valid_authority = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    if !valid_authority {
        return Err("jwks_uri has an invalid host".into());
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("jwks_uri has an invalid path".into());
    }
    let authority = authority.to_ascii_lowercase();
    let cluster = if authority == expect.authority.to_ascii_lowercase() {
        expect.cluster.to_string()
    } else {
        match expect.clusters.iter().find(|(a, _)| *a == authority) {
            Some((_, cluster)) => cluster.clone(),
            None => {
                return Err(format!(
                    "jwks_uri host {authority} has no cluster (add it to remote_jwks.jwks_clusters)"
                ))
            }
        }
    };
    Ok(JwksTarget {
        uri: uri.to_string(),
        scheme,
        authority,
        path,
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect<'a>(clusters: &'a [(String, String)]) -> Expect<'a> {
        Expect {
            issuer: "https://idp.example.com/realms/a",
            https: true,
            authority: "idp.example.com",
            cluster: "idp",
            clusters,
            max_bytes: 4096,
        }
    }

    fn doc(issuer: &str, jwks_uri: &str) -> Vec<u8> {
        serde_json::json!({"issuer": issuer, "jwks_uri": jwks_uri, "token_endpoint": "x"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_good_document_names_the_keys_on_the_same_cluster() {
        let clusters = [];
        let body = doc(
            "https://idp.example.com/realms/a",
            "https://IDP.example.com/realms/a/certs?x=1#f",
        );
        let t = accept(Some("200"), Some(&body), &expect(&clusters)).unwrap();
        assert_eq!(t.cluster, "idp");
        assert_eq!(t.authority, "idp.example.com");
        assert_eq!(t.path, "/realms/a/certs?x=1");
        assert_eq!(t.scheme, "https");
    }

    #[test]
    fn another_host_needs_its_cluster() {
        let none = [];
        let body = doc(
            "https://idp.example.com/realms/a",
            "https://keys.example.net/jwks",
        );
        let e = accept(Some("200"), Some(&body), &expect(&none)).unwrap_err();
        assert!(e.contains("jwks_clusters"), "{e}");
        let mapped = [("keys.example.net".to_string(), "keys".to_string())];
        let t = accept(Some("200"), Some(&body), &expect(&mapped)).unwrap();
        assert_eq!(t.cluster, "keys");
        assert_eq!(t.path, "/jwks");
    }

    #[test]
    fn attacks_on_the_document_are_refused() {
        let none = [];
        let e = expect(&none);
        let refuse = |body: &[u8]| accept(Some("200"), Some(body), &e).unwrap_err();
        // Another issuer, a prefix of it, a trailing slash, no issuer, a wrong type.
        for issuer in [
            "https://evil.example.com",
            "https://idp.example.com/realms/a/",
            "https://idp.example.com/realms",
        ] {
            assert!(refuse(&doc(issuer, "https://idp.example.com/k")).contains("issuer"));
        }
        assert!(refuse(br#"{"jwks_uri": "https://idp.example.com/k"}"#).contains("issuer"));
        assert!(
            refuse(br#"{"issuer": 5, "jwks_uri": "https://idp.example.com/k"}"#).contains("issuer")
        );
        // Duplicate issuer members: refused, whichever would win.
        assert!(refuse(
            br#"{"issuer": "https://evil", "issuer": "https://idp.example.com/realms/a", "jwks_uri": "https://idp.example.com/k"}"#
        )
        .contains("duplicate"));
        let ok_issuer = "https://idp.example.com/realms/a";
        for uri in [
            "http://idp.example.com/k",
            "ftp://idp.example.com/k",
            "/k",
            "https://user@idp.example.com/k",
            "https:///k",
            "https://idp.example.com/k\r\nx: y",
        ] {
            let _ = refuse(&doc(ok_issuer, uri));
        }
        assert!(
            refuse(br#"{"issuer": "https://idp.example.com/realms/a", "jwks_uri": 1}"#)
                .contains("jwks_uri")
        );
        assert!(refuse(b"[1]").contains("JSON object"));
        let big = doc(
            ok_issuer,
            &format!("https://idp.example.com/{}", "k".repeat(5000)),
        );
        assert!(refuse(&big).contains("bytes"));
        assert!(accept(
            Some("404"),
            Some(&doc(ok_issuer, "https://idp.example.com/k")),
            &e
        )
        .is_err());
        assert!(accept(Some("200"), None, &e).is_err());
    }
}

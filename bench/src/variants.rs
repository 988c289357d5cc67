//! The benchmark variants: one Envoy listener each, the same policy on both sides of a comparison.

use crate::load::render_request;
use crate::tokens::{github_signature, JwtKey, ISSUER, WEBHOOK_SECRET};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

/// One listener of the benchmark Envoy.
pub struct Variant {
    /// Listener and row name.
    pub name: String,
    /// The row this one is compared with (its native peer), if any.
    pub peer: Option<String>,
    /// The row whose cost is subtracted to get this filter's own cost.
    pub floor_of: &'static str,
    /// HTTP filters before the router.
    pub filters: Vec<Value>,
    /// Extra fields of the route (`retry_policy`).
    pub route_extra: Value,
    /// The route proxies to a second listener of the same Envoy that answers with a direct
    /// response (bodies, retries); otherwise the variant's own route answers with a direct
    /// response after the filters (one Envoy hop, the header-only variants).
    pub proxied: bool,
    /// Requests for round `r` (each round gets fresh ones where uniqueness matters).
    pub requests: Box<dyn Fn(usize, usize) -> Vec<Vec<u8>>>,
    /// Bytes of request body, for throughput figures.
    pub body_bytes: usize,
}

fn wasm(filter: &str, module: PathBuf, config: Value) -> Value {
    wasm_in_vm(filter, filter, module, config)
}

/// A Wasm filter whose plugin `filter` runs in the VM `vm_id`, shared with the other plugins of
/// that id (every VM reserves gigabytes of address space for its memory's guard regions).
fn wasm_in_vm(filter: &str, vm_id: &str, module: PathBuf, config: Value) -> Value {
    json!({
        "name": format!("wasmgate.{filter}"),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": filter,
                "root_id": filter,
                "vm_config": {"vm_id": vm_id, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": module.display().to_string()}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": config.to_string()}
            }
        }
    })
}

fn simple(
    method: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Box<dyn Fn(usize, usize) -> Vec<Vec<u8>>> {
    Box::new(move |_, _| vec![render_request(method, "/bench", &headers, &body)])
}

fn variant(name: &str, peer: Option<&str>, floor_of: &'static str, filters: Vec<Value>) -> Variant {
    Variant {
        name: name.into(),
        peer: peer.map(Into::into),
        floor_of,
        filters,
        route_extra: json!({}),
        proxied: false,
        requests: simple("GET", vec![], vec![]),
        body_bytes: 0,
    }
}

fn proxied(mut v: Variant) -> Variant {
    v.proxied = true;
    v
}

/// Where the modules are: `dist/` for filters, the build dir for the pass-through floor.
pub struct Modules {
    /// `dist/` of the repository.
    pub dist: PathBuf,
    /// The release build dir holding `passthrough.wasm`.
    pub build: PathBuf,
}

impl Modules {
    /// The path of `module` (`key_auth`, `wasmgate`), when it was built.
    pub fn get(&self, module: &str) -> Option<PathBuf> {
        let path = if module == "passthrough" {
            self.build.join("passthrough.wasm")
        } else {
            self.dist.join(format!("{module}.wasm"))
        };
        path.exists().then_some(path)
    }
}

const REMOVED: [&str; 3] = ["x-remove-1", "x-remove-2", "x-remove-3"];
const ADDED: [(&str, &str); 3] = [("x-add-1", "one"), ("x-add-2", "two"), ("x-add-3", "three")];

fn header_requests() -> Box<dyn Fn(usize, usize) -> Vec<Vec<u8>>> {
    simple(
        "GET",
        REMOVED
            .iter()
            .map(|h| (h.to_string(), "drop-me".to_string()))
            .collect(),
        vec![],
    )
}

fn jwt_native(key: &JwtKey, cache: bool) -> Value {
    let mut provider = json!({"issuer": ISSUER, "audiences": ["bench"],
        "local_jwks": {"inline_string": key.jwks}, "forward": false});
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 1000});
    }
    json!({"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}})
}

/// Unique-token requests by (round, count), shared by the native and wasmgate variants of one
/// algorithm: RS256 signing is most of the benchmark's preparation time.
type SignedRequests = Rc<RefCell<HashMap<(usize, usize), Vec<Vec<u8>>>>>;

/// Requests carrying JWTs: one repeated token (`unique` is `None`), or a unique token per
/// request, signed once per round on every core and kept in `unique` for the other variant.
fn jwt_requests(
    key: Arc<JwtKey>,
    unique: Option<SignedRequests>,
) -> Box<dyn Fn(usize, usize) -> Vec<Vec<u8>>> {
    let Some(signed) = unique else {
        return Box::new(move |_, _| vec![jwt_request(&key, 0)]);
    };
    Box::new(move |round, count| {
        signed
            .borrow_mut()
            .entry((round, count))
            .or_insert_with(|| sign_in_parallel(&key, round * count, count))
            .clone()
    })
}

fn jwt_request(key: &JwtKey, jti: usize) -> Vec<u8> {
    render_request(
        "GET",
        "/bench",
        &[("authorization".into(), format!("Bearer {}", key.token(jti)))],
        b"",
    )
}

fn sign_in_parallel(key: &Arc<JwtKey>, first: usize, count: usize) -> Vec<Vec<u8>> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let key = Arc::clone(key);
                let start = first + t * per_thread;
                let end = (start + per_thread).min(first + count);
                scope.spawn(move || {
                    (start..end)
                        .map(|i| jwt_request(&key, i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}

/// Every variant whose modules exist; the names of those skipped are returned too.
pub fn all(modules: &Modules) -> (Vec<Variant>, Vec<String>) {
    let mut variants = vec![variant("baseline", None, "baseline", vec![])];
    let mut skipped = Vec::new();
    let mut wasm_variant = |v: Variant, module: &str| {
        if module == NATIVE || modules.get(module).is_some() {
            variants.push(v)
        } else {
            skipped.push(format!("{} ({module}.wasm not built)", v.name))
        }
    };
    let module = |m: &str| modules.get(m).unwrap_or_default();

    wasm_variant(
        variant(
            "floor",
            Some("baseline"),
            "baseline",
            vec![wasm("passthrough", module("passthrough"), json!({}))],
        ),
        "passthrough",
    );

    // What the filters are made of: the pass-through module doing one host call (or 100 small
    // allocations) per request, each in a VM of its own; own cost is the price of that operation.
    for probe in [
        "get_map",
        "get_header",
        "set_headers",
        "metric",
        "time",
        "allocations",
    ] {
        wasm_variant(
            variant(
                &format!("probe_{probe}"),
                Some("floor"),
                "floor",
                vec![wasm_in_vm(
                    &format!("probe_{probe}"),
                    "passthrough",
                    module("passthrough"),
                    json!(probe),
                )],
            ),
            "passthrough",
        );
    }

    // The same two, proxied through a second hop: the floors of the body and retry variants.
    variants_push(
        &mut wasm_variant,
        proxied(variant(
            "baseline_proxied",
            None,
            "baseline_proxied",
            vec![],
        )),
    );
    wasm_variant(
        proxied(variant(
            "floor_proxied",
            Some("baseline_proxied"),
            "baseline_proxied",
            vec![wasm("passthrough", module("passthrough"), json!({}))],
        )),
        "passthrough",
    );

    // JWT: native jwt_authn with and without its cache vs jwt-auth with repeated and unique tokens.
    for alg in ["RS256", "ES256"] {
        let k = if alg == "RS256" {
            JwtKey::rs256()
        } else {
            JwtKey::es256()
        };
        let lower = alg.to_ascii_lowercase();
        let ours = json!({"providers": {"bench": {"issuer": ISSUER, "audiences": ["bench"],
            "local_jwks": {"inline_string": k.jwks}}}, "requires": {"provider_name": "bench"}});
        let native_config = |cache| jwt_native(&k, cache);
        let (native_plain, native_cache) = (native_config(false), native_config(true));
        let shared_key = Arc::new(k);
        let signed = SignedRequests::default();
        let mut native = variant(
            &format!("native_jwt_{lower}"),
            None,
            "baseline",
            vec![native_plain],
        );
        native.requests = jwt_requests(Arc::clone(&shared_key), Some(Rc::clone(&signed)));
        variants_push(&mut wasm_variant, native);
        let mut native_cached = variant(
            &format!("native_jwt_{lower}_cache"),
            None,
            "baseline",
            vec![native_cache],
        );
        native_cached.requests = jwt_requests(Arc::clone(&shared_key), None);
        variants_push(&mut wasm_variant, native_cached);
        let mut unique = variant(
            &format!("jwt_{lower}_unique"),
            Some(&format!("native_jwt_{lower}")),
            "floor",
            vec![wasm("jwt-auth", module("jwt_auth"), ours.clone())],
        );
        unique.requests = jwt_requests(Arc::clone(&shared_key), Some(Rc::clone(&signed)));
        wasm_variant(unique, "jwt_auth");
        let mut repeated = variant(
            &format!("jwt_{lower}_repeated"),
            Some(&format!("native_jwt_{lower}_cache")),
            "floor",
            vec![wasm("jwt-auth", module("jwt_auth"), ours)],
        );
        repeated.requests = jwt_requests(Arc::clone(&shared_key), None);
        wasm_variant(repeated, "jwt_auth");
    }

    // Rate limit: a limit never reached, one key and 1,000 keys.
    let bucket = json!({"max_tokens": 1_000_000_000u64, "tokens_per_fill": 1_000_000_000u64, "fill_interval": "1s"});
    let always = json!({"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "bench_rl"});
    variants_push(
        &mut wasm_variant,
        variant(
            "native_ratelimit",
            None,
            "baseline",
            vec![local_ratelimit(&bucket, &always)],
        ),
    );
    let limits = json!([{"name": "bench", "requests": 1_000_000_000u64, "window": "1s", "algorithm": "token_bucket"}]);
    wasm_variant(
        variant(
            "ratelimit_one_key",
            Some("native_ratelimit"),
            "floor",
            vec![wasm(
                "rate-limit",
                module("rate_limit"),
                json!({"rules": [{"match": {}, "key": [{"constant": "all"}], "limits": limits}], "response_headers": "none"}),
            )],
        ),
        "rate_limit",
    );
    let mut many = variant(
        "ratelimit_1000_keys",
        Some("native_ratelimit"),
        "floor",
        vec![wasm(
            "rate-limit",
            module("rate_limit"),
            json!({"rules": [{"match": {}, "key": [{"header": "x-api-key"}], "limits": limits}], "response_headers": "none"}),
        )],
    );
    many.requests = Box::new(|_, _| {
        (0..1000)
            .map(|i| {
                render_request(
                    "GET",
                    "/bench",
                    &[("x-api-key".into(), format!("key-{i}"))],
                    b"",
                )
            })
            .collect()
    });
    wasm_variant(many, "rate_limit");

    // Transform: add and remove three headers, natively, in Lua and in transform.
    let mutations: Vec<Value> = REMOVED.iter().map(|h| json!({"remove": h}))
        .chain(ADDED.iter().map(|(k, v)| json!({"append": {"header": {"key": k, "value": v}, "append_action": "ADD_IF_ABSENT"}})))
        .collect();
    let mut native_headers = variant(
        "native_header_mutation",
        None,
        "baseline",
        vec![header_mutation(&mutations)],
    );
    native_headers.requests = header_requests();
    variants_push(&mut wasm_variant, native_headers);
    let lua_source = format!(
        "function envoy_on_request(handle)\n  local h = handle:headers()\n{}{}end\n",
        REMOVED
            .iter()
            .map(|r| format!("  h:remove(\"{r}\")\n"))
            .collect::<String>(),
        ADDED
            .iter()
            .map(|(k, v)| format!("  if h:get(\"{k}\") == nil then h:add(\"{k}\", \"{v}\") end\n"))
            .collect::<String>()
    );
    let mut lua = variant(
        "lua_headers",
        None,
        "baseline",
        vec![json!({"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": lua_source}}})],
    );
    lua.requests = header_requests();
    variants_push(&mut wasm_variant, lua);
    let added: serde_json::Map<String, Value> = ADDED
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut transform = variant(
        "transform_headers",
        Some("lua_headers"),
        "floor",
        vec![wasm(
            "transform",
            module("transform"),
            json!({"request": {"headers": {"remove": REMOVED, "add": added}}}),
        )],
    );
    transform.requests = header_requests();
    wasm_variant(transform, "transform");
    let json_body = json_body_1k();
    let mut json_edit = proxied(variant(
        "transform_json_1k",
        Some("baseline_1k_json"),
        "baseline_1k_json",
        vec![wasm(
            "transform",
            module("transform"),
            json!({"request": {"body": {"json": {"set": {"/meta/source": "gateway"}, "remove": ["/password"]}, "max_body_bytes": 65536}}}),
        )],
    ));
    json_edit.requests = simple(
        "POST",
        vec![("content-type".into(), "application/json".into())],
        json_body.clone(),
    );
    json_edit.body_bytes = json_body.len();
    wasm_variant(json_edit, "transform");
    let mut json_baseline = proxied(variant(
        "baseline_1k_json",
        None,
        "baseline_proxied",
        vec![],
    ));
    json_baseline.requests = simple(
        "POST",
        vec![("content-type".into(), "application/json".into())],
        json_body,
    );
    variants_push(&mut wasm_variant, json_baseline);

    // HMAC: github scheme over 1 KiB and 64 KiB bodies, each against a no-filter run with the same
    // body. 1 KiB: every delivery is unique (its first bytes carry a counter), with replay
    // protection on, as deployed. 64 KiB: one repeated delivery with replay protection off, so the
    // row measures hashing throughput (unique 64 KiB bodies for every round would not fit memory).
    for (label, size) in [("1k", 1024usize), ("64k", 64 * 1024)] {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let baseline_name = format!("baseline_{label}_body");
        let mut baseline = proxied(variant(&baseline_name, None, "baseline_proxied", vec![]));
        baseline.requests = simple("POST", vec![], body.clone());
        variants_push(&mut wasm_variant, baseline);
        let unique = size == 1024;
        let config = json!({"scheme": "github", "secrets": [{"id": "bench", "value": WEBHOOK_SECRET}],
            "max_body_bytes": 1_048_576, "replay": {"enabled": unique}});
        let floor: &'static str = if unique {
            "baseline_1k_body"
        } else {
            "baseline_64k_body"
        };
        let mut ours = proxied(variant(
            &format!("hmac_github_{label}"),
            Some(&baseline_name),
            floor,
            vec![wasm("hmac-auth", module("hmac_auth"), config)],
        ));
        ours.requests = if unique {
            Box::new(move |round, count| {
                (round * count..(round + 1) * count)
                    .map(|n| {
                        let mut body = body.clone();
                        let stamp = format!("{n:016}");
                        body[..stamp.len()].copy_from_slice(stamp.as_bytes());
                        let signature = github_signature(&body);
                        render_request(
                            "POST",
                            "/bench",
                            &[("x-hub-signature-256".into(), signature)],
                            &body,
                        )
                    })
                    .collect()
            })
        } else {
            simple(
                "POST",
                vec![("x-hub-signature-256".into(), github_signature(&body))],
                body,
            )
        };
        ours.body_bytes = size;
        wasm_variant(ours, "hmac_auth");
    }

    // API keys: Envoy's api_key_auth vs key-auth with the same keys, 10 and 100,000 clients;
    // each request carries the key of a client in the middle of the list.
    for (label, clients) in [("10", 10usize), ("100k", 100_000)] {
        let key = |i: usize| format!("bench-api-key-{i:06}-0123456789");
        let credentials: Vec<Value> = (0..clients)
            .map(|i| json!({"key": key(i), "client": format!("client-{i}")}))
            .collect();
        let native_name = format!("native_api_key_{label}");
        let mut native = variant(
            &native_name,
            None,
            "baseline",
            vec![
                json!({"name": "envoy.filters.http.api_key_auth", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                "credentials": credentials, "key_sources": [{"header": "x-api-key"}],
                "forwarding": {"header": "x-client-id", "hide_credentials": true}}}),
            ],
        );
        let presented = vec![("x-api-key".to_string(), key(clients / 2))];
        native.requests = simple("GET", presented.clone(), vec![]);
        variants_push(&mut wasm_variant, native);
        let ours_clients: Vec<Value> = (0..clients)
            .map(
                |i| json!({"id": format!("client-{i}"), "keys": [{"sha256": sha256_hex(&key(i))}]}),
            )
            .collect();
        let mut ours = variant(
            &format!("key_auth_{label}"),
            Some(&native_name),
            "floor",
            vec![wasm(
                "key-auth",
                module("key_auth"),
                json!({"clients": ours_clients}),
            )],
        );
        ours.requests = simple("GET", presented, vec![]);
        wasm_variant(ours, "key_auth");
    }

    // Credentials: Envoy's credential_injector (generic, from a static secret) vs
    // credential-inject with the same header value.
    variants_push(
        &mut wasm_variant,
        variant(
            "native_credential_injector",
            None,
            "baseline",
            vec![
                json!({"name": "envoy.filters.http.credential_injector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
                "overwrite": true,
                "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                    "credential": {"name": "bench_credential"}, "header": "authorization"}}}}),
            ],
        ),
    );
    wasm_variant(
        variant(
            "credential_inject_header",
            Some("native_credential_injector"),
            "floor",
            vec![wasm(
                "credential-inject",
                module("credential_inject"),
                json!({"credentials": {"api": {"header": {"name": "authorization",
                    "value": {"value": BENCH_CREDENTIAL}}}}, "use": "api", "overwrite": true}),
            )],
        ),
        "credential_inject",
    );

    // Retry: the router's retry_policy vs the retry filter in router mode, no failures.
    let mut native_retry = proxied(variant(
        "native_retry_policy",
        None,
        "baseline_proxied",
        vec![],
    ));
    native_retry.route_extra = json!({"retry_policy": {"retry_on": "5xx", "num_retries": 2}});
    variants_push(&mut wasm_variant, native_retry);
    wasm_variant(
        proxied(variant(
            "retry_router",
            Some("native_retry_policy"),
            "floor_proxied",
            vec![wasm(
                "retry",
                module("retry"),
                json!({"mode": "router", "max_retries": 2, "retry_on": ["5xx"]}),
            )],
        )),
        "retry",
    );

    // The demo chain key-auth -> rate-limit -> transform: the three single-filter modules (a VM
    // each) against the bundle wasmgate.wasm (the same three plugins in one VM, one vm_id).
    for (name, peer, bundle) in [
        ("chain_separate", None, false),
        ("chain_bundle", Some("chain_separate"), true),
    ] {
        let mut chain = variant(name, peer, "floor", demo_chain(modules, bundle));
        chain.requests = chain_requests();
        wasm_variant(chain, if bundle { "wasmgate" } else { "key_auth" });
    }
    // The same three as the stages of one chain plugin (root id `chain`): one request view.
    let mut chain = variant(
        "chain_plugin",
        Some("chain_separate"),
        "floor",
        vec![chain_plugin(modules, &demo_chain_stages())],
    );
    chain.requests = chain_requests();
    wasm_variant(chain, "wasmgate");

    // The issue's chain: JWT (a cached token) -> rate limit -> three header edits. Natively:
    // jwt_authn with its cache, local_ratelimit and header_mutation; ours keys the rate limit on
    // the verified subject.
    let key = Arc::new(JwtKey::rs256());
    let native_stages = vec![
        jwt_native_forwarding_sub(&key),
        local_ratelimit(&bucket, &always),
        header_mutation(&mutations),
    ];
    let mut native = variant("native_jwt_chain", None, "baseline", native_stages);
    native.requests = jwt_chain_requests(&key);
    variants_push(&mut wasm_variant, native);
    let stages = jwt_chain_stages(&key);
    for (name, plugins, module) in [
        (
            "jwt_chain_separate",
            separate_plugins(modules, &stages),
            "jwt_auth",
        ),
        (
            "jwt_chain_bundle",
            bundle_plugins(modules, &stages),
            "wasmgate",
        ),
        (
            "jwt_chain_plugin",
            vec![chain_plugin(modules, &stages)],
            "wasmgate",
        ),
    ] {
        let mut chain = variant(name, Some("native_jwt_chain"), "baseline", plugins);
        chain.requests = jwt_chain_requests(&key);
        wasm_variant(chain, module);
    }

    (variants, skipped)
}

/// A chain's stages: filter and configuration.
type Stages = Vec<(&'static str, Value)>;

/// The stages of the jwt chain: jwt-auth forwarding the subject, rate-limit keyed on it (a
/// limit never reached), transform's three header edits.
fn jwt_chain_stages(key: &JwtKey) -> Stages {
    let added: serde_json::Map<String, Value> = ADDED
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let limits = json!([{"name": "bench", "requests": 1_000_000_000u64, "window": "1s", "algorithm": "token_bucket"}]);
    vec![
        (
            "jwt-auth",
            json!({"providers": {"bench": {"issuer": ISSUER, "audiences": ["bench"],
                "local_jwks": {"inline_string": key.jwks},
                "claim_to_headers": [{"header_name": "x-jwt-sub", "claim_name": "sub"}]}},
                "requires": {"provider_name": "bench"}}),
        ),
        (
            "rate-limit",
            json!({"rules": [{"match": {}, "key": [{"header": "x-jwt-sub"}], "limits": limits}],
                   "response_headers": "none"}),
        ),
        (
            "transform",
            json!({"request": {"headers": {"remove": REMOVED, "add": added}}}),
        ),
    ]
}

/// Requests through the jwt chain: one repeated token and the headers transform removes.
fn jwt_chain_requests(key: &JwtKey) -> Box<dyn Fn(usize, usize) -> Vec<Vec<u8>>> {
    let mut headers: Vec<(String, String)> =
        vec![("authorization".into(), format!("Bearer {}", key.token(0)))];
    headers.extend(
        REMOVED
            .iter()
            .map(|h| (h.to_string(), "drop-me".to_string())),
    );
    simple("GET", headers, vec![])
}

/// Native jwt_authn with its cache, forwarding the subject as the jwt chain's does.
fn jwt_native_forwarding_sub(key: &JwtKey) -> Value {
    let mut filter = jwt_native(key, true);
    filter["typed_config"]["providers"]["bench"]["claim_to_headers"] =
        json!([{"header_name": "x-jwt-sub", "claim_name": "sub"}]);
    filter
}

fn local_ratelimit(bucket: &Value, always: &Value) -> Value {
    json!({"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "bench_rl", "token_bucket": bucket, "filter_enabled": always, "filter_enforced": always}})
}

fn header_mutation(mutations: &[Value]) -> Value {
    json!({"name": "envoy.filters.http.header_mutation", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {"request_mutations": mutations}}})
}

/// Each stage as a plugin of its own module (a VM each).
fn separate_plugins(modules: &Modules, stages: &Stages) -> Vec<Value> {
    stages
        .iter()
        .map(|(filter, config)| chain_filter(modules, false, filter, config.clone()))
        .collect()
}

/// Each stage as a plugin of the bundle, all in one VM.
fn bundle_plugins(modules: &Modules, stages: &Stages) -> Vec<Value> {
    stages
        .iter()
        .map(|(filter, config)| chain_filter(modules, true, filter, config.clone()))
        .collect()
}

/// The stages as one chain plugin of the bundle.
fn chain_plugin(modules: &Modules, stages: &Stages) -> Value {
    let stages: Vec<Value> = stages
        .iter()
        .map(|(filter, config)| json!({"filter": filter, "config": config}))
        .collect();
    let module = modules.get("wasmgate").unwrap_or_default();
    wasm_in_vm("chain", "wasmgate", module, json!({"stages": stages}))
}

/// The key the chain variants' client presents.
const CHAIN_KEY: &str = "bench-chain-key-0123456789abcdef";

/// A Wasm plugin of the chain: from its own module (a VM of its own, vm_id the filter's name),
/// or from the bundle wasmgate.wasm in the VM `wasmgate`, chosen by root id.
fn chain_filter(modules: &Modules, bundle: bool, filter: &str, config: Value) -> Value {
    if bundle {
        let module = modules.get("wasmgate").unwrap_or_default();
        wasm_in_vm(filter, "wasmgate", module, config)
    } else {
        let module = modules.get(&filter.replace('-', "_")).unwrap_or_default();
        wasm(filter, module, config)
    }
}

/// The demo chain: key-auth (one client), rate-limit on the client key-auth forwards (a limit
/// never reached), transform's header edits of `transform_headers`.
pub fn demo_chain(modules: &Modules, bundle: bool) -> Vec<Value> {
    if bundle {
        bundle_plugins(modules, &demo_chain_stages())
    } else {
        separate_plugins(modules, &demo_chain_stages())
    }
}

/// The demo chain's stages.
fn demo_chain_stages() -> Stages {
    let added: serde_json::Map<String, Value> = ADDED
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let limits = json!([{"name": "bench", "requests": 1_000_000_000u64, "window": "1s", "algorithm": "token_bucket"}]);
    vec![
        (
            "key-auth",
            json!({"clients": [{"id": "bench-client", "keys": [{"sha256": sha256_hex(CHAIN_KEY)}]}],
                   "key_sources": [{"header": "x-api-key"}],
                   "forward": {"client_header": "x-client-id", "hide_credentials": true}}),
        ),
        (
            "rate-limit",
            json!({"rules": [{"match": {}, "key": [{"header": "x-client-id"}], "limits": limits}],
                   "response_headers": "none"}),
        ),
        (
            "transform",
            json!({"request": {"headers": {"remove": REMOVED, "add": added}}}),
        ),
    ]
}

/// The rest of the full demo chain (envoy/demo.yaml): jwt-auth, hmac-auth, credential-inject and
/// retry, loaded but switched off in the chain (`disabled: true`, as the demo does outside their
/// routes): their VMs and configurations take memory, the requests do not run them.
pub fn rest_of_demo_chain(modules: &Modules, bundle: bool) -> Vec<Value> {
    let key = JwtKey::es256();
    [
        (
            "jwt-auth",
            json!({"providers": {"bench": {"issuer": ISSUER, "audiences": ["bench"],
                "local_jwks": {"inline_string": key.jwks}}}, "requires": {"provider_name": "bench"}}),
        ),
        (
            "hmac-auth",
            json!({"scheme": "github", "secrets": [{"id": "bench", "value": WEBHOOK_SECRET}],
                "max_body_bytes": 1_048_576}),
        ),
        (
            "credential-inject",
            json!({"credentials": {"api": {"header": {"name": "authorization",
                "value": {"value": BENCH_CREDENTIAL}}}}, "use": "api", "overwrite": true}),
        ),
        (
            "retry",
            json!({"mode": "router", "max_retries": 2, "retry_on": ["5xx"]}),
        ),
    ]
    .into_iter()
    .map(|(filter, config)| {
        let mut plugin = chain_filter(modules, bundle, filter, config);
        plugin["disabled"] = json!(true);
        plugin
    })
    .collect()
}

/// Requests through the demo chain: the client's key and the headers transform removes.
pub fn chain_requests() -> Box<dyn Fn(usize, usize) -> Vec<Vec<u8>>> {
    let mut headers: Vec<(String, String)> = vec![("x-api-key".into(), CHAIN_KEY.into())];
    headers.extend(
        REMOVED
            .iter()
            .map(|h| (h.to_string(), "drop-me".to_string())),
    );
    simple("GET", headers, vec![])
}

/// A variant for `main`'s memory runs (not a row of the tables).
pub fn plain(name: &str, filters: Vec<Value>) -> Variant {
    let mut v = variant(name, None, "baseline", filters);
    v.requests = chain_requests();
    v
}

/// The header value both credential variants inject.
pub const BENCH_CREDENTIAL: &str = "Bearer bench-token-0123456789abcdef";

/// Stands for "no module needed" in the module check.
const NATIVE: &str = "__native__";

/// Adds a native variant (no module needed).
fn variants_push(push: &mut impl FnMut(Variant, &str), v: Variant) {
    push(v, NATIVE);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn json_body_1k() -> Vec<u8> {
    let items: Vec<Value> = (0..12)
        .map(|i| json!({"id": i, "name": format!("item-{i}"), "tags": ["a", "b"]}))
        .collect();
    let mut body = json!({"user_name": "alice", "password": "hunter2", "items": items, "meta": {"client": "bench"}});
    let mut text = body.to_string();
    while text.len() < 1024 {
        body["padding"] =
            json!("x".repeat(1024 - text.len() + body["padding"].as_str().map_or(0, str::len)));
        text = body.to_string();
    }
    text.into_bytes()
}

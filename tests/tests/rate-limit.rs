//! rate-limit in a real Envoy: exact counts across two workers, token bucket refill bounds,
//! independent keys, draft and x-ratelimit headers, Retry-After, shadow mode, missing keys, key
//! parts, config rejection, a refused key that a flood of other keys cannot reset, and bounded
//! memory under many distinct keys.

// Test-only code: failing loudly is the point.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmgate_e2e::{repo_root, wasm_dir, Client, Envoy, EnvoyOptions, Response, Upstream};

fn config_var(config: &Value) -> (&'static str, String) {
    let text = config.to_string();
    assert!(
        !text.contains('\''),
        "the template quotes the config with ''"
    );
    ("CONFIG", text)
}

/// Envoy in front of the scriptable upstream, one worker.
fn start(config: &Value) -> (Upstream, Envoy) {
    let upstream = Upstream::start();
    let envoy = Envoy::start(
        "rate-limit.yaml",
        &[
            ("UPSTREAM_PORT", upstream.port().to_string()),
            config_var(config),
        ],
    );
    (upstream, envoy)
}

/// Envoy answering 200 itself behind the filter, with `--concurrency 2`.
fn start_two_workers(config: &Value) -> Envoy {
    Envoy::start_with(
        "rate-limit-direct.yaml",
        &[config_var(config)],
        EnvoyOptions {
            concurrency: 2,
            ..EnvoyOptions::default()
        },
    )
}

/// Metric `wasmgate_rate_limit_<what>` summed over its series carrying `labels`.
fn metric(envoy: &Envoy, what: &str, labels: &[(&str, &str)]) -> u64 {
    envoy.metric(&format!("wasmgate_rate_limit_{what}"), labels)
}

/// `wasmgate_rate_limit_requests_total` of one outcome.
fn requests(envoy: &Envoy, outcome: &str) -> u64 {
    metric(envoy, "requests_total", &[("outcome", outcome)])
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Fixed and sliding windows are aligned to the epoch. A test that counts inside one window
/// first makes sure at least `margin` seconds of the current window remain (waiting for the
/// next window otherwise), so a window boundary cannot fall inside the test.
fn ensure_window_room(window_secs: u64, margin_secs: u64) {
    let now = unix_now();
    let into = now.as_secs() % window_secs;
    if window_secs - into < margin_secs {
        let wait = Duration::from_secs(window_secs - into)
            - Duration::from_nanos(now.subsec_nanos().into());
        std::thread::sleep(wait + Duration::from_millis(50));
    }
}

/// Seconds until the end of the current epoch-aligned window.
fn seconds_to_window_end(window_secs: u64) -> u64 {
    let now = unix_now();
    let left = Duration::from_secs(window_secs - now.as_secs() % window_secs)
        - Duration::from_nanos(now.subsec_nanos().into());
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

/// Parses one draft header item list: `"name";k=v;k=v, ...` -> name -> params.
fn sf_items(value: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    value
        .split(',')
        .map(|item| {
            let mut parts = item.trim().split(';');
            let name = parts.next().unwrap();
            assert!(
                name.starts_with('"') && name.ends_with('"') && name.len() >= 2,
                "item name must be an sf-string: {value}"
            );
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap();
                    assert!(
                        v.bytes().all(|b| b.is_ascii_digit()),
                        "integer param: {value}"
                    );
                    (k.to_string(), v.to_string())
                })
                .collect();
            (name.trim_matches('"').to_string(), params)
        })
        .collect()
}

fn param(response: &Response, header: &str, item: &str, key: &str) -> u64 {
    let value = response
        .header(header)
        .unwrap_or_else(|| panic!("no {header} in {:?}", response.headers));
    sf_items(value)[item][key].parse().unwrap()
}

/// Sends `total` requests from `threads` threads, each thread on its own connections; returns
/// the responses in completion order.
fn hammer<F>(envoy: &Envoy, total: usize, threads: usize, request: F) -> Vec<Response>
where
    F: Fn(usize) -> (String, Vec<(String, String)>) + Sync,
{
    let next = AtomicUsize::new(0);
    let responses = Mutex::new(Vec::with_capacity(total));
    let base = envoy.client().base().to_string();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let client = Client::new(base.clone());
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    let (path, headers) = request(i);
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    let response = client.send("GET", &path, &headers, b"");
                    responses.lock().unwrap().push(response);
                }
            });
        }
    });
    responses.into_inner().unwrap()
}

fn count(responses: &[Response], status: u16) -> usize {
    responses.iter().filter(|r| r.status == status).count()
}

/// Both workers accepted connections (so both Wasm VMs took part in the count).
fn assert_both_workers_served(envoy: &Envoy) {
    // The listener's stat prefix is its configured address (`listener.127.0.0.1_0.`).
    let stats = envoy.stats();
    for worker in ["worker_0", "worker_1"] {
        let name = format!("listener.127.0.0.1_0.{worker}.downstream_cx_total");
        let accepted = stats.get(&name).copied().unwrap_or(0);
        assert!(accepted > 0, "{name} = {accepted}");
    }
}

fn limit(name: &str, requests: u64, window: &str, algorithm: &str) -> Value {
    json!({"name": name, "requests": requests, "window": window, "algorithm": algorithm})
}

/// The issue's headline: a fixed window of 100 per minute admits exactly 100 of 1,000 requests
/// sent over 16 connections spread across two workers; a sliding window is exact too.
#[test]
fn fixed_and_sliding_windows_are_exact_across_two_workers() {
    let config = json!({"rules": [
        {"match": {"path_prefix": "/sliding/"}, "key": ["client_ip"],
         "limits": [limit("hourly", 50, "1h", "sliding_window")]},
        {"key": ["client_ip"], "limits": [limit("per_minute", 100, "1m", "fixed_window")]}
    ]});
    let envoy = start_two_workers(&config);
    ensure_window_room(60, 25);
    let responses = hammer(&envoy, 1000, 16, |_| ("/api/x".into(), vec![]));
    assert_eq!(count(&responses, 200), 100, "exactly the quota passes");
    assert_eq!(count(&responses, 429), 900);
    for r in responses.iter().filter(|r| r.status == 429) {
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert_eq!(r.json()["error"], "rate_limited");
        assert_eq!(param(r, "ratelimit", "per_minute", "r"), 0);
    }
    assert_both_workers_served(&envoy);
    assert_eq!(requests(&envoy, "allowed"), 100);
    assert_eq!(requests(&envoy, "limited"), 900);
    assert_eq!(
        metric(&envoy, "errors_total", &[]),
        0,
        "no CAS retry ran out"
    );

    // A sliding window is just as exact (an hour-long window: the previous one is empty).
    ensure_window_room(3600, 20);
    let responses = hammer(&envoy, 500, 16, |_| ("/sliding/x".into(), vec![]));
    assert_eq!(count(&responses, 200), 50);
    assert_eq!(count(&responses, 429), 450);
    let prometheus = envoy.admin_client().get("/stats/prometheus").text();
    assert!(
        prometheus.lines().any(|l| l
            == r#"wasmgate_rate_limit_requests_total{plugin="rate-limit",outcome="limited"} 1350"#),
        "metric exported to Prometheus, labelled by the stats_tags:\n{prometheus}"
    );
}

/// A token bucket admits its burst plus what refills while the test runs, and no more. The
/// bounds come from the elapsed times the test measures, never from assumptions about speed.
#[test]
fn token_bucket_admits_burst_plus_refill_across_two_workers() {
    let (rate, burst) = (10u64, 20u64);
    let mut tb = limit("per_second", rate, "1s", "token_bucket");
    tb["burst"] = json!(burst);
    let config = json!({"rules": [{"key": [{"constant": "everyone"}], "limits": [tb]}]});
    let envoy = start_two_workers(&config);
    let refill_upper = |elapsed: Duration| (elapsed.as_millis() as u64 * rate).div_ceil(1000);

    let started = Instant::now();
    let first = hammer(&envoy, 300, 8, |_| ("/tb".into(), vec![]));
    let first_done = Instant::now();
    let admitted_first = count(&first, 200) as u64;
    assert!(
        admitted_first >= burst,
        "the full burst passes: {admitted_first}"
    );
    assert!(
        admitted_first <= burst + refill_upper(first_done - started),
        "{admitted_first} admitted in {:?}",
        first_done - started
    );
    assert!(count(&first, 429) > 0, "the bucket ran dry");

    // Let it refill for (at least) one second: at least `rate` tokens are back.
    std::thread::sleep(Duration::from_millis(1000));
    let second_start = Instant::now();
    let second = hammer(&envoy, 100, 8, |_| ("/tb".into(), vec![]));
    let done = Instant::now();
    let admitted_second = count(&second, 200) as u64;
    let gap_tokens = ((second_start - first_done).as_millis() as u64 * rate) / 1000;
    assert!(
        admitted_second >= gap_tokens.min(burst),
        "{admitted_second} admitted after a {:?} pause",
        second_start - first_done
    );
    let total = admitted_first + admitted_second;
    assert!(
        total <= burst + refill_upper(done - started),
        "{total} admitted in {:?}: more than burst + refill",
        done - started
    );
    assert_both_workers_served(&envoy);
    assert_eq!(requests(&envoy, "allowed"), total);
}

fn functional_config() -> Value {
    let hourly = |n: u64| limit("hourly", n, "1h", "fixed_window");
    let user = json!([{"header": "x-user"}]);
    let mut burst = limit("burst", 1, "10s", "token_bucket");
    burst["burst"] = json!(2);
    json!({
        "client_ip": {"xff_num_trusted_hops": 1},
        "max_keys": 1000,
        "rules": [
            {"match": {"path_prefix": "/health"}, "enabled": false},
            {"match": {"path_prefix": "/fixed/"}, "key": user, "limits": [hourly(3)]},
            {"match": {"path_prefix": "/xrl/"}, "key": user, "limits": [hourly(3)],
             "response_headers": "x-ratelimit"},
            {"match": {"path_prefix": "/both/"}, "key": user, "limits": [hourly(3)],
             "response_headers": "both"},
            {"match": {"path_prefix": "/none/"}, "key": user, "limits": [hourly(1)],
             "response_headers": "none"},
            {"match": {"path_prefix": "/multi/"}, "key": user,
             "limits": [burst, limit("hourly", 3, "1h", "sliding_window")]},
            {"match": {"path_prefix": "/shadow/"}, "key": [{"constant": "all"}],
             "limits": [hourly(2)], "shadow": true},
            {"match": {"path_prefix": "/deny/"}, "key": user, "limits": [hourly(1)],
             "on_missing_key": "deny"},
            {"match": {"path_prefix": "/allow/"}, "key": user, "limits": [hourly(1)],
             "on_missing_key": "allow"},
            {"match": {"path_prefix": "/shared/"}, "key": user, "limits": [hourly(1)],
             "on_missing_key": "shared"},
            {"match": {"path_prefix": "/ip/"}, "key": ["client_ip"], "limits": [hourly(1)],
             "on_missing_key": "deny"},
            {"match": {"path_prefix": "/default/"}, "key": user, "limits": [hourly(1)]},
            {"match": {"path_prefix": "/query/"}, "key": [{"query": "tenant"}, "method"],
             "limits": [hourly(1)]},
            {"match": {"path_prefix": "/named/"}, "key": ["route"], "limits": [hourly(1)]}
        ]
    })
}

fn get(client: &Client, path: &str, headers: &[(&str, &str)]) -> Response {
    client.send("GET", path, headers, b"")
}

/// Draft headers on every response, Retry-After and `t` on the 429, keys independent.
#[test]
fn draft_headers_retry_after_and_independent_keys() {
    let (upstream, envoy) = start(&functional_config());
    let client = envoy.client();
    ensure_window_room(3600, 20);
    let alice = [("x-user", "alice")];
    for remaining in [2, 1, 0] {
        let r = get(&client, "/fixed/a", &alice);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy"), Some("\"hourly\";q=3;w=3600"));
        assert_eq!(param(&r, "ratelimit", "hourly", "r"), remaining);
        let t = param(&r, "ratelimit", "hourly", "t");
        assert!(t.abs_diff(seconds_to_window_end(3600)) <= 2, "t={t}");
    }
    let limited = get(&client, "/fixed/a", &alice);
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("content-type"), Some("application/json"));
    assert_eq!(limited.json()["error"], "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry.abs_diff(seconds_to_window_end(3600)) <= 2,
        "Retry-After {retry}"
    );
    assert_eq!(param(&limited, "ratelimit", "hourly", "r"), 0);
    assert_eq!(
        param(&limited, "ratelimit", "hourly", "t"),
        retry,
        "t and Retry-After agree"
    );
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"hourly\";q=3;w=3600")
    );
    assert_eq!(upstream.attempts(), 3, "the 429 never reached the upstream");

    // Another key has its own quota.
    let bob = get(&client, "/fixed/a", &[("x-user", "bob")]);
    assert_eq!(bob.status, 200);
    assert_eq!(param(&bob, "ratelimit", "hourly", "r"), 2);
    // Upstream errors carry the headers too.
    upstream.script([wasmgate_e2e::Scripted::status(503)]);
    let carol = get(&client, "/fixed/a", &[("x-user", "carol")]);
    assert_eq!(carol.status, 503);
    assert_eq!(param(&carol, "ratelimit", "hourly", "r"), 2);

    // Two limits: both listed; the token bucket (2, then one per 10 s) refuses first.
    let dave = [("x-user", "dave")];
    let first = get(&client, "/multi/", &dave);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"burst\";q=1;w=10, \"hourly\";q=3;w=3600")
    );
    assert_eq!(param(&first, "ratelimit", "burst", "r"), 1);
    assert_eq!(param(&first, "ratelimit", "hourly", "r"), 2);
    assert_eq!(get(&client, "/multi/", &dave).status, 200);
    let refused = get(&client, "/multi/", &dave);
    assert_eq!(refused.status, 429);
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((9..=10).contains(&retry), "next token in 10 s: {retry}");
    assert_eq!(param(&refused, "ratelimit", "burst", "t"), retry);
    assert_eq!(
        param(&refused, "ratelimit", "hourly", "r"),
        1,
        "a refusal is not counted"
    );
    assert_eq!(requests(&envoy, "limited"), 2);
    assert!(
        envoy.log().contains("rate-limit 0.1.0 (commit "),
        "build identity logged at VM start"
    );
}

/// `x-ratelimit`, `both` and `none` header modes.
#[test]
fn x_ratelimit_both_and_none_header_modes() {
    let (_upstream, envoy) = start(&functional_config());
    let client = envoy.client();
    ensure_window_room(3600, 20);
    let user = [("x-user", "erin")];
    let r = get(&client, "/xrl/", &user);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("3, 3;w=3600;name=\"hourly\"")
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(reset.abs_diff(seconds_to_window_end(3600)) <= 2);
    assert_eq!(r.header("ratelimit"), None);
    assert_eq!(r.header("ratelimit-policy"), None);

    let both = get(&client, "/both/", &user);
    assert_eq!(both.header("x-ratelimit-remaining"), Some("2"));
    assert_eq!(param(&both, "ratelimit", "hourly", "r"), 2);

    let none = get(&client, "/none/", &user);
    assert_eq!(none.status, 200);
    assert!(none.header("ratelimit").is_none() && none.header("x-ratelimit-limit").is_none());
    let refused = get(&client, "/none/", &user);
    assert_eq!(refused.status, 429);
    assert!(
        refused.header("retry-after").is_some(),
        "a 429 always has Retry-After"
    );
    assert!(refused.header("ratelimit").is_none());
}

/// Shadow mode counts and reports but never rejects; missing keys; key parts; disabled rules.
#[test]
fn shadow_missing_keys_and_key_parts() {
    let (upstream, envoy) = start(&functional_config());
    let client = envoy.client();
    ensure_window_room(3600, 20);

    for _ in 0..6 {
        let r = get(&client, "/shadow/", &[]);
        assert_eq!(r.status, 200, "shadow mode never rejects");
        assert!(r.header("ratelimit").is_some());
    }
    let last = get(&client, "/shadow/", &[]);
    assert_eq!(param(&last, "ratelimit", "hourly", "r"), 0);
    assert_eq!(requests(&envoy, "shadow_limited"), 5);

    // on_missing_key: the default (the client address stands in), deny, allow, shared.
    let keyless = [("x-forwarded-for", "7.7.7.7")];
    assert_eq!(get(&client, "/default/", &keyless).status, 200);
    let second = get(&client, "/default/", &keyless);
    assert_eq!(
        second.status, 429,
        "keyless requests are limited by address"
    );
    assert_eq!(second.header("x-envoy-ratelimited"), Some("true"));
    assert_eq!(
        get(&client, "/default/", &[("x-forwarded-for", "7.7.7.8")]).status,
        200,
        "another address"
    );
    assert_eq!(
        get(
            &client,
            "/default/",
            &[("x-user", "7.7.7.7"), ("x-forwarded-for", "7.7.7.7")]
        )
        .status,
        200,
        "a key value equal to the address is another key"
    );
    let denied = get(&client, "/deny/", &[]);
    assert_eq!(denied.status, 400);
    assert_eq!(denied.json()["error"], "missing_rate_limit_key");
    assert_eq!(metric(&envoy, "missing_key_total", &[]), 1);
    for _ in 0..3 {
        let r = get(&client, "/allow/", &[]);
        assert_eq!(r.status, 200, "passed unlimited");
        assert!(r.header("ratelimit").is_none());
    }
    assert_eq!(get(&client, "/shared/", &[]).status, 200);
    assert_eq!(
        get(&client, "/shared/", &[]).status,
        429,
        "one key for all keyless requests"
    );
    assert_eq!(get(&client, "/shared/", &[("x-user", "frank")]).status, 200);

    // client_ip from X-Forwarded-For with one trusted hop: the last entry.
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    assert_eq!(get(&client, "/ip/", &xff("9.9.9.9, 1.1.1.1")).status, 200);
    assert_eq!(
        get(&client, "/ip/", &xff("8.8.8.8, 1.1.1.1")).status,
        429,
        "same client"
    );
    assert_eq!(get(&client, "/ip/", &xff("1.1.1.1, 2.2.2.2")).status, 200);
    assert_eq!(
        get(&client, "/ip/", &[]).status,
        400,
        "no XFF entry to trust"
    );

    // Query parameter and method.
    assert_eq!(get(&client, "/query/?tenant=a", &[]).status, 200);
    assert_eq!(get(&client, "/query/?x=1&tenant=a", &[]).status, 429);
    assert_eq!(get(&client, "/query/?tenant=b", &[]).status, 200);
    assert_eq!(
        client.send("POST", "/query/?tenant=a", &[], b"").status,
        200
    );
    // Route name (the template names the /named/ route).
    assert_eq!(get(&client, "/named/1", &[]).status, 200);
    assert_eq!(get(&client, "/named/2", &[]).status, 429);

    // A disabled rule and a request matching no rule pass without headers.
    for path in ["/health", "/elsewhere"] {
        for _ in 0..3 {
            let r = get(&client, path, &[]);
            assert_eq!(r.status, 200);
            assert!(r.header("ratelimit").is_none());
        }
    }
    assert!(upstream.attempts() > 0);
}

/// The issue's "Hostile requests": a client refused under its key sends a few hundred other key
/// values through a table of 16 entries on two workers. Its entry is active, so no other key
/// replaces it: it stays refused. The other keys take the free entries and then share the rule's
/// one overflow quota (`wasmgate_rate_limit_table_overflow_total`); a key already in the table
/// keeps its count.
#[test]
fn a_refused_key_stays_refused_while_other_keys_flood_a_small_table() {
    let config = json!({"max_keys": 16, "rules": [{"key": [{"header": "x-k"}],
        "limits": [limit("hourly", 3, "1h", "fixed_window")]}]});
    let envoy = start_two_workers(&config);
    ensure_window_room(3600, 60);
    let client = envoy.client();
    let victim = [("x-k", "victim")];
    for remaining in [2, 1, 0] {
        let r = get(&client, "/x", &victim);
        assert_eq!(r.status, 200);
        assert_eq!(param(&r, "ratelimit", "hourly", "r"), remaining);
    }
    assert_eq!(get(&client, "/x", &victim).status, 429);
    let honest = [("x-k", "honest")];
    assert_eq!(
        param(&get(&client, "/x", &honest), "ratelimit", "hourly", "r"),
        2
    );

    let others = 400;
    let responses = hammer(&envoy, others, 8, |i| {
        ("/x".into(), vec![("x-k".to_string(), format!("other-{i}"))])
    });
    // 14 free entries (16 less the victim's and honest's), then one quota of 3 for the rest:
    // exact across both workers.
    let free = 16 - 2;
    assert_eq!(count(&responses, 200), free + 3);
    assert_eq!(count(&responses, 429), others - free - 3);
    assert_eq!(
        metric(&envoy, "table_overflow_total", &[]),
        (others - free) as u64
    );
    assert_eq!(
        metric(&envoy, "keys_evicted_total", &[]),
        0,
        "no active entry replaced"
    );

    let r = get(&client, "/x", &victim);
    assert_eq!(r.status, 429, "the refused key is still refused");
    assert_eq!(param(&r, "ratelimit", "hourly", "r"), 0);
    let r = get(&client, "/x", &honest);
    assert_eq!(r.status, 200);
    assert_eq!(
        param(&r, "ratelimit", "hourly", "r"),
        1,
        "honest kept its count"
    );
    assert_both_workers_served(&envoy);
    assert_eq!(metric(&envoy, "errors_total", &[]), 0);
}

/// An invalid configuration makes Envoy refuse to start, with the one contract log line.
#[test]
fn invalid_configuration_is_rejected() {
    let config = json!({"rules": [{"limits": [limit("x", 0, "1s", "fixed_window")]}]});
    let template =
        std::fs::read_to_string(repo_root().join("tests/configs/rate-limit-direct.yaml")).unwrap();
    let rendered = template
        .replace("${WASM_DIR}", &wasm_dir().display().to_string())
        .replace("${CONFIG}", &config.to_string());
    let dir = std::env::temp_dir().join(format!("wasmgate-rl-invalid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, rendered).unwrap();
    let mut child = Command::new(wasmgate_e2e::envoy_bin())
        .arg("-c")
        .arg(&path)
        .args(["--use-dynamic-base-id", "-l", "info"])
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("Envoy started with an invalid rate-limit configuration");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!status.success(), "Envoy must exit with an error:\n{log}");
    assert!(
        log.contains(
            "wasmgate rate-limit: invalid configuration at rules[0].limits[0].requests: must be between 1 and"
        ),
        "{log}"
    );
}

/// Envoy's heap in use now, from the admin `/memory` endpoint (tcmalloc's live figure; the
/// `server.memory_allocated` gauge is only refreshed at each stats flush).
fn allocated(envoy: &Envoy) -> u64 {
    let memory = envoy.admin_client().get("/memory").json();
    memory["allocated"].as_str().unwrap().parse().unwrap()
}

/// Sends `warm` then `more` distinct keys (600-byte values) through a table of `max_keys` slots
/// on two workers; returns the growth of Envoy's allocated memory over the `more` keys and the
/// evictions counted. The limit's window is 1 ms, so an entry is idle (its window over) soon
/// after its request, and the next keys take the idle entries: the table churns as it would
/// under a stream of one-off clients.
fn memory_growth(max_keys: u64, warm: usize, more: usize) -> (u64, u64) {
    let config = json!({"max_keys": max_keys, "rules": [{"key": [{"header": "x-k"}],
        "limits": [limit("tiny", 1000, "1ms", "fixed_window")]}]});
    let envoy = start_two_workers(&config);
    let request = |offset: usize| {
        move |i: usize| {
            let key = format!("{:0>600}", offset + i);
            ("/m".to_string(), vec![("x-k".to_string(), key)])
        }
    };
    let responses = hammer(&envoy, warm, 8, request(0));
    assert_eq!(count(&responses, 200), warm);
    let before = allocated(&envoy);
    let started = Instant::now();
    let responses = hammer(&envoy, more, 8, request(warm));
    assert_eq!(count(&responses, 200), more);
    let after = allocated(&envoy);
    let growth = after.saturating_sub(before);
    eprintln!(
        "max_keys {max_keys}: allocated {before} -> {after} (+{growth} bytes) over {more} more distinct keys in {:?}",
        started.elapsed()
    );
    assert_eq!(
        metric(&envoy, "errors_total", &[]),
        0,
        "no CAS retry ran out"
    );
    (growth, metric(&envoy, "keys_evicted_total", &[]))
}

/// Many distinct keys leave Envoy's memory bounded by `max_keys`. The issue asks for 1,000,000
/// keys; that takes minutes on a 2-core CI runner, so this test sends 50,000 distinct keys with
/// 600-byte values through a 500-entry table (100 times its size), and checks the measurement
/// itself with a table large enough to keep every key (which must grow by megabytes).
#[test]
fn distinct_keys_leave_memory_bounded() {
    let (warm, more) = (4_000, 46_000);
    let (bounded, evicted) = memory_growth(500, warm, more);
    let bound = 4 * 1024 * 1024;
    assert!(
        bounded < bound,
        "memory grew by {bounded} bytes for {more} keys with 500 entries"
    );
    let total = (warm + more) as u64;
    assert!(
        evicted >= total - 500 && evicted < total,
        "every key beyond the 500 entries took an idle key's entry: {evicted}"
    );
    // Control: with room for every key, each key adds a shared-data bucket of its own (entries
    // hold a digest of the key, not the key), and fewer keys than above grow memory past the
    // bound, so the bound is a real observation, not an insensitive gauge.
    let (unbounded, evicted) = memory_growth(1_000_000, warm, 32_000);
    assert_eq!(evicted, 0, "room for every key: nothing replaced");
    assert!(
        unbounded > bound && unbounded > 4 * bounded,
        "keeping every key grew memory by only {unbounded} bytes (bounded: {bounded})"
    );
}

/// Per-IP and per-tenant limits on one request, on two workers under concurrency: the tenant's
/// limit admits exactly its quota, and the requests it refused were counted under no IP (what
/// each IP has used, measured afterwards under tenants of their own, adds up to exactly what the
/// tenant admitted).
#[test]
fn several_keys_per_request_are_exact_and_a_refusal_counts_nowhere() {
    let config = json!({
        "client_ip": {"xff_num_trusted_hops": 1},
        "rules": [{"name": "tenants", "key": ["client_ip"], "limits": [
            limit("per_ip", 30, "1h", "fixed_window"),
            {"name": "per_tenant", "requests": 100, "window": "1h", "algorithm": "fixed_window",
             "key": [{"header": "x-tenant"}]}]}]});
    let envoy = start_two_workers(&config);
    ensure_window_room(3600, 60);
    let ip = |i: usize| format!("10.0.{}.1", i % 8);
    let responses = hammer(&envoy, 1000, 16, |i| {
        (
            "/".to_string(),
            vec![
                ("x-forwarded-for".to_string(), ip(i)),
                ("x-tenant".to_string(), "acme".to_string()),
            ],
        )
    });
    assert_eq!(count(&responses, 200), 100, "the tenant's quota, exactly");
    assert_eq!(count(&responses, 429), 900);
    assert_both_workers_served(&envoy);
    let client = envoy.client();
    let mut used = 0;
    for i in 0..8 {
        // A tenant of its own per IP, so no tenant limit interferes with the measurement.
        let headers = [
            ("x-forwarded-for", ip(i)),
            ("x-tenant", format!("other-{i}")),
        ];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let mut left = 0;
        while get(&client, "/", &headers).status == 200 {
            left += 1;
            assert!(left <= 30);
        }
        used += 30 - left;
    }
    assert_eq!(used, 100, "only the admitted requests were counted per IP");
    assert_eq!(
        metric(
            &envoy,
            "limit_requests_total",
            &[
                ("rule", "tenants"),
                ("limit", "per_tenant"),
                ("outcome", "limited")
            ]
        ),
        900
    );
}

/// Cost, IPv6 networks, gRPC and configured replies, shadow percentage with its marker, and
/// per-rule and per-limit metrics as Prometheus labels (the template's `stats_tags`).
#[test]
fn cost_prefixes_replies_shadow_and_labelled_metrics() {
    let hourly = |n: u64| limit("hourly", n, "1h", "fixed_window");
    let config = json!({
        "client_ip": {"xff_num_trusted_hops": 1},
        "rules": [
            {"name": "cost", "match": {"path_prefix": "/cost/"}, "key": [{"constant": "c"}],
             "cost_header": "x-cost", "max_cost": 5, "limits": [hourly(12)]},
            {"name": "v6", "match": {"path_prefix": "/v6/"}, "limits": [hourly(3)]},
            {"name": "grpc", "match": {"path_prefix": "/pkg.Svc/"}, "key": [{"constant": "g"}],
             "limits": [hourly(1)]},
            {"name": "custom", "match": {"path_prefix": "/custom/"}, "key": [{"constant": "u"}],
             "limits": [hourly(1)],
             "reply": {"status": 503, "error": "quota_exceeded", "message": "Come back later."}},
            {"name": "shadow", "match": {"path_prefix": "/shadow/"}, "key": [{"constant": "s"}],
             "limits": [hourly(1)], "shadow": true, "shadow_percentage": 50}
        ]
    });
    let (upstream, envoy) = start(&config);
    let client = envoy.client();
    ensure_window_room(3600, 30);

    // Cost: what a client writes in the header is bounded: at most max_cost, 1 when it is not
    // a positive number.
    let remaining_after = |value: &str| {
        let r = get(&client, "/cost/", &[("x-cost", value)]);
        assert_eq!(r.status, 200, "cost {value:?}");
        param(&r, "ratelimit", "hourly", "r")
    };
    assert_eq!(
        remaining_after("99999999999999999999999"),
        7,
        "charged max_cost"
    );
    assert_eq!(remaining_after("-4"), 6);
    assert_eq!(remaining_after("abc"), 5);
    assert_eq!(remaining_after("3"), 2);
    let refused = get(&client, "/cost/", &[("x-cost", "3")]);
    assert_eq!(refused.status, 429, "3 > the 2 left");
    assert_eq!(
        param(&refused, "ratelimit", "hourly", "r"),
        2,
        "a refusal takes nothing"
    );
    assert_eq!(remaining_after("2"), 0);

    // IPv6: a client rotating addresses inside its /64 (the default prefix) has one quota.
    let admitted = (1..=10)
        .filter(|i| {
            let address = format!("2001:db8:7:8::{i:x}");
            get(&client, "/v6/", &[("x-forwarded-for", &address)]).status == 200
        })
        .count();
    assert_eq!(admitted, 3);
    assert_eq!(
        get(&client, "/v6/", &[("x-forwarded-for", "2001:db8:7:9::1")]).status,
        200,
        "another /64"
    );

    // gRPC: RESOURCE_EXHAUSTED, as Envoy's rate_limited_as_resource_exhausted.
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    assert_eq!(client.send("POST", "/pkg.Svc/Call", &grpc, b"").status, 200);
    let limited = client.send("POST", "/pkg.Svc/Call", &grpc, b"");
    assert_eq!(limited.status, 200, "a gRPC error travels as grpc-status");
    assert_eq!(
        limited.header("grpc-status"),
        Some("8"),
        "{:?}",
        limited.headers
    );
    assert_eq!(limited.header("x-envoy-ratelimited"), Some("true"));

    // A configured reply. A client's own x-envoy-ratelimited changes nothing: it is counted
    // like any request, and only the filter's refusals carry the header.
    let forged = get(&client, "/custom/", &[("x-envoy-ratelimited", "true")]);
    assert_eq!(forged.status, 200);
    assert_eq!(forged.header("x-envoy-ratelimited"), None);
    let custom = get(&client, "/custom/", &[]);
    assert_eq!(custom.status, 503);
    assert_eq!(custom.json()["error"], "quota_exceeded");
    assert_eq!(custom.json()["message"], "Come back later.");
    assert_eq!(custom.header("x-envoy-ratelimited"), Some("true"));
    assert!(custom.header("retry-after").is_some());

    // Shadow at 50%: of the over-limit requests every other one passes, marked for the
    // upstream (a client's own marker never arrives); the others are refused.
    let forged = [("x-ratelimit-shadow", "forged")];
    let first = get(&client, "/shadow/", &forged);
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["headers"]["x-ratelimit-shadow"], Value::Null);
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&client, "/shadow/", &forged).status)
        .collect();
    assert_eq!(statuses, [429, 200, 429, 200]);
    let last = upstream.received().pop().unwrap();
    assert_eq!(last["headers"]["x-ratelimit-shadow"], "hourly");

    // Per-rule and per-limit counters, labelled by the template's stats_tags.
    assert_eq!(
        metric(
            &envoy,
            "rule_requests_total",
            &[("rule", "v6"), ("outcome", "limited")]
        ),
        7
    );
    let prometheus = envoy.admin_client().get("/stats/prometheus").text();
    for series in [
        r#"wasmgate_rate_limit_rule_requests_total{plugin="rate-limit",outcome="limited",rule="v6"} 7"#,
        r#"wasmgate_rate_limit_rule_requests_total{plugin="rate-limit",outcome="shadow_limited",rule="shadow"} 2"#,
        r#"wasmgate_rate_limit_limit_requests_total{plugin="rate-limit",outcome="limited",rule="shadow",limit="hourly"} 2"#,
        r#"wasmgate_rate_limit_limit_requests_total{plugin="rate-limit",outcome="shadow_limited",rule="shadow",limit="hourly"} 2"#,
        r#"wasmgate_rate_limit_rule_requests_total{plugin="rate-limit",outcome="allowed",rule="cost"} 5"#,
        r#"wasmgate_rate_limit_requests_total{plugin="rate-limit",outcome="shadow_limited"} 2"#,
    ] {
        assert!(
            prometheus.lines().any(|l| l == series),
            "{series} in\n{}",
            prometheus
                .lines()
                .filter(|l| l.contains("wasmgate_rate_limit_"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

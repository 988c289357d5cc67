#!/usr/bin/env python3
"""Writes the fuzz seeds into fuzz/corpus/<target>/seed-*: the shipped configurations (envoy/*.yaml,
examples/**/*.yaml, the filter READMEs' JSON blocks), the test vectors (../shared/vectors or
$WASMGATE_VECTORS: JWS, RFC 9421, SigV4, webhooks) and hand-written requests for every scheme,
signed with the secrets of fuzz/targets/configs/hmac_auth.json so the fuzzer starts past
verification. Run by `make fuzz` before fuzzing (idempotent: seeds are overwritten by name).

`seeds.py trim KB`: after `cargo fuzz cmin`, keeps in each corpus directory the smallest inputs
up to KB kilobytes (cmin already prefers the smallest input per feature), then writes the seeds
again, so the committed corpus stays small and always starts from the shipped configs."""

import base64
import glob
import hashlib
import hmac
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
VECTORS = os.environ.get("WASMGATE_VECTORS", os.path.join(ROOT, "..", "shared", "vectors"))
NOW = 1735689600  # drive::DEFAULT_NOW_MS / 1000


def put(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def embedded_configs():
    """(filter, name, json text) from Envoy configs, Istio manifests and READMEs."""
    try:
        import yaml
    except ImportError:
        yaml = None
    out = []
    if yaml:
        for path in sorted(glob.glob(os.path.join(ROOT, "envoy", "*.yaml"))
                           + glob.glob(os.path.join(ROOT, "examples", "**", "*.yaml"), recursive=True)):
            try:
                docs = list(yaml.safe_load_all(open(path)))
            except Exception:
                continue

            def walk(o):
                if isinstance(o, dict):
                    conf = o.get("configuration")
                    if isinstance(conf, dict) and isinstance(conf.get("value"), str):
                        yield o.get("root_id") or o.get("name") or "", conf["value"]
                    spec = o.get("spec")
                    if isinstance(spec, dict) and "pluginConfig" in spec:
                        yield o.get("metadata", {}).get("name", ""), json.dumps(spec["pluginConfig"])
                    for v in o.values():
                        yield from walk(v)
                elif isinstance(o, list):
                    for v in o:
                        yield from walk(v)

            for doc in docs:
                for i, (who, text) in enumerate(walk(doc)):
                    out.append((who, f"{os.path.basename(path)}-{i}", text))
    for readme in sorted(glob.glob(os.path.join(ROOT, "filters", "*", "README.md"))):
        filt = os.path.basename(os.path.dirname(readme))
        for i, block in enumerate(re.findall(r"```json\n(.*?)```", open(readme).read(), re.S)):
            try:
                if isinstance(json.loads(block), dict):
                    out.append((filt, f"readme-{i}", block))
            except ValueError:
                pass
    return out


def config_seeds():
    targets = {"jwt-auth": "config_jwt_auth", "hmac-auth": "config_hmac_auth",
               "rate-limit": "config_rate_limit", "transform": "config_transform",
               "retry": "config_retry", "chain": "config_chain"}
    for who, name, text in embedded_configs():
        for filt, target in targets.items():
            if filt in who or (filt.replace("-", "") in who.replace("-", "")):
                put(target, name, text)
    for path in glob.glob(os.path.join(ROOT, "fuzz", "targets", "configs", "*.json")):
        base = os.path.basename(path)[:-5]
        target = "config_" + ("retry" if base.startswith("retry") else base)
        put(target, "rich-" + base, open(path).read())
        put(target, "empty", "{}")


def message(headers, body=b"", now_ms=None):
    lines = [f"@{now_ms}"] if now_ms is not None else []
    lines += [f"{n}: {v}" for n, v in headers]
    head = "\n".join(lines).encode()
    return head + b"\n\n" + (body if isinstance(body, bytes) else body.encode())


def request(method, path, headers=(), body=b"", host="api.example.com", now_ms=None):
    return message([(":method", method), (":authority", host), (":path", path)] + list(headers),
                   body, now_ms)


def hmac_seeds():
    body = b'{"event": "push", "id": 1}'
    hexmac = lambda key, msg, h=hashlib.sha256: hmac.new(key, msg, h).hexdigest()
    b64mac = lambda key, msg, h=hashlib.sha256: base64.b64encode(hmac.new(key, msg, h).digest()).decode()
    ts = str(NOW)
    wh_key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    custom_payload = f"msg-1.{ts}.POST./custom/hook?x=1.acme.".encode() + body
    reqs = {
        "github": request("POST", "/hooks/github", [("x-hub-signature-256", "sha256=" + hexmac(b"fuzz-github-secret", body))], body),
        "stripe": request("POST", "/stripe/events", [("stripe-signature", f"t={ts},v1=" + hexmac(b"whsec_fuzz_stripe_secret", f"{ts}.".encode() + body) + ",v0=00")], body),
        "slack": request("POST", "/slack/events", [("x-slack-request-timestamp", ts), ("x-slack-signature", "v0=" + hexmac(b"fuzz-slack-secret", f"v0:{ts}:".encode() + body))], body),
        "shopify": request("POST", "/shopify/orders", [("x-shopify-hmac-sha256", b64mac(b"fuzz-shopify-secret", body))], body),
        "standard_webhooks": request("POST", "/webhooks/in", [("webhook-id", "msg_1"), ("webhook-timestamp", ts), ("webhook-signature", "v1," + b64mac(wh_key, f"msg_1.{ts}.".encode() + body) + " v1a,xyz")], body),
        "custom": request("POST", "/custom/hook?x=1", [("x-id", "msg-1"), ("x-timestamp", ts), ("x-tenant", "acme"), ("x-signature", "sha512=" + b64mac(b"fuzz-custom-secret", custom_payload, hashlib.sha512))], body),
        "health": request("GET", "/health", []),
    }
    try:
        v = json.load(open(os.path.join(VECTORS, "rfc9421.json")))
        s = v["B.2.5_hmac_sha256"]
        headers = [("date", "Tue, 20 Apr 2021 02:07:55 GMT"), ("content-type", "application/json"),
                   ("content-digest", v["content_digest"]), ("signature-input", s["Signature-Input"]),
                   ("signature", s["Signature"])]
        reqs["rfc9421"] = request("POST", "/foo?param=Value&Pet=dog", headers, v["body_exact"], host="example.com", now_ms=s["created"] * 1000)
        reqs["rfc9421_sig_path"] = request("POST", "/sig/foo?param=Value&Pet=dog", headers, v["body_exact"], host="example.com", now_ms=s["created"] * 1000)
    except (OSError, KeyError, ValueError):
        pass
    try:
        for case in json.load(open(os.path.join(VECTORS, "sigv4.json")))["cases"]:
            raw = case.get("header-signed-request.txt", "")
            head, _, rbody = raw.partition("\n\n")
            lines = head.split("\n")
            method, target, _ = (lines[0].split(" ") + ["", "", ""])[:3]
            hdrs = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if ":" in line]
            host = dict((k.lower(), v) for k, v in hdrs).get("host", "")
            hdrs = [(k.lower(), v) for k, v in hdrs if k.lower() != "host"]
            when = case["context"]["timestamp"]
            import datetime
            ms = int(datetime.datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()) * 1000
            reqs["sigv4-" + case["case"]] = request(method, target, hdrs, rbody, host=host, now_ms=ms)
            reqs["sigv4-aws-" + case["case"]] = request(method, "/aws" + target, hdrs, rbody, host=host, now_ms=ms)
    except (OSError, KeyError, ValueError):
        pass
    try:
        g = json.load(open(os.path.join(VECTORS, "github_webhook.json")))
        reqs["github-vector"] = request("POST", "/", [("x-hub-signature-256", g["X-Hub-Signature-256"])], g["payload"])
    except (OSError, KeyError, ValueError):
        pass
    for name, data in reqs.items():
        put("hmac_headers", name, data)
        put("hmac_request", name, data)
        put("request_view", name, data)
    put("hmac_request", "github-replayed", reqs["github"] + b"\n--\n\n\n--\n:status: 503\n\n")


def jwt_seeds():
    tokens, jwks = [], []

    def walk(o):
        if isinstance(o, dict):
            if "kty" in o:
                jwks.append({k: v for k, v in o.items() if k not in ("d", "p", "q", "dp", "dq", "qi")})
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
        elif isinstance(o, str) and re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*", o) and len(o) > 20:
            tokens.append(o)

    for name in ("rfc7515.json", "rfc7520_jws.json", "rfc8037.json", "jwt_verify_lib.json"):
        try:
            walk(json.load(open(os.path.join(VECTORS, name))))
        except (OSError, ValueError):
            pass
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    key = base64.urlsafe_b64decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow==")
    claims = {"iss": "joe", "sub": "alice", "aud": ["api"], "exp": NOW + 3600, "nbf": NOW - 10,
              "scope": "read admin", "http://example.com/is_root": True, "nested": {"a": [1, "x"]}}
    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    fresh = signing + "." + b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())
    tokens.append(fresh)
    for i, t in enumerate(dict.fromkeys(tokens)):
        put("jws", f"token-{i}", t)
    for i, j in enumerate(jwks):
        put("jwks", f"key-{i}", json.dumps({"keys": [j]}))
    put("jwks", "all", json.dumps({"keys": jwks}))
    put("claims", "rich", "scope=admin|root\n" + json.dumps(claims))
    put("claims", "nested", "nested.a=x\n" + json.dumps(claims))
    put("claims", "aud-string", "iss=joe\n" + json.dumps({"iss": "joe", "aud": "api", "exp": 1.5e300}))
    reqs = {
        "bearer": request("GET", "/admin/x", [("authorization", "Bearer " + fresh)]),
        "param": request("GET", "/data?access_token=" + fresh + "&b=1", []),
        "cookie": request("GET", "/data", [("cookie", "a=b; session=" + fresh)]),
        "public": request("GET", "/public/x", []),
        "remote": request("GET", "/both", [("authorization", "Bearer " + fresh), ("x-remote-token", fresh)])
        + b"\n--\n" + message([(":status", "200")], json.dumps({"keys": jwks[:3]})),
    }
    for name, data in reqs.items():
        put("jwt_request", name, data)


def core_seeds():
    paths = ["/", "/a/b/../c", "/a//b/./c/", "/%7Euser/%41", "/a%2Fb", "/a/..;/b", "/a\\b", "/%zz",
             "/api/v1/users?x=1#frag", "//", "/.", "/a/b/%2e%2e/c", "/%C3%A9t%C3%A9", "/api /api"]
    for i, p in enumerate(paths):
        put("path", f"p{i}", p)
    put("request_view", "xff", request("GET", "/a/../b?q=1&a+b=%20", [("x-forwarded-for", "1.2.3.4, 5.6.7.8"), ("x-forwarded-for", "9.9.9.9"), ("x-source", "[::1]:80"), ("content-length", "12")], host="[::1]:8080"))
    matches = [
        {"path_prefix": "/api/", "methods": ["GET", "POST"], "hosts": ["*.example.com", "api.example.com"]},
        {"path_exact": "/health", "headers": {"x-a": "1", "x-b": {"present": False}}, "routes": ["r"]},
        {"hosts": ["*"]},
        {},
    ]
    for i, m in enumerate(matches):
        put("rule_match", f"m{i}", json.dumps(m).encode() + b"\n" + request("GET", "/api/x", [("x-a", "1"), ("x-route", "r")]))
    for i, q in enumerate(["a=1&b=2&a=3", "q=a%20b+c&&=x&k", "%zz=%&x=%E2%82%AC", "lang=en;x=1"]):
        put("query", f"q{i}", q)
    vars_req = request("GET", "/v1/users/42?q=hello%20world&x=1", [("x-jwt-sub", "alice"), ("x-request-id", "rid"), ("x-source", "10.0.0.1:5")])
    for i, t in enumerate(["{{header.x-jwt-sub}}", "{{method}} {{host}} {{path}} {{query.q}} {{client_ip}} {{route}} {{request_id}}", "plain", "{{nope}}", "{{header.}}", "a{{query.x}}b{{"]):
        put("template", f"t{i}", t.encode() + b"\n" + vars_req)
    for i, p in enumerate(["", "/a/b", "/a~1b/~0c", "/list/0", "/list/-", "/x/01", "/~2"]):
        put("json_pointer", f"p{i}", p)
    body = b'{"user_name": "bob", "password": "x", "a": [1, 2, {"b": null}], "meta": {}, "dup": 1, "n": 1.0e400}'
    for i, op in enumerate(["set /meta/source \"gateway\"", "set /a/- {\"k\": [true]}", "remove /password", "remove /a/1", "rename /user_name /username", "rename /a /meta/a", "set /new/deep/x 1"]):
        put("json_edit", f"e{i}", op.encode() + b"\n" + body)
    put("json_edit", "whitespace", b"set /x 1\n \r\n\t[ 1 , {\"x\" : 2 } ] \n")


def filter_seeds():
    body = b'{"user_name": "bob", "password": "x", "internal": 1}'
    json_h = [("content-type", "application/json"), ("content-length", str(len(body)))]
    for name, seed in [("headers", request("GET", "/v1/users?q=1", [("x-internal", "s"), ("x-jwt-sub", "alice")])),
                       ("body", request("POST", "/v1/users", json_h, body))]:
        put("chain_request", name, seed)
    put("transform_request", "headers", request("GET", "/v1/users?q=1&debug=1&v=0", [("x-internal", "s"), ("x-old", "o"), ("x-jwt-sub", "alice"), ("x-version", "3")]))
    put("transform_request", "body", request("POST", "/v1/users", json_h, body)
        + b"\n--\n\n\n--\n" + message([(":status", "200"), ("content-type", "application/json"), ("server", "x")], body))
    put("transform_request", "regex", request("GET", "/users/42/profile", []))
    put("transform_request", "gzip", request("POST", "/v1/x", json_h + [("content-encoding", "gzip")], body))
    for i, (path, h) in enumerate([("/api/x?user=u", [("x-api-key", "k"), ("x-forwarded-for", "1.1.1.1")]), ("/", []), ("/global/x", [("x-api-key", "k")])]):
        put("rate_limit_request", f"r{i}", request("GET", path, h))
        put("rate_limit_key", f"r{i}", request("GET", path, h + [("x-source", "10.0.0.1:3")]))
    # A RateLimitResponse: overall_code OVER_LIMIT (2), one status with a limit and duration.
    status = bytes([0x08, 0x02, 0x12, 0x06, 0x08, 0x0a, 0x10, 0x01, 0x18, 0x01, 0x18, 0x05, 0x2a, 0x02, 0x08, 0x07])
    resp = bytes([0x08, 0x02, 0x12, len(status)]) + status
    put("rate_limit_answer", "over", resp)
    put("rate_limit_answer", "ok", bytes([0x08, 0x01]))
    put("rate_limit_request", "global-over", request("GET", "/global/x", [("x-api-key", "k")]) + b"\n--\n" + message([("grpc-status", "0")], resp))
    for i, (m, h, b, ans) in enumerate([
        ("GET", [], b"", message([(":status", "503"), ("retry-after", "1")], b"no")),
        ("POST", [("idempotency-key", "k1"), ("content-length", "2")], b"{}", message([(":status", "429"), ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])),
        ("GET", [], b"", b""),
    ]):
        put("retry_request", f"r{i}", request(m, "/x", h, b) + b"\n--\n" + ans + b"\n--\n" + message([(":status", "503"), ("x-envoy-attempt-count", "3")]))
    for i, v in enumerate(["1", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999999999999999", "-1", "Sun, 06 Nov 1994 08:49:37 GMT"]):
        put("retry_after", f"v{i}", v.encode() + b"\n" + message([(":status", "503"), ("x-envoy-attempt-count", "2")], b"upstream connect error or disconnect/reset before headers"))
    w = lambda n: n.to_bytes(8, "little")
    put("state_budget", "window", w(NOW) + f"{NOW - 1}:10:2;{NOW}:5:1".encode())
    put("state_budget", "max", w(2**64 - 1) + f"{2**64 - 1}:{2**64 - 1}:{2**64 - 1}".encode())
    for i, s in enumerate(["closed:3", "open:99999999999999", "half:1:0:5", f"half:{2**32 - 1}:{2**32 - 1}:{2**64 - 1}", "closed:18446744073709551615"]):
        put("state_breaker", f"s{i}", w(NOW * 1000) + s.encode())
    put("state_replay", "empty", w(NOW))
    put("state_replay", "one", w(NOW) + bytes(range(16)) + w(2**64 - 1)[::-1] + b"\x01")
    put("state_rate_limit", "zero", w(NOW * 10**9) + bytes(64))
    put("state_rate_limit", "max", w(2**64 - 1) + b"\xff" * 96)
    doc = b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
    put("state_fetch", "empty", w(NOW * 1000) + w(600000))
    put("state_fetch", "doc", w(NOW * 1000) + w(600000) + b"f1 3 %d 4 0 0 0 0 0 1\n" % (NOW * 1000 - 5000) + doc)
    put("state_fetch", "backoff", w(2**64 - 1) + w(2**64 - 1) + b"f1 1 0 9 4294967295 18446744073709551615 0 1 18446744073709551615 0\n")
    put("hmac_jwks", "ed25519", doc)
    put("hmac_jwks", "mixed", b'{"keys": [{"kty": "EC", "crv": "P-256", "kid": "e", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}, {"kty": "oct", "kid": "h", "k": "AA"}, {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}')


def trim(kb):
    for d in sorted(glob.glob(os.path.join(CORPUS, "*"))):
        files = sorted((os.path.getsize(f), f) for f in glob.glob(os.path.join(d, "*")))
        total = 0
        for size, f in files:
            total += size
            if total > kb * 1024:
                os.remove(f)


def main():
    if sys.argv[1:2] == ["trim"]:
        trim(int(sys.argv[2]) if len(sys.argv) > 2 else 8)
    config_seeds()
    hmac_seeds()
    jwt_seeds()
    core_seeds()
    filter_seeds()
    n = sum(len(files) for _, _, files in os.walk(CORPUS))
    print(f"fuzz seeds: {n} files under {os.path.relpath(CORPUS, ROOT)}/", file=sys.stderr)


if __name__ == "__main__":
    main()

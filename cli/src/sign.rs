//! `wasmgate sign`: the signature headers of a request for an hmac-auth scheme. The key comes from
//! hmac-auth's own configuration code (encodings, `whsec_`), the signed payload of the webhook
//! schemes from the filter's own header reading (`verify::prepare`), the RFC 9421 signature base
//! and the SigV4 canonical request and key derivation from its `httpsig` and `sigv4` modules; every
//! signature is checked with the filter's `verify` before it is printed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac_auth::config::{Policy, Scheme, SignatureEncoding};
use hmac_auth::crypto::{self, Algorithm};
use hmac_auth::verify::{self, Pending, Piece, Request};
use hmac_auth::{httpsig, sf, sigv4};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

/// Output format of `wasmgate sign`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// `-H 'Name: value' ...` on one line, to paste after `curl`.
    Headers,
    /// A complete curl command (method, URL, headers and body).
    Curl,
    /// `{"headers": [[name, value], ...]}`.
    Json,
}

/// Arguments of `wasmgate sign`.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    wasmgate sign github --secret s3cret --data '{\"a\":1}' --format curl --url http://127.0.0.1:10000/hooks\n  \
    wasmgate sign standard_webhooks --secret whsec_... --body event.json\n  \
    wasmgate sign http_signature --secret s3cret --key-id client1 --method GET --url http://127.0.0.1:10000/api\n  \
    wasmgate sign aws_sigv4 --secret SECRET --key-id AKIDEXAMPLE --region eu-west-1 --service execute-api --url ...\n  \
    wasmgate sign custom --config hmac.json --body payload.bin      (header and payload from the config)\n\n\
    curl must send the body byte for byte: --format curl uses --data-binary.")]
pub struct Args {
    /// github, stripe, slack, shopify, standard_webhooks, http_signature, aws_sigv4 or custom.
    scheme: String,
    /// The secret as written in the filter configuration's "value".
    #[arg(long, value_name = "TEXT", required_unless_present = "config")]
    secret: Option<String>,
    /// How the secret text becomes key bytes (utf8, base64, hex), as the config's "encoding";
    /// default: the scheme's (base64 for standard_webhooks, else utf8).
    #[arg(long)]
    encoding: Option<String>,
    /// Secret id: the http_signature keyid, the aws_sigv4 access key id.
    #[arg(long, default_value = "wasmgate")]
    key_id: String,
    /// An hmac-auth configuration (JSON or YAML) to take the scheme settings and the secret from
    /// (the policy of this scheme: the default, else the first rule using it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The body, from a file.
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    body: Option<PathBuf>,
    /// The body, as text.
    #[arg(long, value_name = "TEXT")]
    data: Option<String>,
    /// Request method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Request URL (authority and path are signed by http_signature and aws_sigv4).
    #[arg(long, default_value = "http://127.0.0.1:10000/")]
    url: String,
    /// An extra request header, "Name: value" (signed by http_signature when covered, and by
    /// aws_sigv4); repeat for several.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Unix time of the signature (default: now).
    #[arg(long)]
    timestamp: Option<u64>,
    /// Message id (standard_webhooks webhook-id, custom id header); default: msg_<timestamp>.
    #[arg(long)]
    id: Option<String>,
    /// Covered components for http_signature, space separated (default: the configuration's
    /// required_components, else "@method @authority @path content-digest", plus "@query" when the
    /// URL has a query and "content-digest" when there is a body, as the filter requires).
    #[arg(long)]
    components: Option<String>,
    /// aws_sigv4 region (default: the configuration's, else us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// aws_sigv4 service (default: the configuration's, else execute-api).
    #[arg(long)]
    service: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "headers")]
    format: Format,
}

/// Signs and prints.
pub fn run(args: &Args) -> Result<ExitCode, String> {
    let policy = policy(args)?;
    let body = match (&args.body, &args.data) {
        (Some(path), _) => crate::read(path)?,
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => Vec::new(),
    };
    let ts = args.timestamp.unwrap_or_else(crate::now);
    let (scheme, authority, path) = split_url(&args.url)?;
    let mut extra = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header {header:?}: expected \"Name: value\""))?;
        extra.push((name.trim().to_string(), value.trim().to_string()));
    }
    let base = Request {
        method: args.method.to_ascii_uppercase(),
        authority: authority.clone(),
        path,
        scheme,
        headers: Vec::new(),
    };
    let key = policy
        .keys
        .iter()
        .find(|k| k.id == args.key_id)
        .or_else(|| policy.keys.first())
        .ok_or("the configuration has no secret")?;
    let id = args.id.clone().unwrap_or_else(|| format!("msg_{ts}"));
    if let Scheme::Custom(custom) = &policy.scheme {
        if let Some(provider) = custom.provider {
            return Err(format!(
                "signing for the {provider:?} preset is not supported (it signs with keys or over \
                 data this command does not take); use the sender's own library"
            ));
        }
        if custom.ed25519 {
            return Err("Ed25519 custom schemes are not signed by this command".into());
        }
    }
    let signed = match &policy.scheme {
        Scheme::HttpSignature(settings) => {
            let components = match &args.components {
                Some(list) => list
                    .split_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect(),
                None => {
                    // What the filter requires of this request beyond the configured set.
                    let mut components = settings.required_components.clone();
                    let covers =
                        |c: &[String], any: &[&str]| c.iter().any(|c| any.contains(&c.as_str()));
                    if base.query().is_some()
                        && !covers(&components, &["@query", "@target-uri", "@request-target"])
                    {
                        components.push("@query".into());
                    }
                    if !body.is_empty() && !covers(&components, &["content-digest"]) {
                        components.push("content-digest".into());
                    }
                    components
                }
            };
            http_signature(&base, &extra, &body, &components, ts, &key.id, &key.bytes)?
        }
        Scheme::AwsSigv4(settings) => {
            let scope = Scope {
                region: args.region.as_deref().unwrap_or(&settings.region),
                service: args.service.as_deref().unwrap_or(&settings.service),
            };
            aws_sigv4(&base, &extra, &body, ts, &scope, &key.id, &key.bytes)
        }
        scheme => webhook(&policy, scheme, &base, &extra, &body, ts, &id, &key.bytes)?,
    };
    // The filter's own check, so that a printed signature is one the filter accepts.
    let mut req = base.clone();
    req.headers = lower(&signed);
    let checked = verify::prepare(&policy, &req, ts)
        .and_then(|pending| verify::verify(&policy, &pending, &req, &body));
    if let Err(reject) = checked {
        return Err(format!(
            "the filter would refuse this request ({}): {}",
            reject.code(),
            reject.message()
        ));
    }
    print(args, &signed, &body);
    Ok(ExitCode::SUCCESS)
}

/// The policy: from `--config`, or a one-secret configuration parsed by hmac-auth itself.
fn policy(args: &Args) -> Result<Policy, String> {
    if let Some(path) = &args.config {
        let bytes = crate::read(path)?;
        let json = match serde_json::from_slice::<Value>(&bytes) {
            Ok(_) => bytes,
            Err(_) => {
                let value: serde_yaml::Value = serde_yaml::from_slice(&bytes)
                    .map_err(|e| format!("{}: not JSON or YAML: {e}", path.display()))?;
                serde_json::to_vec(&value).map_err(|e| e.to_string())?
            }
        };
        let config = hmac_auth::config::parse(&json).map_err(|e| e.log_line("hmac-auth"))?;
        return config
            .policies
            .all()
            .find(|p| p.scheme.name() == args.scheme)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no policy with scheme {:?} in {}",
                    args.scheme,
                    path.display()
                )
            });
    }
    if args.scheme == "custom" {
        return Err(
            "custom: give --config with the filter configuration (its custom block \
                    names the header and the signed payload)"
                .into(),
        );
    }
    let mut secret = json!({"id": args.key_id, "value": args.secret.clone().unwrap_or_default()});
    if let Some(encoding) = &args.encoding {
        secret["encoding"] = json!(encoding);
    }
    let mut config = json!({"scheme": args.scheme, "secrets": [secret]});
    if let Some(list) = &args.components {
        config["http_signature"] =
            json!({"required_components": list.split_whitespace().collect::<Vec<_>>()});
    }
    if args.scheme == "aws_sigv4" {
        config["aws_sigv4"] = json!({
            "region": args.region.as_deref().unwrap_or("us-east-1"),
            "service": args.service.as_deref().unwrap_or("execute-api"),
        });
    }
    hmac_auth::config::parse(config.to_string().as_bytes())
        .map(|c| c.policies.default_policy().clone())
        .map_err(|e| match e.path.as_str() {
            "scheme" => format!(
                "unknown scheme {:?} (github, stripe, slack, shopify, standard_webhooks, \
                 http_signature, aws_sigv4, custom)",
                args.scheme
            ),
            _ => {
                let option = e
                    .path
                    .replace("secrets[0]", "--secret")
                    .replace("http_signature.required_components", "--components")
                    .replace("aws_sigv4.region", "--region")
                    .replace("aws_sigv4.service", "--service");
                format!("{option}: {}", e.reason)
            }
        })
}

/// `(scheme, authority, path with query)` of an absolute URL.
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("--url {url:?}: expected http://host[:port]/path"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Ok((scheme.to_ascii_lowercase(), authority.to_string(), path))
}

fn lower(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

/// The webhook schemes: the filter reads placeholder signature headers and returns the payload
/// it would sign; the real signature replaces the placeholder.
#[allow(clippy::too_many_arguments)]
fn webhook(
    policy: &Policy,
    scheme: &Scheme,
    base: &Request,
    extra: &[(String, String)],
    body: &[u8],
    ts: u64,
    id: &str,
    key: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let ts_text = ts.to_string();
    let hex_fmt = |prefix: &'static str| move |sig: &[u8]| format!("{prefix}{}", hex::encode(sig));
    type Render = Box<dyn Fn(&[u8]) -> String>;
    let (header, render, algorithm, mut companions): (String, Render, Algorithm, Vec<_>) =
        match scheme {
            Scheme::Github => (
                "X-Hub-Signature-256".into(),
                Box::new(hex_fmt("sha256=")),
                Algorithm::Sha256,
                vec![],
            ),
            Scheme::Shopify => (
                "X-Shopify-Hmac-Sha256".into(),
                Box::new(|sig: &[u8]| STANDARD.encode(sig)),
                Algorithm::Sha256,
                vec![],
            ),
            Scheme::Slack => (
                "X-Slack-Signature".into(),
                Box::new(hex_fmt("v0=")),
                Algorithm::Sha256,
                vec![("X-Slack-Request-Timestamp".to_string(), ts_text.clone())],
            ),
            Scheme::Stripe => {
                let t = ts_text.clone();
                (
                    "Stripe-Signature".into(),
                    Box::new(move |sig: &[u8]| format!("t={t},v1={}", hex::encode(sig))),
                    Algorithm::Sha256,
                    vec![],
                )
            }
            Scheme::StandardWebhooks => (
                "webhook-signature".into(),
                Box::new(|sig: &[u8]| format!("v1,{}", STANDARD.encode(sig))),
                Algorithm::Sha256,
                vec![
                    ("webhook-id".to_string(), id.to_string()),
                    ("webhook-timestamp".to_string(), ts_text.clone()),
                ],
            ),
            Scheme::Custom(custom) => {
                let prefix = custom.signature_prefix.clone();
                let encoding = custom.encoding;
                let mut companions = Vec::new();
                if let Some(h) = &custom.timestamp_header {
                    companions.push((h.clone(), ts_text.clone()));
                }
                if let Some(h) = &custom.id_header {
                    companions.push((h.clone(), id.to_string()));
                }
                (
                    custom.signature_header.clone(),
                    Box::new(move |sig: &[u8]| match encoding {
                        SignatureEncoding::Hex => format!("{prefix}{}", hex::encode(sig)),
                        SignatureEncoding::Base64 => format!("{prefix}{}", STANDARD.encode(sig)),
                    }),
                    custom.algorithm,
                    companions,
                )
            }
            Scheme::HttpSignature(_) | Scheme::AwsSigv4(_) => {
                return Err("internal: not a webhook scheme".into())
            }
        };
    let len = crypto::mac(algorithm, b"k", &[]).len();
    let mut headers: Vec<(String, String)> = extra.to_vec();
    headers.append(&mut companions);
    let mut req = base.clone();
    req.headers = lower(&headers);
    req.headers
        .push((header.to_ascii_lowercase(), render(&vec![0u8; len])));
    let pending = verify::prepare(policy, &req, ts)
        .map_err(|r| format!("cannot build the signed payload: {}", r.message()))?;
    let Pending::Simple {
        algorithm, payload, ..
    } = pending
    else {
        return Err("internal: unexpected payload kind".into());
    };
    let parts: Vec<&[u8]> = payload
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => b.as_slice(),
            Piece::Body => body,
        })
        .collect();
    headers.push((header, render(&crypto::mac(algorithm, key, &parts))));
    Ok(headers)
}

fn http_signature(
    base: &Request,
    extra: &[(String, String)],
    body: &[u8],
    components: &[String],
    ts: u64,
    key_id: &str,
    key: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let mut headers: Vec<(String, String)> = extra.to_vec();
    if components.iter().any(|c| c == "content-digest") {
        headers.push((
            "Content-Digest".into(),
            format!("sha-256=:{}:", STANDARD.encode(crypto::sha256(body))),
        ));
    }
    let list = components
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(" ");
    let member = format!("sig1=({list});created={ts};keyid=\"{key_id}\";alg=\"hmac-sha256\"");
    let dict = sf::parse_dictionary(&member).map_err(|e| format!("Signature-Input: {e}"))?;
    let Some((_, sf::Member::InnerList(items, params))) = dict.first() else {
        return Err("internal: Signature-Input is not an inner list".into());
    };
    let params_line = sf::serialize_inner_list(items, params);
    let mut req = base.clone();
    req.headers = lower(&headers);
    let signature_base = httpsig::signature_base(&req, components, &params_line)
        .map_err(|r| format!("cannot build the signature base: {}", r.message()))?;
    let sig = crypto::mac(Algorithm::Sha256, key, &[signature_base.as_bytes()]);
    headers.push(("Signature-Input".into(), format!("sig1={params_line}")));
    headers.push((
        "Signature".into(),
        format!("sig1=:{}:", STANDARD.encode(sig)),
    ));
    Ok(headers)
}

/// The credential scope a SigV4 signature is made for.
struct Scope<'a> {
    region: &'a str,
    service: &'a str,
}

fn aws_sigv4(
    base: &Request,
    extra: &[(String, String)],
    body: &[u8],
    ts: u64,
    scope: &Scope<'_>,
    key_id: &str,
    key: &[u8],
) -> Vec<(String, String)> {
    let amz_date = amz_date(ts);
    let date = &amz_date[..8];
    let body_hash = hex::encode(crypto::sha256(body));
    let mut headers: Vec<(String, String)> = extra.to_vec();
    headers.push(("X-Amz-Date".into(), amz_date.clone()));
    headers.push(("X-Amz-Content-Sha256".into(), body_hash.clone()));
    let mut req = base.clone();
    req.headers = lower(&headers);
    let mut signed: Vec<String> = req.headers.iter().map(|(n, _)| n.clone()).collect();
    signed.push("host".into());
    signed.sort();
    signed.dedup();
    let canonical = sigv4::canonical_request(&req, scope.service, &signed, &body_hash);
    let sig = sigv4::signature(
        key,
        &amz_date,
        date,
        scope.region,
        scope.service,
        &canonical,
    );
    headers.push((
        "Authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={key_id}/{date}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
            scope.region,
            scope.service,
            signed.join(";"),
            hex::encode(sig)
        ),
    ));
    headers
}

/// `YYYYMMDDTHHMMSSZ` (civil from days, Howard Hinnant's algorithm).
fn amz_date(ts: u64) -> String {
    let days = ts / 86_400;
    let secs = ts % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Single-quoted for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn print(args: &Args, headers: &[(String, String)], body: &[u8]) {
    let flags = headers
        .iter()
        .map(|(n, v)| format!("-H {}", quote(&format!("{n}: {v}"))))
        .collect::<Vec<_>>()
        .join(" ");
    match args.format {
        Format::Headers => println!("{flags}"),
        Format::Json => println!("{}", json!({"headers": headers})),
        Format::Curl => {
            let data = match (&args.body, body.is_empty()) {
                (Some(path), _) => {
                    format!(" --data-binary @{}", quote(&path.display().to_string()))
                }
                (None, false) => {
                    format!(" --data-binary {}", quote(&String::from_utf8_lossy(body)))
                }
                (None, true) => String::new(),
            };
            println!(
                "curl -s -X {} {} {flags}{data}",
                args.method.to_ascii_uppercase(),
                quote(&args.url)
            );
        }
    }
}

// Signs (and checks) webhook requests with the senders' own libraries, for
// tests/tests/hmac-auth-senders.rs. One JSON job on argv[2], one JSON answer on stdout.
//
//   {"kind": "keys"}                                  fresh key pairs (Ed25519, P-256, RSA 2048; public JWKs too)
//   {"kind": "standardwebhooks", "secret", "id", "ts", "body"}   -> webhook-* headers (v1)
//   {"kind": "svix", "secret", "id", "ts", "body"}               -> svix-* headers (v1)
//   {"kind": "v1a", "seed", "id", "ts", "body"}                  -> "v1a,<base64>" (tweetnacl)
//   {"kind": "discord", "seed", "ts", "body"}                    -> X-Signature-* headers
//   {"kind": "httpsig", "alg", "key", "keyid", "method", "url", "headers", "fields", "nonce"}
//   {"kind": "twilio", "token", "url", "params"}                -> X-Twilio-Signature
//   {"kind": "verify_standardwebhooks", "secret", "headers", "body"}  -> {"ok": bool}
//   {"kind": "verify_discord", "public", "headers", "body"}           -> {"ok": bool}
//   {"kind": "verify_v1a", "public", "headers", "body"}               -> {"ok": bool} (tweetnacl)
//   {"kind": "verify_github", "secret", "signature", "body"}          -> {"ok": bool} (@octokit)
//   {"kind": "verify_httpsig", "alg", "key", "keyid", "method", "url", "headers", "body"}
'use strict';

const crypto = require('crypto');
const standardwebhooks = require('standardwebhooks');
const svix = require('svix');
const nacl = require('tweetnacl');
const discord = require('discord-interactions');
const hms = require('http-message-signatures');

const job = JSON.parse(process.argv[2]);
const out = (value) => process.stdout.write(JSON.stringify(value));
const seedKey = (hex) => nacl.sign.keyPair.fromSeed(Buffer.from(hex, 'hex'));

async function main() {
  switch (job.kind) {
    case 'keys': {
      const seed = crypto.randomBytes(32);
      const ed = nacl.sign.keyPair.fromSeed(seed);
      const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      const edPublic = crypto.createPublicKey({
        key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(ed.publicKey).toString('base64url') },
        format: 'jwk',
      });
      const pem = (k, type) => k.export({ type, format: 'pem' });
      return out({
        ed25519: {
          seed: seed.toString('hex'),
          hex: Buffer.from(ed.publicKey).toString('hex'),
          whpk: 'whpk_' + Buffer.from(ed.publicKey).toString('base64'),
          pem: pem(edPublic, 'spki'),
          private_pem: pem(crypto.createPrivateKey({
            key: {
              kty: 'OKP', crv: 'Ed25519',
              x: Buffer.from(ed.publicKey).toString('base64url'),
              d: seed.toString('base64url'),
            },
            format: 'jwk',
          }), 'pkcs8'),
        },
        p256: { jwk: ec.publicKey.export({ format: 'jwk' }), private_pem: pem(ec.privateKey, 'pkcs8') },
        rsa: {
          pem: pem(rsa.publicKey, 'spki'),
          jwk: rsa.publicKey.export({ format: 'jwk' }),
          private_pem: pem(rsa.privateKey, 'pkcs8'),
        },
      });
    }
    case 'standardwebhooks': {
      const wh = new standardwebhooks.Webhook(job.secret);
      return out({
        'webhook-id': job.id,
        'webhook-timestamp': String(job.ts),
        'webhook-signature': wh.sign(job.id, new Date(job.ts * 1000), job.body),
      });
    }
    case 'svix': {
      const wh = new svix.Webhook(job.secret);
      return out({
        'svix-id': job.id,
        'svix-timestamp': String(job.ts),
        'svix-signature': wh.sign(job.id, new Date(job.ts * 1000), job.body),
      });
    }
    case 'v1a': {
      const message = Buffer.from(`${job.id}.${job.ts}.${job.body}`);
      const sig = nacl.sign.detached(message, seedKey(job.seed).secretKey);
      return out({ signature: 'v1a,' + Buffer.from(sig).toString('base64') });
    }
    case 'discord': {
      const message = Buffer.from(String(job.ts) + job.body);
      const sig = nacl.sign.detached(message, seedKey(job.seed).secretKey);
      return out({
        'x-signature-ed25519': Buffer.from(sig).toString('hex'),
        'x-signature-timestamp': String(job.ts),
      });
    }
    case 'httpsig': {
      const key = hms.createSigner(job.key, job.alg, job.keyid);
      const request = { method: job.method, url: job.url, headers: { ...job.headers } };
      const paramValues = { created: new Date(job.ts * 1000) };
      if (job.nonce) paramValues.nonce = job.nonce;
      const signed = await hms.httpbis.signMessage({
        key,
        fields: job.fields,
        params: ['created', 'keyid', 'alg', ...(job.nonce ? ['nonce'] : [])],
        paramValues,
      }, request);
      return out({ signature: signed.headers['Signature'], 'signature-input': signed.headers['Signature-Input'] });
    }
    case 'twilio': {
      // Twilio's construction (as its helper libraries build it): the URL, then each POST
      // field's name and value, sorted by name.
      const data = Object.keys(job.params).sort()
        .reduce((acc, key) => acc + key + job.params[key], job.url);
      return out({
        'x-twilio-signature': crypto.createHmac('sha1', job.token).update(Buffer.from(data, 'utf-8')).digest('base64'),
      });
    }
    case 'verify_standardwebhooks': {
      try {
        new standardwebhooks.Webhook(job.secret).verify(job.body, job.headers);
        return out({ ok: true });
      } catch (e) {
        return out({ ok: false, error: String(e) });
      }
    }
    case 'verify_v1a': {
      // Standard Webhooks v1a: Ed25519 over "<id>.<timestamp>.<body>", any v1a entry.
      const message = Buffer.from(`${job.headers['webhook-id']}.${job.headers['webhook-timestamp']}.${job.body}`);
      const ok = job.headers['webhook-signature'].split(' ')
        .filter((e) => e.startsWith('v1a,'))
        .some((e) => nacl.sign.detached.verify(
          message, Buffer.from(e.slice(4), 'base64'), Buffer.from(job.public, 'hex')));
      return out({ ok });
    }
    case 'verify_github': {
      const octokit = await import('@octokit/webhooks-methods');
      return out({ ok: await octokit.verify(job.secret, job.body, job.signature) });
    }
    case 'verify_httpsig': {
      const key = job.alg === 'hmac-sha256' ? job.key : crypto.createPublicKey(job.key);
      const ok = await hms.httpbis.verifyMessage({
        keyLookup: async (params) => (params.keyid === job.keyid
          ? { id: job.keyid, algs: [job.alg], verify: hms.createVerifier(key, job.alg) }
          : null),
        requiredFields: ['@method', '@authority', '@path', 'content-digest'],
      }, { method: job.method, url: job.url, headers: job.headers });
      const digest = 'sha-256=:' + crypto.createHash('sha256').update(job.body).digest('base64') + ':';
      return out({ ok: ok === true && job.headers['content-digest'] === digest });
    }
    case 'verify_discord': {
      const ok = await discord.verifyKey(
        Buffer.from(job.body),
        job.headers['x-signature-ed25519'],
        job.headers['x-signature-timestamp'],
        job.public,
      );
      return out({ ok });
    }
    default:
      throw new Error(`unknown job ${job.kind}`);
  }
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e));
  process.exit(1);
});

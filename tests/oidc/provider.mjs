// A real OpenID provider (the npm package oidc-provider) on loopback for the jwt-auth
// end-to-end tests: discovery, JWKS, client-credentials access tokens (JWT or opaque, by
// resource) and RFC 7662 introspection.
//
// Signs with a fresh RSA-2048 key per run, kid $OIDC_KID (default "oidc-1"), so a restart with
// another kid on the same $OIDC_PORT (default: any free port) is a key rotation.
// Prints "listening <port>" once it serves; the issuer is http://127.0.0.1:<port>.
// Clients (test-only secrets): "service" and "large-service" (get tokens, the latter with 230
// groups) and "gateway" (introspects them).

import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const kid = process.env.OIDC_KID || 'oidc-1';
const jwks = { keys: [{ ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' }] };
// An Entra-ID-like list of group ids, so a token is about 12 KB.
const groups = Array.from({ length: 230 }, (_, i) => {
  const hex = i.toString(16);
  return `${hex.padStart(8, '0')}-1111-4222-8333-${hex.padStart(12, '0')}`;
});

const server = createServer();
server.listen(Number(process.env.OIDC_PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    jwks,
    clients: [
      {
        client_id: 'service',
        client_secret: 'service-secret-for-tests-only',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        scope: 'read write',
      },
      {
        client_id: 'large-service',
        client_secret: 'large-service-secret-for-tests-only',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        scope: 'read write',
      },
      {
        client_id: 'gateway',
        client_secret: 'gateway-secret-for-tests-only',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
      },
    ],
    scopes: ['read', 'write'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'https://api.example.com',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => ({
          scope: 'read write',
          audience: 'api.example.com',
          accessTokenTTL: 600,
          accessTokenFormat: resource === 'urn:example:opaque' ? 'opaque' : 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    // "large-service" gets an Entra-ID-sized token.
    extraTokenClaims: (ctx, token) => ({
      groups: token.clientId === 'large-service' ? groups : ['g1', 'g2'],
      'https://example.com/tenant': 'acme',
    }),
  });
  server.on('request', provider.callback());
  console.log(`listening ${port}`);
});

// A real OAuth2 authorization server (the npm package oidc-provider) on loopback for the
// credential-inject end-to-end tests: the client-credentials grant with opaque access tokens
// and RFC 7662 introspection, so a test can check that a token it saw upstream is genuine.
//
// Environment: PORT (default 0: any free port; a fixed port lets a test restart the server after
// an outage), TOKEN_TTL (seconds, default 600).
// Prints "listening <port>" once it serves; the issuer is http://127.0.0.1:<port>.
// Clients (test-only secrets): "orders" (client_secret_basic) and "orders-post"
// (client_secret_post), both allowed the scope "payments:write".

import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const ttl = Number(process.env.TOKEN_TTL || 600);
const server = createServer();
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const client = (id, method) => ({
    client_id: id,
    client_secret: `${id}-secret-for-tests-only`,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: method,
    scope: 'payments:write',
  });
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients: [client('orders', 'client_secret_basic'), client('orders-post', 'client_secret_post')],
    scopes: ['payments:write'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
    },
    ttl: { ClientCredentials: ttl },
  });
  server.on('request', provider.callback());
  console.log(`listening ${port}`);
});

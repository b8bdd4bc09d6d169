// A service talking to Sigil's OAuth 2.0 endpoints with openid-client (v6),
// configured by discovery from the issuer alone: the client credentials
// grant with client_secret_basic and with client_secret_post, then
// introspection (RFC 7662) and revocation (RFC 7009).
//
//   npm install openid-client@6
//   SIGIL_ISSUER=https://sigil.example.com SIGIL_CLIENT_ID=... SIGIL_CLIENT_SECRET=... node oauth_client.mjs
//
// Discovery needs Sigil's `issuer` setting to be the URL it is reached at.
// openid-client refuses http:// unless told: this example allows it only
// for a loopback issuer. The client needs the `introspect` role.
import * as client from 'openid-client';

const issuer = new URL(process.env.SIGIL_ISSUER ?? 'http://127.0.0.1:8080');
const clientId = process.env.SIGIL_CLIENT_ID;
const secret = process.env.SIGIL_CLIENT_SECRET;
const loopback = ['127.0.0.1', '[::1]', 'localhost'].includes(issuer.hostname);
const options = issuer.protocol === 'http:' && loopback ? { execute: [client.allowInsecureRequests] } : {};

const basic = await client.discovery(issuer, clientId, secret, client.ClientSecretBasic(secret), options);
const metadata = basic.serverMetadata();
console.log(`discovered: token endpoint ${metadata.token_endpoint}`);

const first = await client.clientCredentialsGrant(basic);
console.log(`client_secret_basic: ${first.token_type} token for ${first.expiresIn()}s, scope '${first.scope ?? ''}'`);

const post = await client.discovery(issuer, clientId, secret, client.ClientSecretPost(secret), options);
const second = await client.clientCredentialsGrant(post);
console.log(`client_secret_post: ${second.token_type} token for ${second.expiresIn()}s`);

const introspected = await client.tokenIntrospection(basic, second.access_token);
console.log(`introspected: active ${introspected.active}, client_id ${introspected.client_id}`);

await client.tokenRevocation(post, second.access_token, { token_type_hint: 'access_token' });
console.log('revoked');
const after = await client.tokenIntrospection(basic, second.access_token);
console.log(`after revocation: active ${after.active}`);
const untouched = await client.tokenIntrospection(basic, first.access_token);
console.log(`the other token: active ${untouched.active}`);

const wrong = await client.discovery(issuer, clientId, 'not-the-secret', client.ClientSecretBasic('not-the-secret'), options);
try {
  await client.clientCredentialsGrant(wrong);
  console.log('a wrong secret was accepted');
  process.exit(1);
} catch (refused) {
  // A 401 with a Basic challenge: openid-client reports the challenge.
  console.log(`wrong secret: refused, HTTP ${refused.status ?? refused.cause?.status}`);
}

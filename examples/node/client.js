// A Sigil client in Node.js: @grpc/grpc-js with @grpc/proto-loader reading
// proto/ at run time (no code generation step).
//
//   npm install @grpc/grpc-js @grpc/proto-loader
//   SIGIL_ADDR=127.0.0.1:50051 SIGIL_PASSWORD=... node client.js
//
// Logs in, validates, revokes, and checks that the revoked token is refused.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const definition = protoLoader.loadSync('sigil/v1/identity.proto', {
  includeDirs: [path.join(__dirname, '..', '..', 'proto')],
  keepCase: true,
  enums: String,
  defaults: true,
});
const sigil = grpc.loadPackageDefinition(definition).sigil.v1;
const identity = new sigil.IdentityService(process.env.SIGIL_ADDR || '127.0.0.1:50051', grpc.credentials.createInsecure());

const call = (method, request) =>
  new Promise((resolve, reject) => identity[method](request, (error, response) => (error ? reject(error) : resolve(response))));

async function main() {
  const login = await call('Authenticate', { username: 'admin', password: process.env.SIGIL_PASSWORD, device_name: 'node' });
  console.log('logged in, session', login.session_id);

  const verdict = await call('Validate', { token: login.access_token });
  if (!verdict.valid || verdict.claims.username !== 'admin') throw new Error(`unexpected verdict ${JSON.stringify(verdict)}`);
  console.log('valid token of', verdict.claims.username);

  const counts = await call('Revoke', { access_token: login.access_token, reason: 'node example' });
  console.log('revoked', counts.revoked_sessions, 'session(s)');

  const after = await call('Validate', { token: login.access_token });
  if (after.valid || after.failure !== 'VALIDATION_FAILURE_SESSION_REVOKED') throw new Error(`not refused: ${after.failure}`);
  console.log('after revoke:', after.failure);

  try {
    await call('Authenticate', { username: 'admin', password: 'not-the-password' });
    throw new Error('a wrong password was accepted');
  } catch (error) {
    if (error.code !== grpc.status.UNAUTHENTICATED) throw error;
    console.log('wrong password: UNAUTHENTICATED -', error.details);
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);

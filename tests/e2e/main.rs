//! Sigil's end-to-end tests, one binary so linking is paid once. Every test
//! starts real servers on ephemeral ports with temporary data directories
//! and talks to them over gRPC (and HTTP where the server serves HTTP).

// The admin API: roles, users, listings, events, keys, expiry.
mod admin;
// Authorization from current state: roles, audience, streams, lockout, leaked keys.
mod authorization;
// Undecodable requests on the wire.
mod hostile;
// No user enumeration; passwords hashed whole.
mod enumeration;
// Brute-force lockout.
mod lockout;
// Clients generated in other languages.
mod clients;
// Log in, validate, refresh, JWKS, input checks.
mod identity;
// Tokens forged every way RFC 8725 warns about.
mod forged_tokens;
// The edge verifier's verdicts equal Validate's, token by token.
mod verifier_parity;
// The edge verifier following real servers: the example service, staleness, resuming, PostgreSQL, Python.
mod verifier;
// Refresh rotation and theft detection.
mod refresh;
// Revoke by every target, authorization of id targets, idempotence.
mod revoke;
// Health, reflection and the HTTP listener.
mod standard_services;
// The terminal console driven in tmux.
mod console;
// The console's own session: revoked when it quits, and noticed when revoked elsewhere.
mod console_session;
// TLS and mTLS on the gRPC listener.
mod tls;
// The real binary killed with SIGKILL after acknowledged writes.
mod crash;
// The real binary over a sled store damaged while it was stopped.
mod corruption;
// GetStats' counts against a full scan after kill -9 mid-write.
mod kept_counts;
// The real binary with its data directory on a tmpfs that fills up.
mod disk_full;
// Several instances on one PostgreSQL database.
mod cluster;
// The store conformance suite against every engine.
mod store_suite;
// Revocations outlive a lowered access-token TTL across restarts.
mod revocation_bound;
// Callers' bytes never become metric labels or series.
mod metrics_labels;
// The audit trail under a flood of failed logins.
mod audit_retention;
// A PostgreSQL database of the previous schema, upgraded in place.
mod store_upgrade;
// The checked-in sled stores and the scans the two upgrade tests below share.
mod sled_fixture;
// A sled store of JSON records (checked in, written by the previous version), converted at first open.
mod sled_json_upgrade;
// A sled store of the previous layout (checked in, binary records, `active` and `user_tokens` indexes), converted at first open.
mod sled_layout_upgrade;
// The real binary as a child process, for the tests below.
mod process;
// Listener limits: idle, slowloris, bodiless requests, streams, floods, fd limit.
mod limits;
// Start-up: host names, a data directory in use, a busy port, errors said once.
mod startup;
// Shutdown: grace period with open streams, second signal.
mod shutdown;
// The discovery document's URLs come from configuration.
mod discovery;
// The last enabled admin cannot be removed, even by two admins at once.
mod last_admin;
// Host-side recovery: `sigil-server reset-admin-password`.
mod recovery;
// PRECIS usernames: look-alikes are one user or refused.
mod usernames;
// Sigil behind the real Envoy, nginx and Caddy, from deploy/'s configurations.
mod proxies;
// Gateway checks called directly: Envoy ext_authz Check and forward-auth /authz.
mod gateway;
// The README's examples (grpcurl, curl, the example clients) run as written.
mod readme;
// How the README test reads the README's shell blocks and runs them.
mod readme_script;
// The console's Dashboard and incident actions, in tmux against the real binaries.
mod console_ops;
// The console's Service accounts view: an account shown, disabled from the keyboard.
mod console_service_accounts;
// Service accounts: client secrets, private_key_jwt, their tokens and revocation (gRPC).
mod service_accounts;
// The revocation stream for edge verifiers: snapshot, ordered entries, keys, heartbeats, resume.
mod revocation_stream;
// The revocation stream in batches (the snapshot, a resume's catch-up), and one by one to older subscribers.
mod revocation_batches;
// Validate's kept answers: each token's own claims, and the next answer follows current state.
mod validate_answers;
// The OAuth 2.0 endpoints (token, introspection, revocation, metadata), hostile input first.
mod oauth;
// The outside attack review: OAuth, service accounts and gateway checks, one break per test.
mod attack_review;

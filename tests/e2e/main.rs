//! Sigil's end-to-end tests, one binary so linking is paid once. Every test
//! starts real servers on ephemeral ports with temporary data directories
//! and talks to them over gRPC (and HTTP where the server serves HTTP).

// The admin API: roles, users, listings, events, keys, expiry.
mod admin;
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
// Refresh rotation and theft detection.
mod refresh;
// Revoke by every target, authorization of id targets, idempotence.
mod revoke;
// Health, reflection and the HTTP listener.
mod standard_services;
// The terminal console driven in tmux.
mod console;
// TLS and mTLS on the gRPC listener.
mod tls;
// The real binary killed with SIGKILL after acknowledged writes.
mod crash;
// Several instances on one PostgreSQL database.
mod cluster;
// The store conformance suite against every engine.
mod store_suite;
// The last enabled admin cannot be removed, even by two admins at once.
mod last_admin;
// Host-side recovery: `sigil-server reset-admin-password`.
mod recovery;
// PRECIS usernames: look-alikes are one user or refused.
mod usernames;

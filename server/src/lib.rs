//! Sigil's server: the identity domain core ([`domain`]), its storage
//! ([`store`]), the gRPC and HTTP adapters ([`grpc`], [`http`]), the
//! configuration ([`config`]), metrics ([`telemetry`]) and the process that
//! runs them ([`server`]) within its listeners' limits ([`listener`]).

pub mod config;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod server;
pub mod store;
pub mod telemetry;

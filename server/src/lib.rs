//! Sigil's server: the identity domain core ([`domain`]) with its
//! persistence port, the store engines that implement it ([`store`]), the
//! gRPC and HTTP adapters ([`grpc`], [`http`]), the configuration
//! ([`config`]), metrics ([`telemetry`]), the process that runs them
//! ([`server`]) within its listeners' limits ([`listener`]), and the
//! host-side admin recovery ([`recovery`]).

pub mod config;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod listener;
pub mod recovery;
pub mod server;
pub mod store;
pub mod telemetry;

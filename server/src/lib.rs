//! Sigil's server: the identity domain core ([`domain`]), its storage
//! engines (`store`), the gRPC and HTTP adapters (`grpc`, `http`), the
//! configuration (`config`), metrics (`telemetry`), the process that runs
//! them (`server`) within its listeners' limits (`listener`), and the
//! host-side admin recovery (`recovery`).
//!
//! The modules are private; what the binary, the tests, the benchmarks and
//! the fuzz targets use is the short list below. [`domain`] stays public as
//! a whole: it is the vocabulary (records, ids, the persistence port) that
//! an embedding program or a new store engine speaks.

mod config;
pub mod domain;
mod gateway;
mod grpc;
mod http;
mod listener;
mod oauth;
mod recovery;
mod server;
mod store;
mod telemetry;

pub use config::{Cli, Config, ConfigLayer, DatabaseUrl, LogFormat};
pub use grpc::{
    admin::{AdminApi, AdminGuard},
    identity::IdentityApi,
};
pub use recovery::{Command as RecoveryCommand, RecoveryError, execute as recover};
pub use server::{MAX_MESSAGE_BYTES, RunningServer, ServerError, start};
#[cfg(feature = "testing")]
pub use store::conformance;
pub use store::{postgres::PgStore, sled_store::SledStore};

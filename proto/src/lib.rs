//! Sigil's public gRPC contract, package `sigil.v1`, as Rust code generated
//! from `proto/sigil/v1/*.proto`.
//!
//! The same files generate clients in any language; this crate is the Rust
//! one, used by the server, the console and the tests, and usable as a client
//! crate on its own:
//!
//! ```no_run
//! use sigil_proto::pb::{identity_service_client::IdentityServiceClient, AuthenticateRequest};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = IdentityServiceClient::connect("http://127.0.0.1:50051").await?;
//! let login = client
//!     .authenticate(AuthenticateRequest {
//!         username: "admin".into(),
//!         password: "correct horse battery staple".into(),
//!         ..Default::default()
//!     })
//!     .await?
//!     .into_inner();
//! println!("session {}", login.session_id);
//! # Ok(()) }
//! ```

pub mod codec;

/// Generated messages, enums, clients and servers of package `sigil.v1`.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::unwrap_used)]
    tonic::include_proto!("sigil.v1");
}

/// The encoded `FileDescriptorSet` of every Sigil proto file, for gRPC server
/// reflection (`tonic-reflection`) and for tools that need the schema.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sigil_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_names_the_services() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set is valid protobuf");
        let services: Vec<String> = fds
            .file
            .iter()
            .filter(|f| f.package() == "sigil.v1")
            .flat_map(|f| f.service.iter().map(|s| s.name().to_string()))
            .collect();
        assert!(services.contains(&"IdentityService".to_string()), "services: {services:?}");
        assert!(services.contains(&"RevocationService".to_string()), "services: {services:?}");
    }
}

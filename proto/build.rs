//! Compiles `sigil/v1/*.proto` with protox (pure Rust, so no system `protoc`
//! is needed) and generates the tonic client and server code from it. The
//! encoded descriptor set is written next to the code for server reflection.

use std::{env, io, path::PathBuf};

fn main() -> io::Result<()> {
    let protos =
        ["sigil/v1/resources.proto", "sigil/v1/identity.proto", "sigil/v1/admin.proto", "sigil/v1/revocation.proto"];
    // Naming any file turns off cargo's default of rerunning on every
    // change in the package, so this script names itself too.
    println!("cargo:rerun-if-changed=build.rs");
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["."]).map_err(io::Error::other)?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("OUT_DIR unset"))?);
    let descriptor_path = out_dir.join("sigil_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::StrictCodec")
        // An event carries these records on a few kinds only: boxed, they
        // cost the other events (and every `Event` held in memory) a
        // pointer instead of some 500 bytes.
        .boxed(".sigil.v1.Event.session")
        .boxed(".sigil.v1.Event.token")
        .compile_fds(fds)
}

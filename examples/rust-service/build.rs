//! Compiles the example's proto with protox (no system `protoc`).

use std::io;

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/example/v1/greeter.proto");
    let fds = protox::compile(["example/v1/greeter.proto"], ["proto"]).map_err(io::Error::other)?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)
}

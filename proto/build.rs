//! Generates the tonic services from `wharf/cluster/v1/*.proto`.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no apt step; an explicit
//! `PROTOC` in the environment wins.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "wharf/cluster/v1/raft.proto",
        "wharf/cluster/v1/admin.proto",
        "wharf/cluster/v1/blobs.proto",
    ];
    let mut config = tonic_prost_build::Config::new();
    match std::env::var_os("PROTOC") {
        Some(path) => config.protoc_executable(path),
        None => config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?),
    };
    tonic_prost_build::configure()
        .bytes(".")
        .compile_with_config(config, &protos, &["."])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}

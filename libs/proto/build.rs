//! Generates the gRPC code for every contract under `proto/` with a vendored `protoc`, so a
//! fresh machine needs no system protobuf compiler, and emits the descriptor set that the
//! servers use for reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "trickle/auth/v1/auth.proto",
    "trickle/userstore/v1/userstore.proto",
    "trickle/legacy/v1/legacy.proto",
    "trickle/migration/v1/migration.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto").canonicalize()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // tonic-prost-build does not reliably emit rerun-if-changed for imported files.
    for proto in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join(proto).display()
        );
    }

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known_types = protoc_bin_vendored::include_path()?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("trickle_descriptor.bin"))
        .compile_with_config(
            config,
            &PROTOS
                .iter()
                .map(|p| proto_root.join(p))
                .collect::<Vec<_>>(),
            &[proto_root, well_known_types],
        )?;
    Ok(())
}

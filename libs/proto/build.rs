//! Generates the gRPC code for every contract under `proto/` with a vendored `protoc`, so a
//! fresh machine needs no system protobuf compiler, and emits the descriptor set that the
//! servers use for reflection.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Fields that hold a secret (or, for `attempt_source`, an end user's address): a message
/// with one of them gets a `Debug` that prints `<redacted>` in its place (prost's derived
/// `Debug` would print the value).
const SECRET_FIELDS: &[&str] = &[
    "attempt_source",
    "password",
    "old_password",
    "new_password",
    "password_hash",
    "access_token",
    "ticket",
    "reset_ticket",
    // Second factors: the login's challenge, a user's code, an authenticator secret (also
    // inside the otpauth URI) and recovery codes.
    "mfa_challenge",
    "code",
    "secret",
    "otpauth_uri",
    "recovery_codes",
];

const PROTOS: &[&str] = &[
    "trickle/auth/v1/auth.proto",
    "trickle/userstore/v1/userstore.proto",
    "trickle/legacy/v1/legacy.proto",
    "trickle/migration/v1/migration.proto",
    "trickle/events/v1/events.proto",
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
    let paths: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();

    // Messages carrying a secret: no derived Debug, a redacting one written below.
    let descriptors = config.load_fds(&paths, &[&proto_root, &well_known_types])?;
    let mut redacted: std::collections::BTreeMap<String, String> = Default::default();
    let mut skip_debug = Vec::new();
    for file in &descriptors.file {
        let package = file.package();
        if !package.starts_with("trickle.") {
            continue;
        }
        let code = redacted.entry(package.to_owned()).or_default();
        for message in &file.message_type {
            if message
                .field
                .iter()
                .any(|f| SECRET_FIELDS.contains(&f.name()))
            {
                skip_debug.push(format!(".{package}.{}", message.name()));
                write_redacting_debug(code, message)?;
            }
        }
    }
    // One call: prost's skip_debug replaces its list each time.
    config.skip_debug(&skip_debug);
    for (package, code) in &redacted {
        std::fs::write(
            out_dir.join(format!("redacted_debug_{}.rs", package.replace('.', "_"))),
            code,
        )?;
    }

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("trickle_descriptor.bin"))
        .compile_with_config(config, &paths, &[proto_root, well_known_types])?;
    Ok(())
}

/// A `Debug` impl for `message` that prints every field but the secret ones.
fn write_redacting_debug(
    code: &mut String,
    message: &prost_types::DescriptorProto,
) -> Result<(), std::fmt::Error> {
    let name = message.name();
    writeln!(code, "impl ::core::fmt::Debug for {name} {{")?;
    writeln!(
        code,
        "    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{"
    )?;
    writeln!(code, "        f.debug_struct(\"{name}\")")?;
    let mut oneofs_done = std::collections::HashSet::new();
    for field in &message.field {
        // A real oneof's fields are one Rust field named after the oneof.
        if let Some(index) = field.oneof_index
            && !field.proto3_optional()
        {
            if oneofs_done.insert(index) {
                let oneof = message.oneof_decl[index as usize].name();
                writeln!(code, "            .field(\"{oneof}\", &self.{oneof})")?;
            }
            continue;
        }
        let field_name = field.name();
        let rust = if matches!(field_name, "type" | "ref" | "match" | "mod" | "use") {
            format!("r#{field_name}")
        } else {
            field_name.to_owned()
        };
        if SECRET_FIELDS.contains(&field_name) {
            writeln!(
                code,
                "            .field(\"{field_name}\", &if self.{rust}.is_empty() {{ \"\" }} else {{ \"<redacted>\" }})"
            )?;
        } else {
            writeln!(code, "            .field(\"{field_name}\", &self.{rust})")?;
        }
    }
    writeln!(code, "            .finish()")?;
    writeln!(code, "    }}")?;
    writeln!(code, "}}")?;
    Ok(())
}

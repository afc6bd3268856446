//! Compiles the .proto files under `proto/` with protox (pure Rust, no system
//! protoc) and generates prost messages plus tonic clients and servers.

use std::io;
use std::path::{Path, PathBuf};

/// Every file to compile, relative to the `proto/` include root.
const FILES: &[&str] = &[
    "istio/workload/workload.proto",
    "istio/workload/zds/zds.proto",
    "istio/security/authorization.proto",
    "istio/v1/auth/ca.proto",
    "google/rpc/status.proto",
    "envoy/type/v3/semantic_version.proto",
    "envoy/type/v3/http_status.proto",
    "envoy/config/core/v3/base.proto",
    "envoy/config/core/v3/address.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/service/auth/v3/attribute_context.proto",
    "envoy/service/auth/v3/external_auth.proto",
    "mesh/waypoint/v1/waypoint.proto",
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
    "opentelemetry/proto/trace/v1/trace.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", root.display());
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    check_all_listed(&root, &root)?;

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(FILES)?;

    // Keep the encoded descriptors: the crate exports them (reflection, tests).
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("file_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    let mut config = tonic_prost_build::Config::new();
    // Implement `prost::Name` so `type_url()` yields `type.googleapis.com/<full name>`.
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Transport helpers (`connect`, `Channel`) need tonic's transport
        // feature; callers bring their own HTTP/2 service instead.
        .build_transport(false)
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;
    Ok(())
}

/// Fails the build when a .proto file exists on disk but is missing from
/// `FILES`, so a new file cannot be silently left uncompiled.
fn check_all_listed(root: &Path, dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            check_all_listed(root, &path)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            let rel = path
                .strip_prefix(root)
                .map_err(io::Error::other)?
                .to_string_lossy()
                .replace('\\', "/");
            if !FILES.contains(&rel.as_str()) {
                return Err(io::Error::other(format!(
                    "{rel} is not listed in build.rs FILES"
                )));
            }
        }
    }
    Ok(())
}

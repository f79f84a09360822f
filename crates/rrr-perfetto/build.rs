//! Compiles `protos/perfetto_trace.proto` with prost (protox parses it: no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protos");
    let proto = root.join("perfetto_trace.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}

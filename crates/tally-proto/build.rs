//! Compiles `proto/tally/v1/*.proto` with protox (pure Rust, so no system `protoc` is needed) and
//! generates prost messages plus tonic clients and servers from the descriptor set (and the
//! Ledger service a second time with the wire form of a usage batch, see below).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let files = [
        "tally/v1/ledger.proto",
        "tally/v1/admin.proto",
        "tally/v1/raft.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }

    let descriptor_set = protox::compile(files, [&proto_root])?;

    // Kept next to the generated code so a server can offer gRPC reflection.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("tally_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptor_set),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Maps in replies (error details) print in a stable order.
        .btree_map(".")
        .compile_fds(descriptor_set.clone())?;

    // The Ledger service once more, for tally-server: the same service and messages (mapped to
    // the ones above), except that `RecordUsageBatchRequest` arrives as its encoded bytes
    // (`tally_proto::ingest::RecordUsageBatchWire`), converted straight into core events
    // without building prost's per-event strings first. Only the server's side and the
    // forwarding client use it; the wire format is the same.
    let mut ledger_only = descriptor_set;
    ledger_only
        .file
        .retain(|file| file.name() == "tally/v1/ledger.proto");
    let ingest_dir = out_dir.join("ingest");
    std::fs::create_dir_all(&ingest_dir)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(&ingest_dir)
        .extern_path(".tally.v1", "crate::v1")
        .extern_path(
            ".tally.v1.RecordUsageBatchRequest",
            "crate::ingest::RecordUsageBatchWire",
        )
        .compile_fds(ledger_only)?;
    Ok(())
}

//! Compiles `proto/ambit/v1/*.proto` with protox (pure Rust, no system `protoc`) and generates
//! the prost messages and tonic client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/ambit/v1/config.proto", "proto/ambit/v1/ca.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Payloads are built once per publish and shared by every client's update; as
        // `Bytes` they are referenced, not copied, into each message.
        .bytes(".ambit.v1.Resource.payload")
        .compile_fds(descriptors)?;
    Ok(())
}

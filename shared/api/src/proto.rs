//! The generated protobuf messages and tonic client and server code (package `ambit.v1`).
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

tonic::include_proto!("ambit.v1");

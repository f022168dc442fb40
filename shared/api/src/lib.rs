//! placeholder
pub mod proto {
    tonic::include_proto!("ambit.v1");
}

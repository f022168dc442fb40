//! The proxies' side: [`ConfigClient`] keeps a validated [`ConfigView`] of the proxy's scope,
//! [`GrpcIssuer`] fetches certificates from the controller's CA.

mod config;
mod issuer;
mod view;

pub use config::{ClientStats, ConfigClient, ConfigClientOptions};
pub use issuer::{GrpcIssuer, InvalidToken, IssuedCertificate};
pub use view::ConfigView;

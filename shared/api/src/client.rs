//! The proxies' side: [`ConfigClient`] keeps a validated [`ConfigView`] of the proxy's scope,
//! [`GrpcIssuer`] fetches certificates from the controller's CA.

mod config;
mod endpoint;
mod issuer;
mod token;
mod view;

pub use config::{ClientStats, ConfigClient, ConfigClientOptions};
pub use endpoint::{ConnectError, ControllerEndpoint, ControllerFlags, EndpointError};
pub use issuer::{GrpcIssuer, IssuedCertificate};
pub use token::InvalidToken;
pub use view::ConfigView;

//! The controller's side: [`ConfigServer`] (config distribution), [`CaServer`] (the CA) and
//! [`serve`] to run both on one listener, over TLS ([`ServerTls`]) or, for tests, plaintext.

mod auth;
mod ca;
mod config;
mod connection;
mod tls;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use auth::{
    AuthError, AuthFuture, Authenticator, Authorizer, Caller, Denied, HostedIdentities,
    ScopeAccess, StaticTokens,
};
pub use ca::{CaServer, CaService, CaStats};
pub use config::{
    ClientStatus, ConfigServer, ConfigServerOptions, ConfigService, DistributionStats,
};
pub use connection::PART_BYTES;
pub use tls::{ServerTls, ServerTlsError};

/// HTTP/2 PING interval towards clients, so dead peers are noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a PING may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The gRPC server failed.
#[derive(Debug, thiserror::Error)]
#[error("control-plane gRPC server failed: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// How the port is secured.
#[derive(Debug, Clone)]
pub enum ServerTransport {
    /// TLS with the given (renewable) serving certificate.
    Tls(ServerTls),
    /// Plaintext HTTP/2: bearer tokens and config in the clear. Only for tests and
    /// `--grpc-plaintext`.
    Plaintext,
}

/// Serves `config` and `ca` (either may be absent) on `listener` until `shutdown` completes;
/// then ends open config streams (see [`ConfigServer::shutdown`]) and drains.
pub async fn serve(
    listener: TcpListener,
    transport: ServerTransport,
    config: Option<ConfigServer>,
    ca: Option<CaServer>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let config_for_shutdown = config.clone();
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    let router = builder
        .add_optional_service(config.map(|c| c.service()))
        .add_optional_service(ca.map(|c| c.service()));
    let shutdown = async move {
        shutdown.await;
        if let Some(config) = config_for_shutdown {
            config.shutdown();
        }
    };
    match transport {
        ServerTransport::Tls(tls) => {
            let connections = tls::accept_tls(listener, &tls);
            let incoming = futures_util::stream::unfold(connections, |mut connections| async {
                connections
                    .recv()
                    .await
                    .map(|connection| (connection, connections))
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
        ServerTransport::Plaintext => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
    }
    Ok(())
}

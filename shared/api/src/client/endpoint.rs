//! Where the controller is and how the connection to it is secured: [`ControllerEndpoint`],
//! built from the proxies' flags by [`ControllerFlags::endpoint`].
//!
//! TLS is done here (tokio-rustls, through tonic's custom-connector hook) rather than by
//! tonic, so the roots file is read again on every connect: a rotated root is picked up by the
//! next reconnect without a restart.
//!
//! This relies on tonic being built without its TLS features (`tls-ring` and the like): with
//! them, tonic refuses an `https://` URI whose endpoint has no tonic TLS config, even behind a
//! custom connector. Nothing in the workspace enables them; keep it that way or revisit here.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ambit_identity::cert::certificates_from_pem;
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint};

/// The flags ztunnel and waypoint take beside `--controller URL` (flattened into their
/// arguments, which must have an argument with id `controller`); see
/// [`ControllerFlags::endpoint`].
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ControllerFlags {
    /// PEM file with the roots the controller's serving certificate must chain to (the mesh
    /// root, `root-cert.pem`); required with an `https://` `--controller`. Read again on
    /// every reconnect, so a rotated root is picked up.
    #[arg(
        long = "controller-ca-file",
        value_name = "PEM",
        requires = "controller"
    )]
    pub ca_file: Option<PathBuf>,
    /// The name the controller's certificate must carry (DNS name or IP address); default:
    /// the host of `--controller`.
    #[arg(
        long = "controller-server-name",
        value_name = "NAME",
        requires = "controller"
    )]
    pub server_name: Option<String>,
    /// Allow an `http://` `--controller`: bearer tokens and config then travel in the clear.
    /// For tests against a controller started with `--grpc-plaintext`.
    #[arg(long = "controller-plaintext", requires = "controller")]
    pub plaintext: bool,
}

/// The controller flags do not fit together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not an `http(s)://HOST:PORT` URL.
    #[error("--controller must be https://HOST:PORT, got {0}")]
    BadUrl(String),
    /// `http://` without `--controller-plaintext`.
    #[error(
        "--controller {0} is plaintext (bearer tokens and config would travel in the clear): \
         use https:// with --controller-ca-file, or add --controller-plaintext to allow it"
    )]
    PlaintextRefused(String),
    /// `--controller-plaintext` with an `https://` URL.
    #[error("--controller-plaintext needs an http:// --controller, got {0}")]
    PlaintextWithHttps(String),
    /// `https://` without `--controller-ca-file`.
    #[error("--controller {0} is https: --controller-ca-file (the roots to trust) is required")]
    MissingCaFile(String),
    /// TLS flags with an `http://` URL.
    #[error("--controller-ca-file and --controller-server-name need an https:// --controller")]
    TlsFlagsWithHttp,
    /// The name to verify is neither a DNS name nor an IP address.
    #[error("controller server name {0:?} is not a valid DNS name or IP address")]
    BadServerName(String),
}

/// Why a connection to the controller could not be set up (before or during the handshake).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The roots file is unreadable or holds no usable certificate.
    #[error("controller CA file {}: {message}", path.display())]
    Roots {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// TCP connect failed.
    #[error("cannot connect to the controller at {address}: {source}")]
    Tcp {
        /// `host:port`.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, not a TLS server).
    #[error(
        "TLS handshake with the controller at {address} (expecting {server_name}) failed: {source}"
    )]
    Handshake {
        /// `host:port`.
        address: String,
        /// The name the certificate had to carry.
        server_name: String,
        /// rustls' reason.
        source: std::io::Error,
    },
}

/// The controller's address and how to secure the connection.
#[derive(Clone)]
pub struct ControllerEndpoint {
    uri: Uri,
    security: Security,
}

#[derive(Clone)]
enum Security {
    Plaintext,
    Tls(Arc<TlsSettings>),
}

struct TlsSettings {
    roots_file: PathBuf,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    /// `host:port` as the URL writes it (IPv6 in brackets), for messages.
    address: String,
}

impl ControllerFlags {
    /// The endpoint for `--controller url` with these flags: `https://` needs
    /// `--controller-ca-file`; `http://` is refused unless `--controller-plaintext` is given.
    pub fn endpoint(&self, url: &Uri) -> Result<ControllerEndpoint, EndpointError> {
        match url.scheme_str() {
            Some("https") => {
                if self.plaintext {
                    return Err(EndpointError::PlaintextWithHttps(url.to_string()));
                }
                let Some(ca_file) = &self.ca_file else {
                    return Err(EndpointError::MissingCaFile(url.to_string()));
                };
                ControllerEndpoint::tls(url.clone(), ca_file, self.server_name.as_deref())
            }
            Some("http") => {
                if !self.plaintext {
                    return Err(EndpointError::PlaintextRefused(url.to_string()));
                }
                if self.ca_file.is_some() || self.server_name.is_some() {
                    return Err(EndpointError::TlsFlagsWithHttp);
                }
                ControllerEndpoint::plaintext(url.clone())
            }
            _ => Err(EndpointError::BadUrl(url.to_string())),
        }
    }
}

impl ControllerEndpoint {
    /// TLS to `uri` (`https://host:port`), trusting the roots in `roots_file` (read on every
    /// connect) and expecting `server_name` (default: the URL's host) in the certificate.
    pub fn tls(
        uri: Uri,
        roots_file: impl Into<PathBuf>,
        server_name: Option<&str>,
    ) -> Result<Self, EndpointError> {
        let (host, port) = host_and_port(&uri, 443)?;
        if uri.scheme_str() != Some("https") {
            return Err(EndpointError::BadUrl(uri.to_string()));
        }
        let name = server_name.unwrap_or(&host);
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|_| EndpointError::BadServerName(name.to_owned()))?;
        Ok(Self {
            security: Security::Tls(Arc::new(TlsSettings {
                roots_file: roots_file.into(),
                server_name,
                address: format!("{}:{port}", uri.host().unwrap_or_default()),
                host,
                port,
            })),
            uri,
        })
    }

    /// Plaintext HTTP/2 to `uri` (`http://host:port`): for tests and `--controller-plaintext`.
    pub fn plaintext(uri: Uri) -> Result<Self, EndpointError> {
        host_and_port(&uri, 80)?;
        if uri.scheme_str() != Some("http") {
            return Err(EndpointError::BadUrl(uri.to_string()));
        }
        Ok(Self {
            uri,
            security: Security::Plaintext,
        })
    }

    /// The controller's URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.security, Security::Tls(_))
    }

    /// A tonic endpoint for the URL, to configure (timeouts, keepalive) before connecting.
    pub(crate) fn tonic_endpoint(&self) -> Endpoint {
        Endpoint::from(self.uri.clone())
    }

    /// Connects `endpoint` (from [`tonic_endpoint`](Self::tonic_endpoint)) now.
    pub(crate) async fn connect(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Channel, tonic::transport::Error> {
        match &self.security {
            Security::Plaintext => endpoint.connect().await,
            Security::Tls(settings) => {
                endpoint
                    .connect_with_connector(TlsConnector(settings.clone()))
                    .await
            }
        }
    }

    /// A channel that connects `endpoint` on first use and reconnects as needed.
    pub(crate) fn connect_lazy(&self, endpoint: &Endpoint) -> Channel {
        match &self.security {
            Security::Plaintext => endpoint.connect_lazy(),
            Security::Tls(settings) => {
                endpoint.connect_with_connector_lazy(TlsConnector(settings.clone()))
            }
        }
    }
}

impl fmt::Debug for ControllerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ControllerEndpoint");
        s.field("uri", &self.uri);
        match &self.security {
            Security::Plaintext => s.field("tls", &false),
            Security::Tls(settings) => s
                .field("roots_file", &settings.roots_file)
                .field("server_name", &settings.server_name),
        };
        s.finish()
    }
}

/// The URL's host (without IPv6 brackets) and port.
fn host_and_port(uri: &Uri, default_port: u16) -> Result<(String, u16), EndpointError> {
    let bad = || EndpointError::BadUrl(uri.to_string());
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    if !matches!(uri.path(), "" | "/") {
        return Err(bad());
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(default_port)))
}

/// tonic's connector for TLS: TCP, then a handshake with freshly read roots.
#[derive(Clone)]
struct TlsConnector(Arc<TlsSettings>);

impl Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let settings = self.0.clone();
        Box::pin(async move { settings.connect().await.map(TokioIo::new) })
    }
}

impl TlsSettings {
    async fn connect(&self) -> Result<TlsStream<TcpStream>, ConnectError> {
        let config = client_config(&self.roots_file).await?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ConnectError::Tcp {
                address: self.address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(config)
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| ConnectError::Handshake {
                address: self.address.clone(),
                server_name: self.server_name.to_str().into_owned(),
                source,
            })
    }
}

/// TLS 1.3, ALPN `h2`, the roots in `path` (all of them: during a rotation, old and new).
async fn client_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    let roots_error = |message: String| ConnectError::Roots {
        path: path.to_owned(),
        message,
    };
    let pem = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| roots_error(e.to_string()))?;
    let certificates = certificates_from_pem(&pem).map_err(|e| roots_error(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(roots_error("holds no usable certificate".to_owned()));
    }
    let provider = ambit_identity::tls::crypto_provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| roots_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ambit_identity::tls::ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// `err` and its sources, `: `-separated (tonic's transport errors say little at the top).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        let next_text = next.to_string();
        if !text.contains(&next_text) {
            text.push_str(": ");
            text.push_str(&next_text);
        }
        source = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(ca_file: Option<&str>, server_name: Option<&str>, plaintext: bool) -> ControllerFlags {
        ControllerFlags {
            ca_file: ca_file.map(PathBuf::from),
            server_name: server_name.map(str::to_owned),
            plaintext,
        }
    }

    fn url(text: &str) -> Uri {
        text.parse().unwrap()
    }

    #[test]
    fn http_is_refused_without_the_plaintext_flag() {
        let err = flags(None, None, false)
            .endpoint(&url("http://10.0.0.1:15012"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--controller ") && err.contains("--controller-plaintext"),
            "{err}"
        );
        let endpoint = flags(None, None, true)
            .endpoint(&url("http://10.0.0.1:15012"))
            .unwrap();
        assert!(!endpoint.is_tls());
    }

    #[test]
    fn https_needs_the_ca_file_and_no_plaintext_flag() {
        let err = flags(None, None, false)
            .endpoint(&url("https://ctl:15012"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--controller-ca-file"), "{err}");
        let err = flags(Some("/r.pem"), None, true)
            .endpoint(&url("https://ctl:15012"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--controller-plaintext"), "{err}");
        let err = flags(Some("/r.pem"), None, true)
            .endpoint(&url("http://ctl:15012"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--controller-ca-file"), "{err}");
        let endpoint = flags(Some("/r.pem"), None, false)
            .endpoint(&url("https://ctl:15012"))
            .unwrap();
        assert!(endpoint.is_tls());
    }

    /// The proxies' command line, reduced to the controller's flags.
    #[derive(Debug, clap::Parser)]
    struct ProxyArgs {
        #[arg(long)]
        controller: Option<Uri>,
        #[command(flatten)]
        tls: ControllerFlags,
    }

    fn parse(argv: &[&str]) -> Result<ControllerEndpoint, String> {
        use clap::Parser;
        let args =
            ProxyArgs::try_parse_from([&["proxy"], argv].concat()).map_err(|e| e.to_string())?;
        args.tls
            .endpoint(args.controller.as_ref().ok_or("no --controller")?)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_command_line_wants_https_with_roots_or_an_explicit_plaintext() {
        assert!(
            parse(&[
                "--controller=https://c:15012",
                "--controller-ca-file=/r.pem"
            ])
            .unwrap()
            .is_tls()
        );
        assert!(
            !parse(&["--controller=http://c:15012", "--controller-plaintext"])
                .unwrap()
                .is_tls()
        );
        let refused = parse(&["--controller=http://c:15012"]).unwrap_err();
        assert!(refused.contains("--controller-plaintext"), "{refused}");
        // The TLS flags mean nothing without a controller.
        let orphan = parse(&["--controller-ca-file=/r.pem"]).unwrap_err();
        assert!(orphan.contains("--controller"), "{orphan}");
    }

    #[test]
    fn server_name_defaults_to_the_host_and_may_be_an_ip() {
        let Security::Tls(settings) = flags(Some("/r.pem"), None, false)
            .endpoint(&url("https://[::1]:15012"))
            .unwrap()
            .security
        else {
            panic!("not TLS");
        };
        assert_eq!(settings.server_name.to_str(), "::1");
        assert_eq!(settings.address, "[::1]:15012");
        assert_eq!((settings.host.as_str(), settings.port), ("::1", 15012));
        let Security::Tls(settings) = flags(
            Some("/r.pem"),
            Some("ambit-controller.ambit-system.svc"),
            false,
        )
        .endpoint(&url("https://10.0.0.1:15012"))
        .unwrap()
        .security
        else {
            panic!("not TLS");
        };
        assert_eq!(
            settings.server_name.to_str(),
            "ambit-controller.ambit-system.svc"
        );
        for bad in ["ftp://x:1", "https://x:1/path", "x:15012"] {
            assert!(
                flags(Some("/r.pem"), None, false)
                    .endpoint(&url(bad))
                    .is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            flags(Some("/r.pem"), Some("not a name"), false).endpoint(&url("https://x:1")),
            Err(EndpointError::BadServerName(_))
        ));
    }
}

//! SOCKS5 (RFC 1928) on `127.0.0.1:15080` in ztunnel's own namespace, so a local process
//! that is not root (and not captured) can still send traffic through the mesh.
//!
//! Supported: the no-authentication method, the CONNECT command, IPv4, IPv6 and domain-name
//! destinations. A domain name must be a mesh name (a Service or ServiceEntry host, in any
//! form a pod's search path would accept) and is resolved through the same table as the DNS
//! proxy; anything else is answered `host unreachable` (ztunnel does not resolve the outside
//! world for SOCKS clients). After the handshake a connection follows exactly the outbound
//! path of captured traffic: VIP → endpoint, waypoint, HBONE, passthrough.
//!
//! # Whose identity
//! Mesh traffic needs a source workload: its certificate signs the HBONE connection, its IP
//! is the source address, and policies judge it. SOCKS5 traffic is sent as
//! 1. the enrolled pod on this node whose IP is the client's source address (a client in a
//!    pod's network reaching ztunnel), else
//! 2. the enrolled pod named by `--socks5-workload NAMESPACE/NAME`, else
//! 3. nobody: the request is answered `0x02 connection not allowed by ruleset`.
//!
//! Sockets are made inside that pod's namespace with ztunnel's mark, so to the destination
//! the connection is indistinguishable from one the pod's own app made.
//!
//! # Failures
//! A greeting or request that is not SOCKS5 is closed without a reply; an unsupported
//! command gets `0x07`, an unknown address type `0x08`, a method set without "no
//! authentication" gets `0xFF` (no acceptable method). The whole handshake is bounded by
//! [`HANDSHAKE_TIMEOUT`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use hickory_proto::rr::Name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::dns::MeshNames;
use crate::dns::names::NameExpander;
use crate::outbound::{OpenFailure, node_drain, open};
use crate::proxy::{PodContext, ProxyInputs, canonical_addr};

/// Where ztunnel listens for SOCKS5 by default.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15080);
/// How long a client has to complete the greeting and the request.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const VERSION: u8 = 0x05;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// The reply codes of RFC 1928 §6 that ztunnel sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyCode {
    /// `0x00` succeeded.
    Succeeded = 0x00,
    /// `0x01` general SOCKS server failure.
    GeneralFailure = 0x01,
    /// `0x02` connection not allowed by ruleset (no source workload).
    NotAllowed = 0x02,
    /// `0x04` host unreachable (unknown name, unreachable next hop).
    HostUnreachable = 0x04,
    /// `0x05` connection refused (by a rule, a policy or the destination).
    ConnectionRefused = 0x05,
    /// `0x07` command not supported (only CONNECT is).
    CommandNotSupported = 0x07,
    /// `0x08` address type not supported.
    AddressTypeNotSupported = 0x08,
}

/// Finds the enrolled pod a SOCKS5 client sends as.
pub trait SourcePods: Send + Sync + 'static {
    /// The enrolled pod on this node whose IP is `ip`.
    fn by_ip(&self, ip: IpAddr) -> BoxFuture<'_, Option<Arc<PodContext>>>;
    /// The enrolled pod `namespace/name` on this node.
    fn by_name<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<PodContext>>>;
}

/// `NAMESPACE/NAME` of the workload SOCKS5 traffic is sent as when the client's address is
/// not a pod's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
}

/// Why a `--socks5-workload` value was refused.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not NAMESPACE/NAME (two non-empty DNS labels)")]
pub struct WorkloadRefError {
    value: String,
}

/// The SOCKS5 server's settings.
#[derive(Debug, Clone, Default)]
pub struct Socks5Config {
    /// Sent as when the client's own address is not an enrolled pod's.
    pub default_workload: Option<WorkloadRef>,
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An address.
    Addr(SocketAddr),
    /// A host name and port.
    Name(String, u16),
}

/// A handshake that cannot go on: the reply to send (if any) before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not SOCKS5 or cut short: close without a reply.
    Malformed,
    /// Close after this reply.
    Reply(ReplyCode),
    /// The client offered no acceptable authentication method: `05 FF`, then close.
    NoAcceptableMethod,
}

impl std::str::FromStr for WorkloadRef {
    type Err = WorkloadRefError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = || WorkloadRefError {
            value: value.to_owned(),
        };
        let (namespace, name) = value.split_once('/').ok_or_else(error)?;
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !label(namespace) || !label(name) || namespace.contains('.') {
            return Err(error());
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Serves SOCKS5 on `listener` until the node drains or the future is dropped.
pub async fn serve(
    listener: TcpListener,
    config: Socks5Config,
    inputs: Arc<ProxyInputs>,
    pods: Arc<dyn SourcePods>,
) {
    let config = Arc::new(config);
    let mut drain = node_drain(&inputs);
    loop {
        let accepted = tokio::select! {
            () = drain.draining() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(%err, "SOCKS5 accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (config, inputs, pods) = (config.clone(), inputs.clone(), pods.clone());
        tokio::spawn(async move {
            handle(
                stream,
                canonical_addr(peer),
                &config,
                &inputs,
                pods.as_ref(),
            )
            .await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    client: SocketAddr,
    config: &Socks5Config,
    inputs: &ProxyInputs,
    pods: &dyn SourcePods,
) {
    if let Err(err) = stream.set_nodelay(true) {
        debug!(%err, "could not set TCP_NODELAY on a SOCKS5 client");
    }
    let destination = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream)).await {
        Ok(Ok(destination)) => destination,
        Ok(Err(err)) => {
            debug!(%client, ?err, "SOCKS5 handshake refused");
            finish_refused(&mut stream, err).await;
            return;
        }
        Err(_) => {
            debug!(%client, "SOCKS5 handshake timed out");
            return;
        }
    };
    let Some(pod) = source_pod(client, config, pods).await else {
        info!(%client, ?destination, "SOCKS5 request with no source workload");
        let _ = reply(&mut stream, ReplyCode::NotAllowed).await;
        return;
    };
    let target = match resolve(&destination, inputs, &pod) {
        Some(target) => target,
        None => {
            info!(%client, ?destination, "SOCKS5 destination is not a mesh name");
            let _ = reply(&mut stream, ReplyCode::HostUnreachable).await;
            return;
        }
    };
    debug!(%client, pod = %pod.name, %target, "SOCKS5 connect");
    // The connection is reported as coming from the client's address, as seen by ztunnel.
    match open(client, target, inputs, &pod).await {
        Ok(opened) => {
            if reply(&mut stream, ReplyCode::Succeeded).await.is_ok() {
                opened.relay(&mut stream).await;
            }
        }
        Err(failure) => {
            let code = match failure {
                OpenFailure::Refused => ReplyCode::ConnectionRefused,
                OpenFailure::Unreachable => ReplyCode::HostUnreachable,
            };
            let _ = reply(&mut stream, code).await;
        }
    }
}

/// Reads the greeting and the request, answering the method selection; returns the
/// destination of a CONNECT.
pub async fn handshake<S>(stream: &mut S) -> Result<Destination, HandshakeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = [0; 2];
    read(stream, &mut head).await?;
    let [version, method_count] = head;
    if version != VERSION || method_count == 0 {
        return Err(HandshakeError::Malformed);
    }
    let mut methods = vec![0; usize::from(method_count)];
    read(stream, &mut methods).await?;
    if !methods.contains(&METHOD_NO_AUTH) {
        return Err(HandshakeError::NoAcceptableMethod);
    }
    stream
        .write_all(&[VERSION, METHOD_NO_AUTH])
        .await
        .map_err(|_| HandshakeError::Malformed)?;

    let mut request = [0; 4];
    read(stream, &mut request).await?;
    let [version, command, reserved, address_type] = request;
    if version != VERSION || reserved != 0 {
        return Err(HandshakeError::Malformed);
    }
    // The address is read whatever the command, so the reply follows a complete request.
    let destination = match address_type {
        ATYP_IPV4 => {
            let mut octets = [0; 4];
            read(stream, &mut octets).await?;
            let port = read_port(stream).await?;
            Destination::Addr(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        ATYP_IPV6 => {
            let mut octets = [0; 16];
            read(stream, &mut octets).await?;
            let port = read_port(stream).await?;
            Destination::Addr(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        ATYP_DOMAIN => {
            let mut len = [0; 1];
            read(stream, &mut len).await?;
            let mut name = vec![0; usize::from(len[0])];
            read(stream, &mut name).await?;
            let port = read_port(stream).await?;
            let name = String::from_utf8(name)
                .ok()
                .filter(|name| !name.is_empty() && name.is_ascii())
                .ok_or(HandshakeError::Reply(ReplyCode::HostUnreachable))?;
            Destination::Name(name, port)
        }
        _ => return Err(HandshakeError::Reply(ReplyCode::AddressTypeNotSupported)),
    };
    if command != CMD_CONNECT {
        return Err(HandshakeError::Reply(ReplyCode::CommandNotSupported));
    }
    Ok(destination)
}

/// The reply to a refused handshake, if one is due.
async fn finish_refused(stream: &mut TcpStream, err: HandshakeError) {
    let result = match err {
        HandshakeError::Malformed => Ok(()),
        HandshakeError::NoAcceptableMethod => {
            stream.write_all(&[VERSION, METHOD_NONE_ACCEPTABLE]).await
        }
        HandshakeError::Reply(code) => reply(stream, code).await,
    };
    if let Err(err) = result {
        debug!(%err, "SOCKS5 refusal not delivered");
    }
}

/// The pod a client sends as (see the module docs).
async fn source_pod(
    client: SocketAddr,
    config: &Socks5Config,
    pods: &dyn SourcePods,
) -> Option<Arc<PodContext>> {
    if let Some(pod) = pods.by_ip(client.ip()).await {
        return Some(pod);
    }
    let workload = config.default_workload.as_ref()?;
    pods.by_name(&workload.namespace, &workload.name).await
}

/// The address to connect to: given, or a mesh name as `pod` would resolve it (IPv4 first).
fn resolve(
    destination: &Destination,
    inputs: &ProxyInputs,
    pod: &PodContext,
) -> Option<SocketAddr> {
    match destination {
        Destination::Addr(addr) => Some(canonical_addr(*addr)),
        Destination::Name(name, port) => {
            let names = crate::names::StateNames::new(inputs.state.clone());
            let ip = mesh_address(&names, name, &pod.namespace)?;
            Some(SocketAddr::new(ip, *port))
        }
    }
}

/// Resolves `name` through the mesh names table as a pod in `namespace` would (short forms
/// included); IPv4 preferred.
pub fn mesh_address(names: &dyn MeshNames, name: &str, namespace: &str) -> Option<IpAddr> {
    let expander = NameExpander::new("cluster.local", namespace, &[]).ok()?;
    let mut query = Name::from_ascii(name.trim_end_matches('.')).ok()?;
    query.set_fqdn(true);
    let found = expander.resolve(names, &query, namespace)?;
    found
        .addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| found.addresses.first())
        .copied()
}

/// Sends a reply with an unspecified bound address: the relay's own address means nothing
/// to the client when the upstream is an HBONE tunnel.
async fn reply(stream: &mut TcpStream, code: ReplyCode) -> std::io::Result<()> {
    stream
        .write_all(&[VERSION, code as u8, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])
        .await
}

async fn read<S>(stream: &mut S, buf: &mut [u8]) -> Result<(), HandshakeError>
where
    S: tokio::io::AsyncRead + Unpin,
{
    stream
        .read_exact(buf)
        .await
        .map(drop)
        .map_err(|_| HandshakeError::Malformed)
}

async fn read_port<S>(stream: &mut S) -> Result<u16, HandshakeError>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut port = [0; 2];
    read(stream, &mut port).await?;
    Ok(u16::from_be_bytes(port))
}

#[cfg(test)]
#[path = "socks5_tests.rs"]
mod tests;

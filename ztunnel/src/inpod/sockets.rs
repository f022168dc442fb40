//! Ztunnel's sockets inside a pod's namespace: the four listeners and marked outgoing sockets.
//!
//! Every socket carries `SO_MARK` [`ZTUNNEL_MARK`], so the pod's rules never capture it. The
//! listeners need no `IP_TRANSPARENT`: the rules use REDIRECT, which delivers to a local
//! address, unlike TPROXY. Only [`connect_marked_from`], which connects with a source address
//! the pod does not own (the original client's), needs it.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tracing::debug;

use super::error::{Error, Result};
use super::netns::PodNetns;
use super::{DNS_PORT, HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT, ZTUNNEL_MARK};

/// Pending connections per listener before the kernel refuses new ones.
const BACKLOG: i32 = 1024;

/// Ztunnel's listeners inside one pod's network namespace.
#[derive(Debug)]
pub struct InPodListeners {
    /// 15001 on all addresses: connections the pod's apps make, redirected by the rules.
    pub outbound: TcpListener,
    /// 15006 on all addresses: plaintext connections into the pod, redirected by the rules.
    pub inbound_plaintext: TcpListener,
    /// 15008 on all addresses: HBONE into the pod; reached directly, never redirected.
    pub hbone: TcpListener,
    /// 15053/tcp on 127.0.0.1: DNS over TCP from the pod.
    pub dns_tcp: TcpListener,
    /// 15053/udp on 127.0.0.1: DNS over UDP from the pod.
    pub dns_udp: UdpSocket,
    /// 15053/tcp on ::1, when the pod has IPv6.
    pub dns_tcp_v6: Option<TcpListener>,
    /// 15053/udp on ::1, when the pod has IPv6.
    pub dns_udp_v6: Option<UdpSocket>,
}

/// Opens ztunnel's listeners inside `netns`: 15001, 15006 and 15008 on every address
/// (dual-stack when the pod has IPv6), 15053 UDP and TCP on loopback.
///
/// DNS binds to loopback because REDIRECT on output sends to 127.0.0.1 / ::1, and a UDP
/// answer must leave from the address the query was redirected to, or conntrack cannot
/// rewrite its source back to the resolver the app asked. Must be called within a tokio
/// runtime.
pub fn bind_listeners(netns: &PodNetns) -> Result<InPodListeners> {
    let dns_v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, DNS_PORT));
    let dns_v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, DNS_PORT));
    Ok(InPodListeners {
        outbound: bind_tcp_wildcard(netns, OUTBOUND_PORT)?,
        inbound_plaintext: bind_tcp_wildcard(netns, INBOUND_PLAINTEXT_PORT)?,
        hbone: bind_tcp_wildcard(netns, HBONE_PORT)?,
        dns_tcp: bind_tcp(netns, dns_v4)?,
        dns_udp: bind_udp(netns, dns_v4)?,
        dns_tcp_v6: without_ipv6_as_none(bind_tcp(netns, dns_v6))?,
        dns_udp_v6: without_ipv6_as_none(bind_udp(netns, dns_v6))?,
    })
}

/// A marked TCP listener at `addr` inside `netns`; `[::]` also accepts IPv4.
///
/// Must be called within a tokio runtime.
pub fn bind_tcp(netns: &PodNetns, addr: SocketAddr) -> Result<TcpListener> {
    let context = || format!("binding TCP {addr}");
    let socket = netns
        .run_in(|| bound_socket(addr, Type::STREAM, Protocol::TCP))?
        .map_err(|source| Error::io(netns.name(), context(), source))?;
    socket
        .listen(BACKLOG)
        .and_then(|()| TcpListener::from_std(socket.into()))
        .map_err(|source| Error::io(netns.name(), context(), source))
}

/// A marked UDP socket bound to `addr` inside `netns`, e.g. a listener or for upstream DNS
/// queries (port 0); `[::]` also receives IPv4.
///
/// Must be called within a tokio runtime.
pub fn bind_udp(netns: &PodNetns, addr: SocketAddr) -> Result<UdpSocket> {
    netns
        .run_in(|| bound_socket(addr, Type::DGRAM, Protocol::UDP))?
        // Registering with tokio happens here, on the caller's thread, inside the runtime.
        .and_then(|socket| UdpSocket::from_std(socket.into()))
        .map_err(|source| Error::io(netns.name(), format!("binding UDP {addr}"), source))
}

/// Connects to `dst` from inside `netns` with a marked socket, which the rules let through.
pub async fn connect_marked(netns: &PodNetns, dst: SocketAddr) -> Result<TcpStream> {
    let socket = netns
        .run_in(|| marked_socket(dst, Type::STREAM, Protocol::TCP))?
        .map_err(|source| Error::io(netns.name(), format!("socket for {dst}"), source))?;
    connect(netns, socket, dst).await
}

/// Connects to `dst` from inside `netns` with source address `src`, which need not be local
/// (`IP_TRANSPARENT`): how ztunnel hands a connection to the app under the client's address.
///
/// The app's replies to a foreign `src` come back to this socket through the connection mark
/// and policy route that [`apply`](super::apply) installs.
pub async fn connect_marked_from(
    netns: &PodNetns,
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<TcpStream> {
    let socket = netns
        .run_in(|| {
            let socket = marked_socket(dst, Type::STREAM, Protocol::TCP)?;
            match src {
                SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
                SocketAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
            }
            socket.bind(&src.into())?;
            Ok::<_, io::Error>(socket)
        })?
        .map_err(|source| {
            Error::io(
                netns.name(),
                format!("transparent socket {src} for {dst}"),
                source,
            )
        })?;
    connect(netns, socket, dst).await
}

/// The destination a redirected connection was originally addressed to (`SO_ORIGINAL_DST`,
/// or `IP6T_SO_ORIGINAL_DST` for IPv6); IPv4-mapped addresses come back as IPv4.
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let ipv4 = match stream.local_addr()? {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(local) => local.ip().to_ipv4_mapped().is_some(),
    };
    let original = if ipv4 {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    let original = original.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "original destination is not an IP address",
        )
    })?;
    Ok(match original {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => SocketAddr::V6(v6),
        },
        v4 => v4,
    })
}

async fn connect(netns: &PodNetns, socket: Socket, dst: SocketAddr) -> Result<TcpStream> {
    let context = || format!("connecting to {dst}");
    socket
        .set_nonblocking(true)
        .map_err(|source| Error::io(netns.name(), context(), source))?;
    TcpSocket::from_std_stream(socket.into())
        .connect(dst)
        .await
        .map_err(|source| Error::io(netns.name(), context(), source))
}

/// A socket of `peer`'s family carrying ztunnel's mark; call inside the namespace.
fn marked_socket(peer: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(peer), kind, Some(protocol))?;
    socket.set_mark(ZTUNNEL_MARK)?;
    if kind == Type::STREAM {
        // Proxied bytes must leave as soon as they arrive: Nagle would hold small writes back
        // for the peer's ACK. Accepted sockets inherit the option from their listener.
        socket.set_tcp_nodelay(true)?;
    }
    Ok(socket)
}

/// A TCP listener on `port` of every address: `[::]` dual-stack, or `0.0.0.0` when the
/// namespace has no IPv6.
fn bind_tcp_wildcard(netns: &PodNetns, port: u16) -> Result<TcpListener> {
    let dual_stack = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match without_ipv6_as_none(bind_tcp(netns, dual_stack))? {
        Some(listener) => Ok(listener),
        None => {
            debug!(
                netns = netns.name(),
                port, "no IPv6 in this namespace; binding IPv4 only"
            );
            bind_tcp(netns, SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        }
    }
}

/// Turns "this namespace has no IPv6" into `None`, keeping every other outcome.
fn without_ipv6_as_none<T>(bound: Result<T>) -> Result<Option<T>> {
    match bound {
        Ok(value) => Ok(Some(value)),
        Err(err)
            if err.raw_os_error().is_some_and(|code| {
                code == nix::libc::EAFNOSUPPORT || code == nix::libc::EADDRNOTAVAIL
            }) =>
        {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// A marked, non-blocking socket bound to `addr`; call inside the namespace.
fn bound_socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = marked_socket(addr, kind, protocol)?;
    if addr.is_ipv6() {
        // Only matters for `[::]`: one listener for both families.
        socket.set_only_v6(false)?;
    }
    // Re-enrolling after a ztunnel restart must not wait for old connections' TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

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

/// Ztunnel's listeners inside one pod's network namespace, bound on all addresses.
#[derive(Debug)]
pub struct InPodListeners {
    /// 15001: connections the pod's apps make, redirected by the rules.
    pub outbound: TcpListener,
    /// 15006: plaintext connections into the pod, redirected by the rules.
    pub inbound_plaintext: TcpListener,
    /// 15008: HBONE connections into the pod; reached directly, never redirected.
    pub hbone: TcpListener,
    /// 15053/tcp: DNS over TCP from the pod.
    pub dns_tcp: TcpListener,
    /// 15053/udp: DNS over UDP from the pod.
    pub dns_udp: UdpSocket,
}

/// Opens the four listeners (15001, 15006, 15008, 15053 TCP and UDP) inside `netns`.
///
/// Must be called within a tokio runtime.
pub fn bind_listeners(netns: &PodNetns) -> Result<InPodListeners> {
    Ok(InPodListeners {
        outbound: bind_tcp(netns, OUTBOUND_PORT)?,
        inbound_plaintext: bind_tcp(netns, INBOUND_PLAINTEXT_PORT)?,
        hbone: bind_tcp(netns, HBONE_PORT)?,
        dns_tcp: bind_tcp(netns, DNS_PORT)?,
        dns_udp: bind_udp(netns, DNS_PORT)?,
    })
}

/// A marked TCP listener on `port` of every address in `netns` (dual-stack when IPv6 is on).
///
/// Must be called within a tokio runtime.
pub fn bind_tcp(netns: &PodNetns, port: u16) -> Result<TcpListener> {
    let context = || format!("binding TCP port {port}");
    let socket = netns
        .run_in(|| wildcard_socket(Type::STREAM, Protocol::TCP, port))?
        .map_err(|source| Error::io(netns.name(), context(), source))?;
    socket
        .listen(BACKLOG)
        .and_then(|()| TcpListener::from_std(socket.into()))
        .map_err(|source| Error::io(netns.name(), context(), source))
}

/// A marked UDP socket bound to `port` of every address in `netns`.
///
/// Must be called within a tokio runtime.
pub fn bind_udp(netns: &PodNetns, port: u16) -> Result<UdpSocket> {
    let socket = netns
        .run_in(|| wildcard_socket(Type::DGRAM, Protocol::UDP, port))?
        .and_then(|socket| UdpSocket::from_std(socket.into()))
        .map_err(|source| Error::io(netns.name(), format!("binding UDP port {port}"), source))?;
    Ok(socket)
}

/// A marked UDP socket bound to `bind` inside `netns`, e.g. for upstream DNS queries.
///
/// Must be called within a tokio runtime.
pub fn udp_marked(netns: &PodNetns, bind: SocketAddr) -> Result<UdpSocket> {
    netns
        .run_in(|| {
            let socket = marked_socket(bind, Type::DGRAM, Protocol::UDP)?;
            socket.bind(&bind.into())?;
            UdpSocket::from_std(socket.into())
        })?
        .map_err(|source| Error::io(netns.name(), format!("binding UDP {bind}"), source))
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
    Ok(socket)
}

/// A marked, non-blocking socket bound to `port` on `[::]` (accepting IPv4 too), or on
/// `0.0.0.0` when the namespace has no IPv6; call inside the namespace.
fn wildcard_socket(kind: Type, protocol: Protocol, port: u16) -> io::Result<Socket> {
    let dual_stack = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let bound = marked_socket(dual_stack, kind, protocol).and_then(|socket| {
        socket.set_only_v6(false)?;
        prepare_and_bind(&socket, dual_stack)?;
        Ok(socket)
    });
    match bound {
        Ok(socket) => Ok(socket),
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(nix::libc::EAFNOSUPPORT | nix::libc::EADDRNOTAVAIL)
            ) =>
        {
            debug!(port, %err, "no IPv6 in this namespace; binding IPv4 only");
            let ipv4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let socket = marked_socket(ipv4, kind, protocol)?;
            prepare_and_bind(&socket, ipv4)?;
            Ok(socket)
        }
        Err(err) => Err(err),
    }
}

fn prepare_and_bind(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    // Re-enrolling after a ztunnel restart must not wait for old connections' TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())
}

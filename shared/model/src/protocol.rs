//! Which application protocol a service port speaks, decided the way Istio does: from
//! `appProtocol` if set, else from the port name's `<protocol>[-<suffix>]` prefix.

use serde::{Deserialize, Serialize};

/// The application protocol of a service port, as far as the mesh cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AppProtocol {
    /// HTTP/1.1 (and gRPC-Web, which rides on it).
    Http,
    /// HTTP/2 cleartext.
    Http2,
    /// gRPC over HTTP/2.
    Grpc,
    /// Opaque TCP: TLS, databases and anything declared `tcp`.
    Tcp,
    /// Not declared or not recognised: proxied as TCP, never parsed as HTTP.
    Unknown,
}

impl AppProtocol {
    /// Whether a waypoint may parse this port as HTTP.
    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Http2 | Self::Grpc)
    }
}

/// Decides the protocol of a service port.
///
/// `app_protocol` (the Kubernetes `appProtocol` field) wins when present, even when it names
/// something unrecognised (then the port is `Unknown`, as in Istio). Otherwise the port name is
/// used: the part before the first `-` (`http-web` → HTTP), except that `grpc-web` is checked
/// first because it contains a `-`. Matching is case-insensitive. `is_udp` ports are never
/// proxied as TCP, so they are `Unknown`.
pub fn select_protocol(
    app_protocol: Option<&str>,
    port_name: Option<&str>,
    is_udp: bool,
) -> AppProtocol {
    if is_udp {
        return AppProtocol::Unknown;
    }
    let declared = match app_protocol {
        Some(app) => app,
        None => port_name.unwrap_or(""),
    };
    let declared = declared.to_ascii_lowercase();
    match declared.as_str() {
        "kubernetes.io/h2c" => return AppProtocol::Http2,
        "kubernetes.io/ws" => return AppProtocol::Http,
        "kubernetes.io/wss" => return AppProtocol::Tcp,
        _ => {}
    }
    if declared.starts_with("grpc-web") {
        return AppProtocol::Http;
    }
    // `appProtocol` is a protocol name, not a prefixed port name, so only names are split.
    let name = if app_protocol.is_some() {
        declared.as_str()
    } else {
        declared.split('-').next().unwrap_or("")
    };
    match name {
        "http" => AppProtocol::Http,
        "http2" | "h2c" => AppProtocol::Http2,
        "grpc" => AppProtocol::Grpc,
        "tcp" | "https" | "tls" | "mongo" | "mysql" | "redis" => AppProtocol::Tcp,
        _ => AppProtocol::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_selection_table() {
        use AppProtocol::*;
        let cases: &[(Option<&str>, Option<&str>, bool, AppProtocol)] = &[
            // Port-name prefixes.
            (None, Some("http"), false, Http),
            (None, Some("http-web"), false, Http),
            (None, Some("HTTP-Web"), false, Http),
            (None, Some("http2"), false, Http2),
            (None, Some("http2-api"), false, Http2),
            (None, Some("grpc"), false, Grpc),
            (None, Some("grpc-api"), false, Grpc),
            (None, Some("grpc-web"), false, Http),
            (None, Some("tcp-db"), false, Tcp),
            (None, Some("https"), false, Tcp),
            (None, Some("tls-x"), false, Tcp),
            (None, Some("mysql"), false, Tcp),
            (None, Some("web"), false, Unknown),
            (None, Some("httpx"), false, Unknown),
            (None, Some("web-http"), false, Unknown),
            (None, Some(""), false, Unknown),
            (None, None, false, Unknown),
            // appProtocol wins over the name, including when unrecognised.
            (Some("http"), Some("tcp"), false, Http),
            (Some("GRPC"), Some("http"), false, Grpc),
            (Some("http2"), None, false, Http2),
            (Some("kubernetes.io/h2c"), Some("tcp"), false, Http2),
            (Some("kubernetes.io/ws"), None, false, Http),
            (Some("kubernetes.io/wss"), None, false, Tcp),
            (Some("grpc-web"), None, false, Http),
            (Some("tcp"), Some("http"), false, Tcp),
            (Some("example.com/custom"), Some("http"), false, Unknown),
            (Some("http-web"), None, false, Unknown),
            // UDP is never proxied as TCP.
            (None, Some("http"), true, Unknown),
            (Some("grpc"), None, true, Unknown),
        ];
        for &(app, name, udp, expected) in cases {
            assert_eq!(
                select_protocol(app, name, udp),
                expected,
                "appProtocol={app:?} name={name:?} udp={udp}"
            );
        }
    }

    #[test]
    fn http_family() {
        assert!(AppProtocol::Grpc.is_http());
        assert!(AppProtocol::Http2.is_http());
        assert!(!AppProtocol::Tcp.is_http());
        assert!(!AppProtocol::Unknown.is_http());
    }
}

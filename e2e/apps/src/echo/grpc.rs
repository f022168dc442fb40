//! gRPC-shaped requests: length-prefixed messages in, one length-prefixed message out and the
//! outcome in `grpc-status`/`grpc-message` trailers. The payload is the echo JSON, not
//! protobuf: enough for a proxy to see real gRPC framing, statuses and trailers.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};

/// `grpc-status` codes the echo server uses.
pub const OK: u32 = 0;
/// INVALID_ARGUMENT: the request's framing was wrong.
pub const INVALID_ARGUMENT: u32 = 3;

/// Why a request body is not a sequence of gRPC messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body ended inside a message header or payload.
    #[error("truncated gRPC message: {0} bytes left over")]
    Truncated(usize),
    /// The compressed flag is set; the echo server negotiates no compression.
    #[error("compressed gRPC message, but no grpc-encoding is supported")]
    Compressed,
    /// The flag byte is neither 0 nor 1.
    #[error("invalid gRPC message flag {0}")]
    BadFlag(u8),
}

/// Splits a request body into its messages.
pub fn decode_messages(mut body: &[u8]) -> Result<Vec<Bytes>, FrameError> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        let Some((header, rest)) = body.split_first_chunk::<5>() else {
            return Err(FrameError::Truncated(body.len()));
        };
        match header[0] {
            0 => {}
            1 => return Err(FrameError::Compressed),
            flag => return Err(FrameError::BadFlag(flag)),
        }
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if rest.len() < length {
            return Err(FrameError::Truncated(body.len()));
        }
        let (message, rest) = rest.split_at(length);
        messages.push(Bytes::copy_from_slice(message));
        body = rest;
    }
    Ok(messages)
}

/// Frames one uncompressed message.
pub fn encode_message(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(message.len() + 5);
    framed.put_u8(0);
    // Echo payloads are far below 4 GiB; saturate rather than wrap if one ever is not.
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// The gRPC status a proxy would report for an HTTP failure status (gRPC's own mapping).
pub fn status_for_http(status: StatusCode) -> u32 {
    match status.as_u16() {
        200..=299 => OK,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// Trailers carrying `code` and, when non-empty, `message`.
pub fn trailers(code: u32, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty()
        && let Ok(value) = HeaderValue::from_str(&percent_encode(message))
    {
        trailers.insert("grpc-message", value);
    }
    trailers
}

/// gRPC percent-encodes `grpc-message` outside printable ASCII (and `%` itself).
fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_the_framing() {
        let mut body = encode_message(b"hello").to_vec();
        body.extend_from_slice(&encode_message(b""));
        body.extend_from_slice(&encode_message(b"world"));
        let messages = decode_messages(&body).unwrap();
        assert_eq!(
            messages,
            vec![Bytes::from("hello"), Bytes::new(), Bytes::from("world")]
        );
    }

    #[test]
    fn bad_framing_is_reported() {
        let framed = encode_message(b"hello");
        assert_eq!(decode_messages(&framed[..3]), Err(FrameError::Truncated(3)));
        assert_eq!(decode_messages(&framed[..7]), Err(FrameError::Truncated(7)));
        assert_eq!(
            decode_messages(&[1, 0, 0, 0, 0]),
            Err(FrameError::Compressed)
        );
        assert_eq!(
            decode_messages(&[7, 0, 0, 0, 0]),
            Err(FrameError::BadFlag(7))
        );
    }

    #[test]
    fn http_failures_map_to_grpc_codes_and_messages_are_encoded() {
        assert_eq!(status_for_http(StatusCode::OK), OK);
        assert_eq!(status_for_http(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(status_for_http(StatusCode::FORBIDDEN), 7);
        assert_eq!(status_for_http(StatusCode::IM_A_TEAPOT), 2);
        let trailers = trailers(14, "50% injected\n");
        assert_eq!(trailers["grpc-status"], "14");
        assert_eq!(trailers["grpc-message"], "50%25 injected%0A");
    }
}

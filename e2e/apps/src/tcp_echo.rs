//! The TCP echo server: optionally writes a banner when a connection opens, then sends back
//! every byte it receives, and half-closes when the client does.

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections on `listener` until the task is dropped, greeting each with `banner`.
pub async fn serve(listener: TcpListener, banner: Option<String>) -> std::io::Result<()> {
    let banner: std::sync::Arc<[u8]> = banner.unwrap_or_default().into_bytes().into();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let banner = banner.clone();
        tokio::spawn(async move {
            match echo(stream, &banner).await {
                Ok(bytes) => tracing::debug!(%peer, bytes, "connection closed"),
                Err(error) => tracing::debug!(%peer, %error, "connection failed"),
            }
        });
    }
}

/// Echoes one connection; returns the number of bytes echoed (banner excluded).
async fn echo(mut stream: TcpStream, banner: &[u8]) -> std::io::Result<u64> {
    let _ = stream.set_nodelay(true);
    if !banner.is_empty() {
        stream.write_all(banner).await?;
    }
    let (mut reader, mut writer) = stream.split();
    let bytes = tokio::io::copy(&mut reader, &mut writer).await?;
    writer.shutdown().await?;
    Ok(bytes)
}

//! The control-plane port on the wire (root, local mesh): the controller's gRPC port speaks
//! only TLS, with a certificate that chains to the root the proxies are given and names the
//! address they dial; a plaintext HTTP/2 client gets no HTTP/2 answer.

use std::sync::Arc;

use ambit_e2e::{bounded, mesh, within};
use anyhow::{Context, Result, ensure};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// HTTP/2's client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// TLS record content type of an alert.
const TLS_ALERT: u8 = 0x15;

#[tokio::test]
async fn controller_port_speaks_only_tls() -> Result<()> {
    bounded(async {
        let mesh = mesh("control-plane", 1).await?;
        let node = mesh.cluster().node("node-1").context("node-1")?;
        let controller = mesh.controller_addr();

        // Plaintext HTTP/2, as a proxy with `--controller http://` would speak: the connection
        // closes (or is reset: the preface is never read) with at most a TLS alert, never an
        // HTTP/2 SETTINGS frame.
        let mut plaintext = node.netns().connect_tcp(controller).await?;
        plaintext.write_all(H2_PREFACE).await?;
        let mut reply = Vec::new();
        match within("the controller to close", plaintext.read_to_end(&mut reply)).await? {
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(err) => return Err(err.into()),
        }
        ensure!(
            reply.first().is_none_or(|&byte| byte == TLS_ALERT),
            "plaintext HTTP/2 got a non-TLS answer: {reply:02x?}"
        );

        // TLS, trusting only the root file the proxies are given, verifying the IP they dial.
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(mesh.controller_root_file())? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = node.netns().connect_tcp(controller).await?;
        let tls = within(
            "the TLS handshake",
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::IpAddress(controller.ip().into()), tcp),
        )
        .await??;
        let (_, connection) = tls.get_ref();
        ensure!(
            connection.alpn_protocol() == Some(b"h2"),
            "ALPN: {:?}",
            connection.alpn_protocol()
        );
        mesh.down().await?;
        Ok(())
    })
    .await
}

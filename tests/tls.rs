//! The client crate speaks `wss://`: through a TLS-terminating proxy (as an ingress
//! would be) to the server, trusting a private CA; and refuses a server its roots do not
//! vouch for.

mod common;

use common::{TestServer, WAIT};
use playtree_client::{Client, ClientError, ClientOptions};
use std::sync::Arc;
use tokio::net::TcpListener;

/// A test CA, and a certificate it signed for `localhost` and 127.0.0.1 (DER; made with
/// openssl for this test, valid for a century).
const CA: &[u8] = include_bytes!("data/tls-test-ca.der");
const CERT: &[u8] = include_bytes!("data/tls-test-localhost.der");
const KEY: &[u8] = include_bytes!("data/tls-test-localhost.key.der");

/// Accepts TLS on 127.0.0.1 and pipes each connection to `upstream` in plain TCP.
async fn tls_proxy(upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(CERT.to_vec())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(KEY.to_vec().into()),
        )
        .expect("certificate and key");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    address
}

fn options(roots: Vec<Vec<u8>>) -> ClientOptions {
    ClientOptions {
        request_timeout: WAIT,
        handshake_timeout: WAIT,
        reconnect: false,
        tls_roots: roots,
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn the_client_connects_over_tls_and_refuses_an_unknown_certificate() {
    let server = TestServer::start("").await;
    let proxy = tls_proxy(server.running().ws_addr).await;
    let url = format!("wss://localhost:{}", proxy.port());

    let (client, _events) = tokio::time::timeout(
        WAIT,
        Client::connect_with(&url, &server.token("alice"), options(vec![CA.to_vec()])),
    )
    .await
    .expect("in time")
    .expect("connects over TLS, trusting the test CA");
    assert_eq!(client.wallet().await.expect("served over TLS"), 0);

    // Without the test CA among its roots, the client refuses the server.
    let refused = tokio::time::timeout(
        WAIT,
        Client::connect_with(&url, &server.token("alice"), options(Vec::new())),
    )
    .await
    .expect("in time")
    .expect_err("an unknown certificate is refused");
    assert!(
        matches!(&refused, ClientError::Connect(reason) if reason.contains("certificate")),
        "{refused:?}"
    );
}

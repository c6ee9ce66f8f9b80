//! TLS to the broker (`amqps://`) and to PostgreSQL (`sslmode=verify-full`), with a configurable
//! CA bundle and certificates verified — rustls, no OpenSSL.
//!
//! The test makes its own CA and puts a TLS-terminating proxy on loopback in front of the real
//! RabbitMQ and PostgreSQL (for PostgreSQL it answers the protocol's SSLRequest first, as a
//! TLS-enabled server does). qyzmet connects through the proxies; a proxy whose certificate
//! comes from another CA, or names another host, is refused.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

use qyzmet::contract::Status;
use qyzmet::startup::Options;

use crate::common::*;

/// A test CA and a server certificate it issued for `names` (DNS names or IP addresses).
struct TestCa {
    pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(cn: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        TestCa { pem: issuer.pem(), issuer }
    }

    fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().expect("dns name")),
            })
            .collect();
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        let chain = vec![pki_types::CertificateDer::from(cert.der().to_vec())];
        let key = pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        Arc::new(config)
    }
}

/// What the proxy speaks before TLS.
#[derive(Clone, Copy)]
enum Protocol {
    /// TLS from the first byte (amqps).
    Amqp,
    /// PostgreSQL: an 8-byte SSLRequest, answered `S`, then TLS.
    Postgres,
}

/// Accepts TLS on a loopback port and forwards the plain bytes to `upstream`. Runs until the
/// test process ends. Returns the port.
async fn tls_proxy(config: Arc<rustls::ServerConfig>, upstream: String, protocol: Protocol) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Protocol::Postgres = protocol {
                    let mut request = [0u8; 8];
                    if client.read_exact(&mut request).await.is_err() || request != [0, 0, 0, 8, 4, 210, 22, 47] {
                        return;
                    }
                    if client.write_all(b"S").await.is_err() {
                        return;
                    }
                }
                let Ok(mut tls) = acceptor.accept(client).await else { return };
                let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    port
}

/// `host:port` of a URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

/// `url` pointed at `127.0.0.1:port` with another scheme, keeping user, path and query.
fn through(url: &str, scheme: &str, port: u16) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (user, hostpath) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let path = hostpath.find(['/', '?']).map(|i| &hostpath[i..]).unwrap_or("");
    format!("{scheme}://{user}127.0.0.1:{port}{path}")
}

#[tokio::test]
async fn the_pipeline_runs_over_tls_to_both_services_with_certificates_verified() {
    let mut env = TestEnv::new().await;
    let ca = TestCa::new("qyzmet test CA");
    let dir = std::env::temp_dir().join(format!("qyzmet-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");

    let good = ca.server_config(&["127.0.0.1", "localhost"]);
    let amqps = tls_proxy(good.clone(), host_port(&env.settings.amqp_url), Protocol::Amqp).await;
    let pgs = tls_proxy(good, host_port(&env.settings.database_url), Protocol::Postgres).await;
    let plain = env.settings.clone();
    env.settings.amqp_url = through(&plain.amqp_url, "amqps", amqps);
    env.settings.amqp_ca_file = Some(ca_file.clone());
    env.settings.database_url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        through(&plain.database_url, "postgres", pgs),
        ca_file.display()
    );
    let app = env.start(regulations(), Options::all(4)).await;
    let r =
        request("doctor-appointment", "akmola", "portal", json!({ "iin": who::CITIZEN }), who::AKMOLA_PHC, json!({}));
    env.publish_request(&r).await;
    assert_eq!(env.final_outcome(id_of(&r)).await.status, Status::Completed);
    app.shutdown(Duration::from_secs(5)).await;

    // A server whose certificate another CA issued is refused …
    let stranger = TestCa::new("someone else's CA").server_config(&["127.0.0.1"]);
    let bad_amqps = tls_proxy(stranger.clone(), host_port(&plain.amqp_url), Protocol::Amqp).await;
    let bad_pgs = tls_proxy(stranger, host_port(&plain.database_url), Protocol::Postgres).await;
    let mut broker_check = env.settings.clone();
    broker_check.amqp_url = through(&plain.amqp_url, "amqps", bad_amqps);
    // (lapin retries a failed TLS handshake until qyzmet's connect timeout ends it.)
    let e = broker_check.broker("tls test").await.err().expect("an untrusted broker certificate is refused");
    assert!(format!("{e:#}").contains("certificate is not accepted"), "{e:#}");
    let db = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        through(&plain.database_url, "postgres", bad_pgs),
        ca_file.display()
    );
    let e = qyzmet::store::Store::connect(&db, 1).await.expect_err("an untrusted database certificate is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // … and so is one of the right CA that names another host.
    let elsewhere = ca.server_config(&["db.elsewhere.example"]);
    let wrong_host = tls_proxy(elsewhere, host_port(&plain.database_url), Protocol::Postgres).await;
    let db = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        through(&plain.database_url, "postgres", wrong_host),
        ca_file.display()
    );
    let e = qyzmet::store::Store::connect(&db, 1).await.expect_err("a certificate for another host is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    env.cleanup().await;
}

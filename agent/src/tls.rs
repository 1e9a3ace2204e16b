//! The device's TLS client configuration for QUIC: TLS 1.3 only (rustls, ring provider), ALPN
//! `sextant/1`, the fleet CA as the only trust root, and the device's client certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{AgentError, Result};

/// ALPN protocol id of the device protocol.
pub const ALPN: &[u8] = b"sextant/1";

fn tls_err(what: &'static str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Tls(format!("{what}: {e}"))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let v = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err("read certificate", format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_err("parse certificate", format!("{}: {e}", path.display())))?;
    if v.is_empty() {
        return Err(tls_err(
            "read certificate",
            format!("{}: none", path.display()),
        ));
    }
    Ok(v)
}

/// The rustls client configuration of a device.
pub fn client_tls_config(
    ca_cert: &Path,
    device_cert: &Path,
    device_key: &Path,
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_cert)? {
        roots.add(c).map_err(|e| tls_err("trust root", e))?;
    }
    let key = PrivateKeyDer::from_pem_file(device_key)
        .map_err(|e| tls_err("read key", format!("{}: {e}", device_key.display())))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("protocol versions", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs(device_cert)?, key)
        .map_err(|e| tls_err("client certificate", e))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// A quinn client configuration around [`client_tls_config`], with keep-alives so an idle
/// session survives NAT timeouts and a dead server is noticed within the idle timeout.
pub fn quic_client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| tls_err("QUIC crypto", e))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(std::time::Duration::from_secs(2)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(std::time::Duration::from_secs(10))
                .map_err(|e| tls_err("idle timeout", e))?,
        ))
        .stream_receive_window((4u32 << 20).into())
        .receive_window((16u32 << 20).into());
    cfg.transport_config(Arc::new(t));
    Ok(cfg)
}

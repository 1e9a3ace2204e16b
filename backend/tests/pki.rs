//! The fleet PKI end to end: CA, device and server certificates, real TLS 1.3 handshakes with
//! rustls (ring) in memory, revocation through the CRL, and the release key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use sextant_backend::pki::{self, PkiError, ReleaseKey};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Runs a TLS handshake between the two configurations over in-memory buffers; returns the
/// server's view of the client certificate chain, or the first error either side reports.
fn handshake(
    client: rustls::ClientConfig,
    server: rustls::ServerConfig,
) -> Result<Vec<Vec<u8>>, rustls::Error> {
    let mut c = rustls::ClientConnection::new(
        Arc::new(client),
        ServerName::try_from("localhost").unwrap(),
    )?;
    let mut s = rustls::ServerConnection::new(Arc::new(server))?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        let s_res = s.process_new_packets();
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        let c_res = c.process_new_packets();
        s_res?;
        c_res?;
        if !c.is_handshaking() && !s.is_handshaking() {
            assert_eq!(s.alpn_protocol(), Some(pki::ALPN));
            return Ok(s
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| c.to_vec())
                .collect());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn mutual_tls_with_fleet_certificates_and_revocation() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    pki::init_ca(&ca, "Sextant test fleet CA").unwrap();
    assert_eq!(mode(&ca.join(pki::CA_KEY)), 0o600);
    assert!(matches!(
        pki::init_ca(&ca, "again"),
        Err(PkiError::Exists(_))
    ));

    let server = pki::issue_server(
        &ca,
        &["localhost".into(), "127.0.0.1".into()],
        &tmp.path().join("srv"),
    )
    .unwrap();
    let dev = pki::issue_device(&ca, "device-0001", &tmp.path().join("dev1")).unwrap();
    let dev2 = pki::issue_device(&ca, "device-0002", &tmp.path().join("dev2")).unwrap();
    assert_eq!(mode(&dev.key), 0o600);
    assert_eq!(mode(&server.key), 0o600);
    assert!(matches!(
        pki::issue_device(&ca, "bad id", &tmp.path().join("x")),
        Err(PkiError::InvalidDeviceId(_))
    ));

    let server_cfg = || {
        pki::server_tls_config(
            &ca.join(pki::CA_CERT),
            &ca.join(pki::CRL),
            &server.cert,
            &server.key,
        )
        .unwrap()
    };
    let client = |f: &pki::IssuedFiles| pki::device_tls_config(&f.ca, &f.cert, &f.key).unwrap();

    // A device with a fleet certificate connects, and the server learns its id.
    let chain = handshake(client(&dev), server_cfg()).unwrap();
    assert_eq!(pki::device_id_from_cert(&chain[0]).unwrap(), "device-0001");

    // A certificate from another CA is refused.
    let other_ca = tmp.path().join("other-ca");
    pki::init_ca(&other_ca, "Someone else").unwrap();
    let rogue = pki::issue_device(&other_ca, "device-0001", &tmp.path().join("rogue")).unwrap();
    let rogue_cfg = pki::device_tls_config(&dev.ca, &rogue.cert, &rogue.key).unwrap();
    assert!(handshake(rogue_cfg, server_cfg()).is_err());

    // Revoking device-0001 makes its handshake fail; device-0002 still connects.
    let revoked = pki::revoke_device(&ca, "device-0001").unwrap();
    assert_eq!(revoked, vec![dev.serial.clone()]);
    let err = handshake(client(&dev), server_cfg()).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
        ),
        "{err:?}"
    );
    handshake(client(&dev2), server_cfg()).unwrap();
    let issued = pki::read_issued(&ca).unwrap();
    assert_eq!(issued.iter().filter(|c| c.revoked).count(), 1);
    assert!(matches!(
        pki::revoke_device(&ca, "nobody"),
        Err(PkiError::UnknownDevice(_))
    ));
}

#[test]
fn release_key_signs_and_verifies_against_the_pinned_key() {
    let tmp = tempfile::tempdir().unwrap();
    let key = ReleaseKey::generate(tmp.path()).unwrap();
    assert_eq!(mode(&tmp.path().join(pki::RELEASE_KEY)), 0o600);
    assert!(matches!(
        ReleaseKey::generate(tmp.path()),
        Err(PkiError::Exists(_))
    ));
    let pinned = pki::load_public_key(&tmp.path().join(pki::RELEASE_PUB)).unwrap();
    assert_eq!(pinned, key.public_key());

    let msg = b"sextant-model-metadata\0\x01 canonical bytes";
    let sig = key.sign(msg);
    pki::verify(msg, &sig, &pinned).unwrap();
    let reloaded = ReleaseKey::load(&tmp.path().join(pki::RELEASE_KEY)).unwrap();
    assert_eq!(reloaded.sign(msg), sig, "Ed25519 is deterministic");

    let mut bad = sig;
    bad[10] ^= 1;
    assert!(matches!(
        pki::verify(msg, &bad, &pinned),
        Err(PkiError::BadSignature)
    ));
    assert!(matches!(
        pki::verify(b"other", &sig, &pinned),
        Err(PkiError::BadSignature)
    ));
    let other = ReleaseKey::generate(&tmp.path().join("other")).unwrap();
    assert!(matches!(
        pki::verify(msg, &sig, &other.public_key()),
        Err(PkiError::BadSignature)
    ));
}

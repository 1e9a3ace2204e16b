//! Fleet PKI and the model release key.
//!
//! # Fleet CA and mutual TLS
//!
//! Devices and the backend authenticate each other with certificates from one fleet CA
//! (`sextant backend ca init`). Keys are **ECDSA P-256** (signatures ECDSA-SHA256): rustls with
//! the ring provider verifies it for client authentication, and it is the key type that phone
//! secure elements (iOS Secure Enclave, Android StrongBox/Keystore) generate and keep, so a
//! device key can later move into hardware without changing the CA.
//!
//! A CA directory holds:
//!
//! | file | content |
//! | --- | --- |
//! | `ca.crt.pem` | the CA certificate (pinned by devices and the server) |
//! | `ca.key.pem` | the CA private key, mode 0600 |
//! | `issued.tsv` | one line per issued certificate: serial (hex), kind, name, not-after (Unix s), revoked (0/1) |
//! | `crl.pem` | the revocation list: an X.509 CRL signed by the CA, listing revoked serials |
//!
//! A device certificate ([`issue_device`]) carries the device id as its subject common name
//! and as a SAN URI `urn:sextant:device:<id>`, with the client-auth extended key usage; the
//! server reads the id back with [`device_id_from_cert`]. [`revoke_device`] marks every
//! certificate of a device revoked and re-signs `crl.pem`; [`server_tls_config`] hands the CRL to
//! rustls's client verifier, so a revoked device fails the TLS handshake itself. The server
//! certificate ([`issue_server`]) has server-auth usage and DNS/IP SANs. Both configurations
//! are TLS 1.3 only with ALPN `sextant/1`, ready for quinn.
//!
//! # Release key
//!
//! Model metadata is signed with an **Ed25519** release key ([`ReleaseKey`]), separate from the
//! TLS CA: the CA authenticates connections, the release key vouches for model content, and
//! devices pin its public key (`release.pub`, 64 hex characters). [`ReleaseKey::sign`] signs the
//! metadata's canonical bytes; [`verify`] checks a signature against a pinned key.
//!
//! Every private key is written with mode 0600 through a temporary file and a rename, and an
//! existing key is never overwritten.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// ALPN protocol id of the device protocol.
pub const ALPN: &[u8] = b"sextant/1";
/// CA certificate file name.
pub const CA_CERT: &str = "ca.crt.pem";
/// CA key file name.
pub const CA_KEY: &str = "ca.key.pem";
/// Issued-certificate index file name.
pub const ISSUED: &str = "issued.tsv";
/// Revocation list file name.
pub const CRL: &str = "crl.pem";
/// Release private key file name (PKCS#8).
pub const RELEASE_KEY: &str = "release.key.pk8";
/// Release public key file name (hex).
pub const RELEASE_PUB: &str = "release.pub";

/// Validity of the CA certificate.
pub const CA_VALIDITY_DAYS: i64 = 20 * 365;
/// Validity of device and server certificates.
pub const LEAF_VALIDITY_DAYS: i64 = 2 * 365;
/// How long a CRL is valid before it must be re-signed.
pub const CRL_VALIDITY_DAYS: i64 = 365;

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Refusing to overwrite an existing key or CA.
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// A PEM, DER or key file could not be parsed.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A device id is empty, too long or has characters outside `[A-Za-z0-9._:-]`.
    #[error("invalid device id {0:?}: 1-128 characters of [A-Za-z0-9._:-]")]
    InvalidDeviceId(String),
    /// No certificate was issued to this device.
    #[error("no certificate was issued to device {0:?}")]
    UnknownDevice(String),
    /// A signature does not verify against the pinned release key.
    #[error("signature does not verify against the release key")]
    BadSignature,
    /// The system random generator failed.
    #[error("random generator failed")]
    Random,
}

/// Result alias for the PKI.
pub type Result<T, E = PkiError> = std::result::Result<T, E>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io { what, path, source }
}

fn parse_err(what: &'static str) -> impl FnOnce(String) -> PkiError {
    move |reason| PkiError::Parse { what, reason }
}

/// Writes `bytes` to `path` atomically with the given mode, refusing to overwrite.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if path.exists() {
        return Err(PkiError::Exists(path.to_path_buf()));
    }
    write_replace(path, bytes, mode)
}

/// Writes `bytes` to `path` atomically (temporary file with `mode`, fsync, rename, dir fsync).
fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("write", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io("rename", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

/// Checks a device id: 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_device_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::InvalidDeviceId(id.to_owned()))
    }
}

fn random_serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| PkiError::Random)?;
    b[0] = (b[0] & 0x7f) | 0x01; // positive, and no leading zero octet
    Ok(SerialNumber::from_slice(&b))
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Paths of the files written for a device or server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// A copy of the CA certificate, to pin.
    pub ca: PathBuf,
    /// The certificate's serial number (hex).
    pub serial: String,
}

/// One line of `issued.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// Serial number (hex).
    pub serial: String,
    /// `device` or `server`.
    pub kind: String,
    /// Device id or server name.
    pub name: String,
    /// Expiry (Unix seconds).
    pub not_after_s: i64,
    /// Whether it is revoked.
    pub revoked: bool,
}

/// Reads the CA directory's certificate index.
pub fn read_issued(ca_dir: &Path) -> Result<Vec<IssuedCert>> {
    let path = ca_dir.join(ISSUED);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("read", &path)(e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f.as_slice() {
                [serial, kind, name, not_after, revoked] => Ok(IssuedCert {
                    serial: (*serial).to_owned(),
                    kind: (*kind).to_owned(),
                    name: (*name).to_owned(),
                    not_after_s: not_after
                        .parse()
                        .map_err(|_| parse_err("issued.tsv")(format!("bad expiry in {l:?}")))?,
                    revoked: *revoked == "1",
                }),
                _ => Err(parse_err("issued.tsv")(format!("bad line {l:?}"))),
            }
        })
        .collect()
}

fn write_issued(ca_dir: &Path, certs: &[IssuedCert]) -> Result<()> {
    let mut s = String::new();
    for c in certs {
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            c.serial,
            c.kind,
            c.name,
            c.not_after_s,
            u8::from(c.revoked)
        ));
    }
    write_replace(&ca_dir.join(ISSUED), s.as_bytes(), 0o644)
}

/// Creates a fleet CA in `dir`: key, self-signed certificate, empty index and empty CRL.
/// Refuses to overwrite an existing CA.
pub fn init_ca(dir: &Path, common_name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io("create CA directory", dir))?;
    let key_path = dir.join(CA_KEY);
    let cert_path = dir.join(CA_CERT);
    for p in [&key_path, &cert_path] {
        if p.exists() {
            return Err(PkiError::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Sextant fleet");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write_issued(dir, &[])?;
    write_crl(dir)?;
    Ok(cert_path)
}

fn load_issuer(ca_dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::from_pem(&read_string(&ca_dir.join(CA_KEY))?)?;
    Ok(Issuer::from_ca_cert_pem(
        &read_string(&ca_dir.join(CA_CERT))?,
        key,
    )?)
}

fn issue_leaf(
    ca_dir: &Path,
    out_dir: &Path,
    kind: &str,
    name: &str,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
) -> Result<IssuedFiles> {
    let issuer = load_issuer(ca_dir)?;
    std::fs::create_dir_all(out_dir).map_err(io("create output directory", out_dir))?;
    let cert_path = out_dir.join(format!("{kind}.crt.pem"));
    let key_path = out_dir.join(format!("{kind}.key.pem"));
    if key_path.exists() {
        return Err(PkiError::Exists(key_path));
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
    let serial = random_serial()?;
    let serial_hex = hex(serial.as_ref());
    params.serial_number = Some(serial);
    let cert = params.signed_by(&key, &issuer)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_replace(&cert_path, cert.pem().as_bytes(), 0o644)?;
    let ca_copy = out_dir.join(CA_CERT);
    write_replace(
        &ca_copy,
        read_string(&ca_dir.join(CA_CERT))?.as_bytes(),
        0o644,
    )?;
    let mut issued = read_issued(ca_dir)?;
    issued.push(IssuedCert {
        serial: serial_hex.clone(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        not_after_s: params.not_after.unix_timestamp(),
        revoked: false,
    });
    write_issued(ca_dir, &issued)?;
    Ok(IssuedFiles {
        cert: cert_path,
        key: key_path,
        ca: ca_copy,
        serial: serial_hex,
    })
}

/// The SAN URI prefix that carries a device id.
pub const DEVICE_URI_PREFIX: &str = "urn:sextant:device:";

/// Issues a client certificate for `device_id` into `out_dir` (`device.crt.pem`,
/// `device.key.pem`, and a copy of `ca.crt.pem`).
pub fn issue_device(ca_dir: &Path, device_id: &str, out_dir: &Path) -> Result<IssuedFiles> {
    validate_device_id(device_id)?;
    let uri = format!("{DEVICE_URI_PREFIX}{device_id}");
    let san = SanType::URI(
        uri.try_into()
            .map_err(|e: rcgen::Error| parse_err("device id")(e.to_string()))?,
    );
    issue_leaf(
        ca_dir,
        out_dir,
        "device",
        device_id,
        vec![san],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
}

/// Issues the server certificate for `names` (DNS names or IP addresses) into `out_dir`
/// (`server.crt.pem`, `server.key.pem`, and a copy of `ca.crt.pem`).
pub fn issue_server(ca_dir: &Path, names: &[String], out_dir: &Path) -> Result<IssuedFiles> {
    let first = names
        .first()
        .ok_or_else(|| parse_err("server names")("at least one name is needed".into()))?;
    let mut sans = Vec::new();
    for n in names {
        sans.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| parse_err("server name")(e.to_string()))?,
            ),
        });
    }
    issue_leaf(
        ca_dir,
        out_dir,
        "server",
        first,
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// Revokes every certificate issued to `device_id` and re-signs the CRL; returns the serials
/// revoked now.
pub fn revoke_device(ca_dir: &Path, device_id: &str) -> Result<Vec<String>> {
    let mut issued = read_issued(ca_dir)?;
    let mut now_revoked = Vec::new();
    let mut known = false;
    for c in issued
        .iter_mut()
        .filter(|c| c.kind == "device" && c.name == device_id)
    {
        known = true;
        if !c.revoked {
            c.revoked = true;
            now_revoked.push(c.serial.clone());
        }
    }
    if !known {
        return Err(PkiError::UnknownDevice(device_id.to_owned()));
    }
    write_issued(ca_dir, &issued)?;
    write_crl(ca_dir)?;
    Ok(now_revoked)
}

/// Re-signs `crl.pem` from the index (also to renew it before it expires).
pub fn write_crl(ca_dir: &Path) -> Result<()> {
    let issuer = load_issuer(ca_dir)?;
    let now = OffsetDateTime::now_utc();
    let revoked = read_issued(ca_dir)?
        .into_iter()
        .filter(|c| c.revoked)
        .map(|c| {
            let bytes = unhex(&c.serial)
                .ok_or_else(|| parse_err("issued.tsv")(format!("bad serial {}", c.serial)))?;
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: now,
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(CRL_VALIDITY_DAYS),
        crl_number: SerialNumber::from_slice(&now.unix_timestamp().max(1).to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    write_replace(&ca_dir.join(CRL), crl.pem()?.as_bytes(), 0o644)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| parse_err("certificate PEM")(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| parse_err("certificate PEM")(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(parse_err("certificate PEM")(format!(
            "{}: no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| parse_err("private key PEM")(format!("{}: {e}", path.display())))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_cert: &Path) -> Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(ca_cert)? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

/// The server's TLS configuration: TLS 1.3 only, ALPN `sextant/1`, client certificates
/// required, chained to the fleet CA and checked against the CRL at `crl` (revoked devices fail
/// the handshake).
pub fn server_tls_config(
    ca_cert: &Path,
    crl: &Path,
    server_cert: &Path,
    server_key: &Path,
) -> Result<rustls::ServerConfig> {
    server_tls_config_with(client_verifier(ca_cert, crl)?, server_cert, server_key)
}

/// The verifier of device certificates that [`server_tls_config`] installs: chained to the
/// fleet CA at `ca_cert`, not revoked by the CRL at `crl`. The server keeps it to re-check the
/// certificates of connections already open when the CRL changes.
pub fn client_verifier(
    ca_cert: &Path,
    crl: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let crls = CertificateRevocationListDer::pem_file_iter(crl)
        .map_err(|e| parse_err("CRL PEM")(format!("{}: {e}", crl.display())))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| parse_err("CRL PEM")(format!("{}: {e}", crl.display())))?;
    rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_cert)?, provider())
        .with_crls(crls)
        .build()
        .map_err(|e| PkiError::Verifier(e.to_string()))
}

/// [`server_tls_config`] with a verifier built by [`client_verifier`].
pub fn server_tls_config_with(
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    server_cert: &Path,
    server_key: &Path,
) -> Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(server_cert)?, load_key(server_key)?)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// A device's TLS configuration: TLS 1.3 only, ALPN `sextant/1`, the fleet CA as the only trust
/// root, and the device's client certificate.
pub fn device_tls_config(
    ca_cert: &Path,
    device_cert: &Path,
    device_key: &Path,
) -> Result<rustls::ClientConfig> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_cert)?)
        .with_client_auth_cert(load_certs(device_cert)?, load_key(device_key)?)?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// The device id in a (verified) client certificate: the `urn:sextant:device:` SAN URI if
/// present, else the subject common name.
pub fn device_id_from_cert(der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| parse_err("client certificate")(e.to_string()))?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = n
                && let Some(id) = u.strip_prefix(DEVICE_URI_PREFIX)
            {
                validate_device_id(id)?;
                return Ok(id.to_owned());
            }
        }
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| parse_err("client certificate")("no device id".into()))?;
    validate_device_id(cn)?;
    Ok(cn.to_owned())
}

/// The Ed25519 release key that signs model metadata.
#[derive(Debug)]
pub struct ReleaseKey {
    pair: Ed25519KeyPair,
}

impl ReleaseKey {
    /// Generates a release key into `dir`: `release.key.pk8` (PKCS#8, mode 0600) and
    /// `release.pub` (the 32-byte public key in hex, to pin on devices). Refuses to overwrite.
    pub fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io("create key directory", dir))?;
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| PkiError::Random)?;
        let key_path = dir.join(RELEASE_KEY);
        let pub_path = dir.join(RELEASE_PUB);
        if pub_path.exists() {
            return Err(PkiError::Exists(pub_path));
        }
        write_new(&key_path, pkcs8.as_ref(), 0o600)?;
        let key = Self::load(&key_path)?;
        write_new(
            &pub_path,
            format!("{}\n", hex(&key.public_key())).as_bytes(),
            0o644,
        )?;
        Ok(key)
    }

    /// Loads a release key written by [`ReleaseKey::generate`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io("read", path))?;
        let pair = Ed25519KeyPair::from_pkcs8(&bytes)
            .map_err(|e| parse_err("release key")(e.to_string()))?;
        Ok(ReleaseKey { pair })
    }

    /// The public key to pin.
    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }

    /// Signs `message` (the metadata's canonical bytes).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut s = [0u8; 64];
        s.copy_from_slice(self.pair.sign(message).as_ref());
        s
    }
}

/// Reads a pinned public key file (`release.pub`).
pub fn load_public_key(path: &Path) -> Result<[u8; 32]> {
    let text = read_string(path)?;
    unhex(text.trim())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| parse_err("release public key")("expected 64 hex characters".into()))
}

/// Verifies an Ed25519 `signature` over `message` against the pinned release key.
pub fn verify(message: &[u8], signature: &[u8], pinned: &[u8; 32]) -> Result<()> {
    UnparsedPublicKey::new(&ED25519, pinned)
        .verify(message, signature)
        .map_err(|_| PkiError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_validated() {
        for ok in ["a", "dev-1", "pixel8.A_b:c", &"x".repeat(128)] {
            validate_device_id(ok).unwrap();
        }
        for bad in ["", "has space", "slash/", "é", &"x".repeat(129)] {
            assert!(validate_device_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 0xfe, 0xff])).unwrap(),
            vec![0, 1, 0xfe, 0xff]
        );
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }
}

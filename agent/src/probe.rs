//! A deliberately broken client, for testing that the backend survives hostile peers
//! (`sextant agent probe`). It connects with a valid device certificate, sends one kind of bad
//! input, and reports how the server answered: the `Error` frame it wrote (if any) and the QUIC
//! close code.

use std::net::SocketAddr;
use std::time::Duration;

use sextant_proto::{
    Client, ClientConfig, DeviceId, Envelope, FrameDecoder, Label, Message, PROTOCOL_VERSION,
    SyncRequest, Time, Welcome, encode_body,
};

use crate::error::{AgentError, Result};

/// The bad input to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// 256 seeded random bytes as the first stream's content.
    Random,
    /// A length prefix of 2^32 - 1.
    Oversized,
    /// A `Hello` whose length prefix is right but whose CBOR body is cut short.
    TruncatedCbor,
    /// A `Hello` frame cut in the middle, then end of stream.
    TruncatedFrame,
    /// A correct handshake, then a `Welcome` (a server's message) as a request.
    WrongMessage,
    /// A correct handshake and one sync (the control: nothing is wrong).
    Valid,
}

impl std::str::FromStr for Probe {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "random" => Probe::Random,
            "oversized" => Probe::Oversized,
            "truncated-cbor" => Probe::TruncatedCbor,
            "truncated-frame" => Probe::TruncatedFrame,
            "wrong-message" => Probe::WrongMessage,
            "valid" => Probe::Valid,
            other => return Err(format!("unknown probe {other:?}")),
        })
    }
}

/// What the server did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The TLS handshake completed.
    pub connected: bool,
    /// Code of the `Error` frame the server answered with, if any.
    pub error_frame: Option<u16>,
    /// QUIC application close code, if the server closed the connection.
    pub close_code: Option<u64>,
    /// Close reason or connection error, as text.
    pub detail: String,
}

fn net(e: impl std::fmt::Display) -> AgentError {
    AgentError::Network(e.to_string())
}

/// Connects as `device` and sends `probe`.
pub async fn run_probe(
    server: SocketAddr,
    server_name: &str,
    quic: quinn::ClientConfig,
    device: &str,
    probe: Probe,
) -> Result<ProbeReport> {
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().map_err(net)?).map_err(net)?;
    endpoint.set_default_client_config(quic);
    let conn = match endpoint.connect(server, server_name).map_err(net)?.await {
        Ok(c) => c,
        Err(e) => {
            return Ok(ProbeReport {
                connected: false,
                error_frame: None,
                close_code: None,
                detail: e.to_string(),
            });
        }
    };
    let cfg = ClientConfig::new(
        DeviceId::new(device)?,
        Label::new("probe")?,
        Label::new("probe")?,
        Label::new("probe")?,
    );
    let mut client = Client::new(cfg, Time(0))?;
    let hello = client
        .poll_transmit()
        .ok_or_else(|| net("no hello queued"))?;
    let mut handshake_first = false;
    let payload: Vec<u8> = match probe {
        Probe::Random => {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            (0..256)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        }
        Probe::Oversized => {
            let mut v = vec![0xff, 0xff, 0xff, 0xff];
            v.extend_from_slice(&[0xa2; 32]);
            v
        }
        Probe::TruncatedCbor => {
            let body = &hello.data[4..];
            let cut = &body[..body.len() - 5];
            let mut v = (cut.len() as u32).to_be_bytes().to_vec();
            v.extend_from_slice(cut);
            v
        }
        Probe::TruncatedFrame => hello.data[..hello.data.len() / 2].to_vec(),
        Probe::WrongMessage | Probe::Valid => {
            handshake_first = true;
            Vec::new()
        }
    };
    let stream_bytes = if handshake_first {
        let (mut send, mut recv) = conn.open_bi().await.map_err(net)?;
        send.write_all(&hello.data).await.map_err(net)?;
        let _ = send.finish();
        let reply = recv.read_to_end(1 << 20).await.map_err(net)?;
        client.handle_data(Time(1), hello.exchange, &reply)?;
        let welcome = Envelope {
            v: PROTOCOL_VERSION,
            msg: if probe == Probe::Valid {
                Message::SyncRequest(SyncRequest {
                    active: None,
                    shadowing: None,
                    floor: sextant_proto::ModelVersion(0),
                    rolled_back_from: None,
                })
            } else {
                Message::Welcome(Welcome {
                    version: PROTOCOL_VERSION,
                    max_frame_len: 1 << 20,
                    chunk_len: 1024,
                    max_batch_records: 10,
                })
            },
        };
        let body = encode_body(&welcome)?;
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&body);
        v
    } else {
        payload
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(net)?;
    let _ = send.write_all(&stream_bytes).await;
    let _ = send.finish();
    let reply = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20)).await;
    let mut error_frame = None;
    if let Ok(Ok(bytes)) = &reply {
        let mut d = FrameDecoder::new(1 << 20);
        if d.push(bytes).is_ok() {
            while let Ok(Some(env)) = d.next_envelope() {
                if let Message::Error(e) = env.msg {
                    error_frame = Some(e.code.0);
                }
            }
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    let (close_code, detail) = match closed {
        Ok(quinn::ConnectionError::ApplicationClosed(c)) => (
            Some(c.error_code.into_inner()),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        Ok(other) => (None, other.to_string()),
        Err(_) => {
            conn.close(0u32.into(), b"probe done");
            (None, "connection still open".to_owned())
        }
    };
    endpoint.wait_idle().await;
    Ok(ProbeReport {
        connected: true,
        error_frame,
        close_code,
        detail,
    })
}

/// [`run_probe`] on its own single-threaded runtime, with the device's TLS files.
pub fn probe_blocking(
    server: SocketAddr,
    server_name: &str,
    ca_cert: &std::path::Path,
    device_cert: &std::path::Path,
    device_key: &std::path::Path,
    device: &str,
    probe: Probe,
) -> Result<ProbeReport> {
    let tls = crate::tls::client_tls_config(ca_cert, device_cert, device_key)?;
    let quic = crate::tls::quic_client_config(tls)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Network(format!("runtime: {e}")))?;
    rt.block_on(run_probe(server, server_name, quic, device, probe))
}

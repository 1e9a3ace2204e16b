//! Load generators for `sextant agent bench`: many devices uploading telemetry at once (ingest
//! rate and acknowledgement latency), and a model download compared with a bare quinn stream of
//! the same size on the same machine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sextant_proto::{
    Client, ClientConfig, ClientEvent, ComputeBackend, DeviceId, DropCounters, EncodedRecord,
    ExchangeId, FailureReason, Label, LocalizationEvent, ModelVersion, Outcome, RecordBody,
    SliceKeys, StageTimings, SyncRequest, Time, Transmit,
};
use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result};

fn net(e: impl std::fmt::Display) -> AgentError {
    AgentError::Network(e.to_string())
}

/// One simulated device's credentials.
#[derive(Debug, Clone)]
pub struct BenchDevice {
    /// Device id.
    pub id: String,
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Key (PEM).
    pub key: PathBuf,
}

/// Result of [`ingest`].
#[derive(Debug, Clone)]
pub struct IngestReport {
    /// Events acknowledged.
    pub events: u64,
    /// Wall time of the measured window.
    pub seconds: f64,
    /// Batch acknowledgement latencies, ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// CPU time of the server process during the measured window (ms), if it could be read.
    pub server_cpu_ms: Option<u64>,
    /// CPU time of this (client) process during the measured window (ms).
    pub client_cpu_ms: u64,
}

impl IngestReport {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
    /// A latency percentile (0–100), ms.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (self.latencies_ms.len() - 1) as f64).round() as usize;
        self.latencies_ms[i.min(self.latencies_ms.len() - 1)]
    }
}

async fn exchange(conn: &quinn::Connection, client: &mut Client, t: Transmit) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(net)?;
    send.write_all(&t.data).await.map_err(net)?;
    let _ = send.finish();
    let reply = recv.read_to_end(64 << 20).await.map_err(net)?;
    client.handle_data(Time(0), t.exchange, &reply)?;
    client.handle_stream_end(t.exchange)?;
    Ok(())
}

async fn connect(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    name: &str,
    device: &str,
) -> Result<(quinn::Connection, Client)> {
    let conn = endpoint
        .connect(server, name)
        .map_err(net)?
        .await
        .map_err(net)?;
    let mut client = Client::new(
        ClientConfig::new(
            DeviceId::new(device)?,
            Label::new("bench")?,
            Label::new("bench")?,
            Label::new("bench")?,
        ),
        Time(0),
    )?;
    let hello = client.poll_transmit().ok_or_else(|| net("no hello"))?;
    exchange(&conn, &mut client, hello).await?;
    match client.poll_event() {
        Some(ClientEvent::Connected(_)) => Ok((conn, client)),
        other => Err(net(format!("handshake: {other:?}"))),
    }
}

fn sample_body(i: u64, slice: &SliceKeys) -> RecordBody {
    RecordBody::Localization(LocalizationEvent {
        model: ModelVersion(1),
        slice: slice.clone(),
        outcome: if i.is_multiple_of(7) {
            Outcome::Failed {
                reason: FailureReason::TooDark,
            }
        } else {
            Outcome::Localized {
                source: sextant_proto::PoseSource::Visual,
            }
        },
        confidence: 0.7,
        inliers: 50,
        timings: StageTimings {
            preprocess_us: 700,
            detect_us: 2000,
            describe_us: 3000,
            match_us: 1000,
            solve_us: 300,
            total_us: 7000,
        },
    })
}

/// `devices.len()` devices upload batches of `batch` events, one batch in flight each, for
/// `duration`; returns the events acknowledged, each batch's acknowledgement latency (from
/// just before the batch is encoded to its acknowledgement), and the CPU time the server
/// (`server_cpu_ms()`, read at the start and end of the window) and this process used.
///
/// Each device uploads the way the agent does: record bodies are CBOR already (as in the
/// agent's disk queue) and are spliced into the frame ([`Client::upload_telemetry_encoded`]).
pub async fn ingest(
    server: SocketAddr,
    server_name: &str,
    ca_cert: &std::path::Path,
    devices: &[BenchDevice],
    batch: usize,
    duration: Duration,
    server_cpu_ms: &(dyn Fn() -> Option<u64> + Send + Sync),
) -> Result<IngestReport> {
    let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().map_err(net)?).map_err(net)?;
    let slice = SliceKeys {
        device_class: Label::new("bench")?,
        app_version: Label::new("bench")?,
        backend: ComputeBackend::Cpu,
        region: None,
    };
    let mut conns = Vec::new();
    for d in devices {
        // Each device has its own certificate: own client config per connection.
        let tls = crate::tls::client_tls_config(ca_cert, &d.cert, &d.key)?;
        let cfg = crate::tls::quic_client_config(tls)?;
        let conn = endpoint
            .connect_with(cfg, server, server_name)
            .map_err(net)?
            .await
            .map_err(net)?;
        let mut client = Client::new(
            ClientConfig::new(
                DeviceId::new(d.id.clone())?,
                Label::new("bench")?,
                Label::new("bench")?,
                Label::new("bench")?,
            ),
            Time(0),
        )?;
        let hello = client.poll_transmit().ok_or_else(|| net("no hello"))?;
        exchange(&conn, &mut client, hello).await?;
        match client.poll_event() {
            Some(ClientEvent::Connected(_)) => {}
            other => return Err(net(format!("handshake of {}: {other:?}", d.id))),
        }
        conns.push((d.id.clone(), conn, client));
    }
    // The bodies as the agent's queue holds them: CBOR, encoded once when the event was made.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..7u64)
            .map(|i| {
                let mut v = Vec::with_capacity(160);
                sample_body(i, &slice).encode_cbor(&mut v);
                v
            })
            .collect(),
    );
    let server_cpu_start = server_cpu_ms();
    let client_cpu_start = crate::sim::process_cpu_ms();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (_id, conn, mut client) in conns {
        let bodies = Arc::clone(&bodies);
        tasks.push(tokio::spawn(async move {
            let mut seq = 1u64;
            let mut lat = Vec::new();
            let mut events = 0u64;
            let mut records = Vec::with_capacity(batch);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                records.clear();
                records.extend((0..batch as u64).map(|i| EncodedRecord {
                    sequence: seq + i,
                    recorded_at_ms: 1_700_000_000_000 + seq + i,
                    body: &bodies[((seq + i) % 7) as usize],
                }));
                let id = client.upload_telemetry_encoded(
                    Time(0),
                    seq,
                    &records,
                    &DropCounters::default(),
                )?;
                seq += batch as u64;
                let t = client.poll_transmit().ok_or_else(|| net("no transmit"))?;
                debug_assert_eq!(t.exchange, id);
                exchange(&conn, &mut client, t).await?;
                match client.poll_event() {
                    Some(ClientEvent::TelemetryAcked { ack, .. }) => {
                        lat.push(t0.elapsed().as_secs_f64() * 1e3);
                        events += u64::from(ack.stored) + u64::from(ack.duplicates);
                    }
                    other => return Err(net(format!("upload: {other:?}"))),
                }
            }
            conn.close(0u32.into(), b"done");
            Ok::<_, AgentError>((events, lat))
        }));
    }
    let mut events = 0;
    let mut lat = Vec::new();
    for t in tasks {
        let (e, l) = t.await.map_err(net)??;
        events += e;
        lat.extend(l);
    }
    let seconds = start.elapsed().as_secs_f64();
    let server_cpu_ms = server_cpu_ms()
        .zip(server_cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    let client_cpu_ms = crate::sim::process_cpu_ms().saturating_sub(client_cpu_start);
    lat.sort_by(f64::total_cmp);
    Ok(IngestReport {
        events,
        seconds,
        latencies_ms: lat,
        server_cpu_ms,
        client_cpu_ms,
    })
}

/// Result of a download measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Bytes received.
    pub bytes: u64,
    /// Seconds.
    pub seconds: f64,
}

impl Throughput {
    /// MiB/s.
    pub fn mib_s(&self) -> f64 {
        self.bytes as f64 / (1 << 20) as f64 / self.seconds.max(1e-9)
    }
}

/// Downloads the device's assigned model through the protocol (sync, then one `ChunkRequest`
/// for the whole file), hashing as chunks arrive, and checks the SHA-256. No disk.
pub async fn download_model(
    server: SocketAddr,
    server_name: &str,
    quic: quinn::ClientConfig,
    device: &str,
) -> Result<Throughput> {
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().map_err(net)?).map_err(net)?;
    endpoint.set_default_client_config(quic);
    let (conn, mut client) = connect(&endpoint, server, server_name, device).await?;
    client.start_sync(
        Time(0),
        SyncRequest {
            active: None,
            shadowing: None,
            floor: ModelVersion(0),
            rolled_back_from: None,
        },
    )?;
    let t = client.poll_transmit().ok_or_else(|| net("no transmit"))?;
    exchange(&conn, &mut client, t).await?;
    let meta = match client.poll_event() {
        Some(ClientEvent::Synced { metadata, .. }) => metadata
            .into_iter()
            .next()
            .ok_or_else(|| net("no metadata"))?,
        other => return Err(net(format!("sync: {other:?}"))),
    };
    let start = Instant::now();
    let id: ExchangeId = client.start_download(Time(0), &meta.metadata, 0)?;
    let t = client.poll_transmit().ok_or_else(|| net("no transmit"))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(net)?;
    send.write_all(&t.data).await.map_err(net)?;
    let _ = send.finish();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut done = false;
    while let Some(chunk) = recv.read_chunk(1 << 20, true).await.map_err(net)? {
        client.handle_data(Time(0), id, &chunk.bytes)?;
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::Chunk { chunk, .. } => {
                    hasher.update(&chunk.data.0);
                    bytes += chunk.data.0.len() as u64;
                }
                ClientEvent::DownloadComplete { .. } => done = true,
                other => return Err(net(format!("download: {other:?}"))),
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let digest: [u8; 32] = hasher.finalize().into();
    if !done || digest != meta.metadata.sha256.0 {
        return Err(net("download incomplete or hash mismatch"));
    }
    conn.close(0u32.into(), b"done");
    Ok(Throughput { bytes, seconds })
}

/// A bare quinn server on `listen` (TLS 1.3, same ALPN, no client authentication) that answers
/// every stream with `len` bytes. Returns its address; serves until the runtime stops.
pub fn bare_server(
    listen: SocketAddr,
    tls: rustls::ServerConfig,
    len: u64,
) -> Result<(quinn::Endpoint, SocketAddr)> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(net)?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window((4u32 << 20).into())
        .receive_window((16u32 << 20).into())
        .send_window(16 << 20);
    sc.transport_config(Arc::new(transport));
    let endpoint = quinn::Endpoint::server(sc, listen).map_err(net)?;
    let addr = endpoint.local_addr().map_err(net)?;
    let ep = endpoint.clone();
    tokio::spawn(async move {
        let block = Arc::new(vec![0xa5u8; 256 << 10]);
        while let Some(inc) = ep.accept().await {
            let block = Arc::clone(&block);
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let _ = recv.read_to_end(1024).await;
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(block.len() as u64) as usize;
                        if send.write_all(&block[..n]).await.is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                    let _ = send.finish();
                    let _ = send.stopped().await;
                }
            });
        }
    });
    Ok((endpoint, addr))
}

/// Reads one whole stream from a [`bare_server`].
pub async fn download_bare(
    server: SocketAddr,
    server_name: &str,
    quic: quinn::ClientConfig,
) -> Result<Throughput> {
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().map_err(net)?).map_err(net)?;
    endpoint.set_default_client_config(quic);
    let conn = endpoint
        .connect(server, server_name)
        .map_err(net)?
        .await
        .map_err(net)?;
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.map_err(net)?;
    send.write_all(b"go").await.map_err(net)?;
    let _ = send.finish();
    let mut bytes = 0u64;
    while let Some(chunk) = recv.read_chunk(1 << 20, true).await.map_err(net)? {
        bytes += chunk.bytes.len() as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"done");
    Ok(Throughput { bytes, seconds })
}

fn runtime(multi: bool) -> Result<tokio::runtime::Runtime> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(net)
}

/// [`ingest`] on a multi-threaded runtime of its own.
pub fn ingest_blocking(
    server: SocketAddr,
    ca_cert: &std::path::Path,
    devices: &[BenchDevice],
    batch: usize,
    duration: Duration,
    server_cpu_ms: &(dyn Fn() -> Option<u64> + Send + Sync),
) -> Result<IngestReport> {
    runtime(true)?.block_on(ingest(
        server,
        &server.ip().to_string(),
        ca_cert,
        devices,
        batch,
        duration,
        server_cpu_ms,
    ))
}

/// Runs a [`bare_server`] (with the given server certificate) and downloads `len` bytes from
/// it, then downloads the assigned model from the backend at `backend`, `rounds` times each,
/// alternating; returns (bare, model) throughputs.
pub fn download_blocking(
    backend: SocketAddr,
    ca_cert: &std::path::Path,
    device: &BenchDevice,
    server_cert: &std::path::Path,
    server_key: &std::path::Path,
    len: u64,
    rounds: usize,
) -> Result<(Vec<Throughput>, Vec<Throughput>)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(server_cert)
        .map_err(net)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(net)?;
    let key = PrivateKeyDer::from_pem_file(server_key).map_err(net)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(net)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(net)?;
    tls.alpn_protocols = vec![crate::tls::ALPN.to_vec()];
    let quic = || -> Result<quinn::ClientConfig> {
        crate::tls::quic_client_config(crate::tls::client_tls_config(
            ca_cert,
            &device.cert,
            &device.key,
        )?)
    };
    let rt = runtime(true)?;
    rt.block_on(async {
        let (ep, bare) = bare_server("127.0.0.1:0".parse().map_err(net)?, tls, len)?;
        let name = backend.ip().to_string();
        let mut b = Vec::new();
        let mut m = Vec::new();
        for _ in 0..rounds {
            b.push(download_bare(bare, &name, quic()?).await?);
            m.push(download_model(backend, &name, quic()?, &device.id).await?);
        }
        ep.close(0u32.into(), b"done");
        Ok((b, m))
    })
}

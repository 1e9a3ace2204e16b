//! `sextant backend serve`: the QUIC server that drives [`sextant_proto::Server`] per connection.
//!
//! # Shape
//!
//! - One quinn endpoint (TLS 1.3, rustls with the ring provider, ALPN `sextant/1`). Devices
//!   authenticate with client certificates chained to the fleet CA; the CRL is consulted during
//!   the TLS handshake. The server watches `crl.pem` (inode, size, mtime; every 250 ms and
//!   before each accept) and, when it changed, rebuilds its TLS configuration and re-verifies
//!   the certificate of every open connection with the new verifier: a device revoked with
//!   `sextant backend revoke` loses its open connection (closed with `UNAUTHENTICATED`) and is
//!   refused from then on, without a restart.
//! - One [`sextant_proto::Server`] per connection behind a mutex; one task per
//!   client-opened bidirectional stream (one exchange). A task feeds the bytes it reads into the
//!   state machine, answers the events of its own exchange (sync, download, telemetry) and writes
//!   the frames the state machine produces on its stream.
//! - `Hello.device` must equal the device id in the client certificate (else `UNAUTHENTICATED`).
//! - A protocol violation (random bytes, an oversized length prefix, truncated CBOR, a message
//!   wrong for the exchange's state) is answered with an `Error` frame carrying the code, and
//!   then **the connection is closed** with that code as the QUIC application error: a hostile
//!   or broken peer loses only its own connection; nothing it sends can panic the server.
//! - Model bytes are read from the content-addressed blob store once (verified against their
//!   SHA-256) and kept in memory; a download streams `send_range_data` one chunk at a time as the
//!   QUIC stream drains, so the server holds no per-device download state.
//! - Telemetry goes to one ingest writer thread that **group-commits**: it takes every batch
//!   waiting (up to a cap of events) and stores them in one SQLite transaction
//!   ([`SqliteStore::ingest_many`]), then acknowledges each batch. With `synchronous=FULL` that
//!   is one WAL fsync for many devices' batches. Each `(device, sequence)` is stored once; the
//!   acknowledgement names every sequence number of the batch (new and duplicate alike).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::CertificateDer;
use sextant_proto::{
    Assignment, ErrorCode, ErrorMsg, ExchangeId, SeqRange, ServerEvent, TelemetryAck, Transmit,
};

use crate::error::{BackendError, Result};
use crate::pki;
use crate::registry;
use crate::store::{
    BlobStore, Durability, IngestOutcome, ShadowFigures, SqliteStore, StoreError, TelemetryRow,
};

/// QUIC application error code used when closing a connection without a protocol error code
/// (e.g. the server shutting down).
pub const CLOSE_NORMAL: u32 = 0;

/// Settings of [`Server`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (port 0 picks one; see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Data directory: `sextant.db` and `blobs/`.
    pub data_dir: PathBuf,
    /// CA directory: `ca.crt.pem` (trust root for client certificates) and `crl.pem`.
    pub ca_dir: PathBuf,
    /// The server's certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's private key (PEM).
    pub server_key: PathBuf,
    /// Protocol limits (frame cap, chunk size, batch cap).
    pub protocol: sextant_proto::ServerConfig,
    /// What devices are told about when to sync again, in seconds.
    pub resync_after_s: u32,
    /// SQLite `synchronous` level.
    pub durability: Durability,
    /// Most events stored in one ingest transaction (group commit).
    pub max_events_per_commit: usize,
}

impl ServeConfig {
    /// Defaults for everything but the paths and address.
    pub fn new(
        listen: SocketAddr,
        data_dir: PathBuf,
        ca_dir: PathBuf,
        server_cert: PathBuf,
        server_key: PathBuf,
    ) -> Self {
        ServeConfig {
            listen,
            data_dir,
            ca_dir,
            server_cert,
            server_key,
            protocol: sextant_proto::ServerConfig::default(),
            resync_after_s: 300,
            durability: Durability::Full,
            max_events_per_commit: 20_000,
        }
    }
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections whose TLS handshake succeeded.
    pub connections: AtomicU64,
    /// Connections refused (TLS failure, identity mismatch, protocol violation).
    pub refused: AtomicU64,
    /// Telemetry events stored.
    pub stored: AtomicU64,
    /// Telemetry events received again and acknowledged without storing.
    pub duplicates: AtomicU64,
    /// Ingest transactions committed.
    pub commits: AtomicU64,
    /// Model bytes sent.
    pub model_bytes_sent: AtomicU64,
    /// Open connections closed because their certificate was revoked.
    pub revoked_closed: AtomicU64,
}

struct IngestJob {
    rows: Vec<TelemetryRow>,
    reply: tokio::sync::oneshot::Sender<std::result::Result<IngestOutcome, String>>,
}

/// A registered model's signed metadata and the name of its blob.
struct CachedMeta {
    signed: sextant_proto::SignedModelMetadata,
    sha256: [u8; 32],
}

type Stamp = Option<(u64, u64, i64, i64)>;

type Verifier = Arc<dyn rustls::server::danger::ClientCertVerifier>;

/// The TLS state: the configuration handed to new connections and the device-certificate
/// verifier it was built with, both rebuilt when `crl.pem` changes.
struct Tls {
    config: ServeConfig,
    current: Mutex<(Stamp, quinn::ServerConfig, Verifier)>,
}

fn file_stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

fn build_server_config(c: &ServeConfig) -> Result<(quinn::ServerConfig, Verifier)> {
    let verifier = pki::client_verifier(&c.ca_dir.join(pki::CA_CERT), &c.ca_dir.join(pki::CRL))?;
    let tls = pki::server_tls_config_with(Arc::clone(&verifier), &c.server_cert, &c.server_key)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| BackendError::Tls(e.to_string()))?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(32u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(30))
                .map_err(|e| BackendError::Tls(e.to_string()))?,
        ))
        .stream_receive_window((4u32 << 20).into())
        .receive_window((16u32 << 20).into())
        .send_window(16 << 20);
    sc.transport_config(Arc::new(transport));
    Ok((sc, verifier))
}

impl Tls {
    /// Rebuilds the configuration if `crl.pem` changed on disk; returns the new verifier when it
    /// did (the caller then re-checks the connections already open).
    fn reload_if_changed(&self) -> Option<Verifier> {
        let stamp = file_stamp(&self.config.ca_dir.join(pki::CRL));
        let mut cur = lock(&self.current);
        if cur.0 == stamp {
            return None;
        }
        match build_server_config(&self.config) {
            Ok((sc, verifier)) => {
                tracing::info!("revocation list changed; TLS configuration reloaded");
                *cur = (stamp, sc, Arc::clone(&verifier));
                Some(verifier)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not reload the TLS configuration; keeping the old one");
                None
            }
        }
    }

    /// The configuration for the next connection.
    fn current(&self) -> quinn::ServerConfig {
        lock(&self.current).1.clone()
    }
}

/// An open, authenticated connection, kept so that a revocation can cut it.
struct LiveConn {
    device: String,
    certs: Vec<CertificateDer<'static>>,
    conn: quinn::Connection,
}

/// How often the server looks at `crl.pem` between connections.
const CRL_POLL: Duration = Duration::from_millis(250);

struct Shared {
    config: ServeConfig,
    tls: Tls,
    db: Mutex<SqliteStore>,
    blobs: BlobStore,
    /// Signed metadata by model version.
    models: Mutex<HashMap<u64, Arc<CachedMeta>>>,
    /// Model bytes by SHA-256, read (and verified against the name) once.
    model_bytes: Mutex<HashMap<[u8; 32], Arc<Vec<u8>>>>,
    ingest: std::sync::mpsc::Sender<IngestJob>,
    stats: Arc<ServerStats>,
    /// Open connections by `quinn::Connection::stable_id`.
    live: Mutex<HashMap<usize, LiveConn>>,
    /// Dropped with the server: ends the checkpointer thread.
    _checkpoint_stop: std::sync::mpsc::Sender<()>,
}

impl Shared {
    /// Reloads the TLS configuration if the CRL changed and closes every open connection whose
    /// certificate no longer verifies (revoked) with `UNAUTHENTICATED`.
    fn check_revocations(&self) {
        let Some(verifier) = self.tls.reload_if_changed() else {
            return;
        };
        let live = lock(&self.live);
        for c in live.values() {
            self.cut_if_revoked(c, verifier.as_ref());
        }
    }

    /// Closes `c` with `UNAUTHENTICATED` if its certificate chain fails `verifier`; returns
    /// whether it did.
    fn cut_if_revoked(
        &self,
        c: &LiveConn,
        verifier: &dyn rustls::server::danger::ClientCertVerifier,
    ) -> bool {
        let Some((leaf, rest)) = c.certs.split_first() else {
            return false;
        };
        match verifier.verify_client_cert(leaf, rest, rustls::pki_types::UnixTime::now()) {
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(device = %c.device, error = %e, "certificate no longer valid; closing its connection");
                self.stats.revoked_closed.fetch_add(1, Ordering::Relaxed);
                c.conn.close(
                    u32::from(ErrorCode::UNAUTHENTICATED.0).into(),
                    format!("certificate revoked: {e}").as_bytes(),
                );
                true
            }
        }
    }
}

/// A bound server; [`Server::run`] serves until the endpoint is closed.
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.endpoint.local_addr().ok())
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Server {
    /// Opens the data directory, starts the ingest writer and binds the endpoint. Must be called
    /// inside a tokio runtime.
    pub fn bind(config: ServeConfig) -> Result<Server> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| BackendError::Io {
            what: "create data directory",
            source,
        })?;
        let db_path = config.data_dir.join("sextant.db");
        let reader = SqliteStore::open(&db_path, config.durability)?;
        let mut writer = SqliteStore::open(&db_path, config.durability)?;
        writer.set_cache_kib(64 << 10)?;
        let checkpointer = SqliteStore::open(&db_path, config.durability)?;
        let (checkpoint_stop, stop_rx) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sextant-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpointer, &stop_rx))
            .map_err(|source| BackendError::Io {
                what: "spawn the checkpointer",
                source,
            })?;
        let blobs = BlobStore::open(&config.data_dir.join("blobs"))?;
        let stats = Arc::new(ServerStats::default());
        let (tx, rx) = std::sync::mpsc::channel::<IngestJob>();
        let cap = config.max_events_per_commit.max(1);
        let wstats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("sextant-ingest".into())
            .spawn(move || ingest_writer(&mut writer, &rx, cap, &wstats))
            .map_err(|source| BackendError::Io {
                what: "spawn the ingest writer",
                source,
            })?;
        let stamp = file_stamp(&config.ca_dir.join(pki::CRL));
        let (sc, verifier) = build_server_config(&config)?;
        let socket = bind_udp(config.listen).map_err(|source| BackendError::Io {
            what: "bind the QUIC endpoint",
            source,
        })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(sc.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| BackendError::Io {
            what: "bind the QUIC endpoint",
            source,
        })?;
        let shared = Arc::new(Shared {
            tls: Tls {
                config: config.clone(),
                current: Mutex::new((stamp, sc, verifier)),
            },
            config,
            db: Mutex::new(reader),
            blobs,
            models: Mutex::new(HashMap::new()),
            model_bytes: Mutex::new(HashMap::new()),
            ingest: tx,
            stats,
            live: Mutex::new(HashMap::new()),
            _checkpoint_stop: checkpoint_stop,
        });
        Ok(Server { endpoint, shared })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|source| BackendError::Io {
                what: "local address",
                source,
            })
    }

    /// The server's counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.shared.stats)
    }

    /// A handle that closes the endpoint (ends [`Server::run`]).
    pub fn endpoint(&self) -> quinn::Endpoint {
        self.endpoint.clone()
    }

    /// Accepts connections until the endpoint is closed.
    pub async fn run(self) {
        let watcher = {
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(CRL_POLL).await;
                    shared.check_revocations();
                }
            })
        };
        while let Some(incoming) = self.endpoint.accept().await {
            self.shared.check_revocations();
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                if let Err(e) = handle_connection(shared.clone(), incoming).await {
                    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(error = %e, "connection ended with an error");
                }
            });
        }
        watcher.abort();
        self.endpoint.wait_idle().await;
    }
}

/// Receive and send buffer asked for on the server's UDP socket. The kernel caps it at
/// `net.core.rmem_max` / `wmem_max` (4 MiB on the development VM; the default is ~208 KiB).
/// Every device's packets arrive on this one socket: with the default buffer, a burst of
/// uploads from many devices overflows it, the kernel drops datagrams, and QUIC's loss recovery
/// turns each drop into tens to hundreds of milliseconds of acknowledgement latency.
pub const UDP_BUFFER_BYTES: usize = 16 << 20;

/// Binds the server's UDP socket with [`UDP_BUFFER_BYTES`] buffers (as much as the kernel
/// grants; what it granted is logged).
fn bind_udp(listen: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "could not enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::warn!(error = %e, "could not enlarge the UDP send buffer");
    }
    socket.bind(&listen.into())?;
    tracing::info!(
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "UDP socket buffers"
    );
    Ok(socket.into())
}

/// Builds a multi-threaded runtime, binds, calls `ready` with the bound address, and serves until
/// SIGINT/SIGTERM (or forever).
pub fn serve_blocking(config: ServeConfig, ready: impl FnOnce(SocketAddr)) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| BackendError::Io {
            what: "start the async runtime",
            source,
        })?;
    rt.block_on(async move {
        let server = Server::bind(config)?;
        ready(server.local_addr()?);
        let endpoint = server.endpoint();
        tokio::select! {
            () = server.run() => {}
            _ = tokio::signal::ctrl_c() => {
                endpoint.close(CLOSE_NORMAL.into(), b"shutting down");
            }
        }
        Ok(())
    })
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] on its own connection until `stop`'s sender
/// is dropped. This does the bulk of the copying beside the ingest writer instead of inside
/// its commits. The writer keeps SQLite's automatic checkpoint (every 1,000 WAL pages): by then
/// little is left to copy, and because it runs between the writer's own transactions it
/// completes, so the next transaction restarts the WAL from its start and the file stays
/// bounded (a checkpoint on another connection alone never catches up with a writer that
/// commits continuously).
fn checkpoint_loop(db: &SqliteStore, stop: &std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        if let Err(e) = db.checkpoint() {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
    // A last one, so a cleanly stopped server leaves a short WAL.
    let _ = db.checkpoint();
}

fn ingest_writer(
    db: &mut SqliteStore,
    rx: &std::sync::mpsc::Receiver<IngestJob>,
    cap: usize,
    stats: &ServerStats,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut events = jobs[0].rows.len();
        while events < cap {
            match rx.try_recv() {
                Ok(j) => {
                    events += j.rows.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let batches: Vec<&[TelemetryRow]> = jobs.iter().map(|j| j.rows.as_slice()).collect();
        let result = db.ingest_many(&batches, now_ms());
        drop(batches);
        match result {
            Ok(outs) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                for (job, out) in jobs.into_iter().zip(outs) {
                    stats.stored.fetch_add(out.new, Ordering::Relaxed);
                    stats
                        .duplicates
                        .fetch_add(out.duplicates, Ordering::Relaxed);
                    let _ = job.reply.send(Ok(out));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest transaction failed");
                for job in jobs {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// One connection's state machine plus frames and events drained from it but owed to another
/// exchange's task.
struct Session {
    proto: sextant_proto::Server,
    transmits: HashMap<ExchangeId, Vec<Transmit>>,
    events: HashMap<ExchangeId, Vec<ServerEvent>>,
}

fn event_exchange(ev: &ServerEvent) -> ExchangeId {
    match ev {
        ServerEvent::Hello { exchange, .. }
        | ServerEvent::VersionRefused { exchange, .. }
        | ServerEvent::SyncRequested { exchange, .. }
        | ServerEvent::RangeRequested { exchange, .. }
        | ServerEvent::TelemetryReceived { exchange, .. }
        | ServerEvent::ExchangeFailed { exchange, .. } => *exchange,
    }
}

impl Session {
    /// Moves everything the state machine produced into the per-exchange maps and returns what
    /// belongs to `id`.
    fn take(&mut self, id: ExchangeId) -> (Vec<Transmit>, Vec<ServerEvent>) {
        while let Some(t) = self.proto.poll_transmit() {
            self.transmits.entry(t.exchange).or_default().push(t);
        }
        while let Some(e) = self.proto.poll_event() {
            self.events.entry(event_exchange(&e)).or_default().push(e);
        }
        (
            self.transmits.remove(&id).unwrap_or_default(),
            self.events.remove(&id).unwrap_or_default(),
        )
    }
}

struct Conn {
    shared: Arc<Shared>,
    conn: quinn::Connection,
    device: String,
    session: Mutex<Session>,
}

async fn handle_connection(shared: Arc<Shared>, incoming: quinn::Incoming) -> Result<()> {
    let config = shared.tls.current();
    let connecting = incoming
        .accept_with(Arc::new(config))
        .map_err(|e| BackendError::Tls(e.to_string()))?;
    let conn = connecting
        .await
        .map_err(|e| BackendError::Tls(format!("handshake failed: {e}")))?;
    let (device, certs) = match peer_device(&conn) {
        Ok(d) => d,
        Err(e) => {
            conn.close(
                u32::from(ErrorCode::UNAUTHENTICATED.0).into(),
                b"no device identity",
            );
            return Err(e);
        }
    };
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%device, remote = %conn.remote_address(), "device connected");
    // Register, then check against the newest verifier: a CRL reloaded by the watcher before
    // the registration is caught by this check, one reloaded after it by the watcher.
    let id = conn.stable_id();
    let live = LiveConn {
        device: device.clone(),
        certs,
        conn: conn.clone(),
    };
    lock(&shared.live).insert(id, live);
    shared.check_revocations();
    let verifier = Arc::clone(&lock(&shared.tls.current).2);
    let cut = lock(&shared.live)
        .get(&id)
        .is_some_and(|c| shared.cut_if_revoked(c, verifier.as_ref()));
    if cut {
        lock(&shared.live).remove(&id);
        return Err(BackendError::Tls("certificate revoked".into()));
    }
    let c = Arc::new(Conn {
        conn: conn.clone(),
        device,
        session: Mutex::new(Session {
            proto: sextant_proto::Server::new(shared.config.protocol),
            transmits: HashMap::new(),
            events: HashMap::new(),
        }),
        shared: Arc::clone(&shared),
    });
    let r = loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let c = Arc::clone(&c);
                tokio::spawn(async move { c.exchange(send, recv).await });
            }
            Err(e) => {
                tracing::debug!(device = %c.device, error = %e, "connection closed");
                break Ok(());
            }
        }
    };
    lock(&shared.live).remove(&id);
    r
}

/// The device id of the verified client certificate, and the chain (kept for re-checks).
fn peer_device(conn: &quinn::Connection) -> Result<(String, Vec<CertificateDer<'static>>)> {
    let certs = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| BackendError::Tls("no client certificate".into()))?;
    let leaf = certs
        .first()
        .ok_or_else(|| BackendError::Tls("empty client certificate chain".into()))?;
    let device = pki::device_id_from_cert(leaf.as_ref())?;
    Ok((device, *certs))
}

impl Conn {
    async fn exchange(self: Arc<Self>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let id = ExchangeId(recv.id().index());
        let max_read = self.shared.config.protocol.max_frame_len as usize + 64 * 1024;
        let mut read = 0usize;
        loop {
            let chunk = recv.read_chunk(64 * 1024, true).await;
            let r = match chunk {
                Ok(Some(chunk)) => {
                    read += chunk.bytes.len();
                    let r = lock(&self.session).proto.handle_data(id, &chunk.bytes);
                    if r.is_ok() && read > max_read {
                        // A request is one frame; the decoder refuses anything bigger, so this
                        // is only reached by a peer sending after its frame. Stop reading.
                        Err(sextant_proto::ProtoError::UnexpectedMessage {
                            state: "request",
                            message: "trailing bytes",
                        })
                    } else {
                        r
                    }
                }
                Ok(None) => {
                    let r = lock(&self.session).proto.handle_stream_end(id);
                    if let Err(e) = r {
                        self.violation(id, &mut send, e).await;
                        return;
                    }
                    break;
                }
                Err(_) => {
                    lock(&self.session).proto.handle_reset(id);
                    let _ = self.take(id);
                    return;
                }
            };
            if let Err(e) = r {
                self.violation(id, &mut send, e).await;
                return;
            }
            if !self.pump(id, &mut send).await {
                return;
            }
        }
        let _ = self.pump(id, &mut send).await;
    }

    fn take(&self, id: ExchangeId) -> (Vec<Transmit>, Vec<ServerEvent>) {
        lock(&self.session).take(id)
    }

    /// Writes what the state machine owes `id` and handles its events. Returns `false` when the
    /// exchange (or connection) is over.
    async fn pump(&self, id: ExchangeId, send: &mut quinn::SendStream) -> bool {
        loop {
            let (transmits, events) = self.take(id);
            if transmits.is_empty() && events.is_empty() {
                return true;
            }
            if !write_transmits(send, transmits).await {
                return false;
            }
            for ev in events {
                if !self.on_event(ev, send).await {
                    return false;
                }
            }
        }
    }

    async fn violation(
        &self,
        id: ExchangeId,
        send: &mut quinn::SendStream,
        e: sextant_proto::ProtoError,
    ) {
        let code = e.code();
        tracing::info!(device = %self.device, error = %e, "protocol violation; closing the connection");
        let (transmits, _) = self.take(id);
        let _ = write_transmits(send, transmits).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
        self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.conn
            .close(u32::from(code.0).into(), e.to_string().as_bytes());
    }

    async fn refuse(&self, id: ExchangeId, code: ErrorCode, message: String) {
        let r = lock(&self.session)
            .proto
            .refuse(id, ErrorMsg::new(code, message));
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not refuse");
        }
    }

    /// Handles one event of this exchange. Returns `false` to stop the exchange.
    async fn on_event(&self, ev: ServerEvent, send: &mut quinn::SendStream) -> bool {
        match ev {
            ServerEvent::Hello {
                exchange, hello, ..
            } => {
                if hello.device.as_str() != self.device {
                    let msg = format!(
                        "hello names device {} but the certificate is {}",
                        hello.device, self.device
                    );
                    self.refuse(exchange, ErrorCode::UNAUTHENTICATED, msg.clone())
                        .await;
                    let (t, _) = self.take(exchange);
                    let _ = write_transmits(send, t).await;
                    let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
                    self.conn.close(
                        u32::from(ErrorCode::UNAUTHENTICATED.0).into(),
                        msg.as_bytes(),
                    );
                    return false;
                }
                let record = crate::store::DeviceRecord {
                    device_id: self.device.clone(),
                    device_class: hello.device_class.as_str().to_owned(),
                    region: String::new(),
                    last_seen_ms: now_ms(),
                };
                let shared = Arc::clone(&self.shared);
                let _ = tokio::task::spawn_blocking(move || {
                    use crate::store::Storage as _;
                    lock(&shared.db).upsert_device(&record)
                })
                .await;
                let r = lock(&self.session).proto.accept(exchange);
                r.is_ok()
            }
            ServerEvent::VersionRefused { .. } => {
                // The refusal frame was written (with `fin`) before this event was handled.
                let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
                self.conn.close(
                    u32::from(ErrorCode::VERSION_UNSUPPORTED.0).into(),
                    b"no common protocol version",
                );
                false
            }
            ServerEvent::SyncRequested { exchange, .. } => {
                match self.assignment().await {
                    Ok(Some((assignment, metadata))) => {
                        let r = lock(&self.session)
                            .proto
                            .respond_sync(exchange, assignment, metadata);
                        if let Err(e) = r {
                            self.refuse(exchange, ErrorCode::INTERNAL, e.to_string())
                                .await;
                        }
                    }
                    Ok(None) => {
                        self.refuse(
                            exchange,
                            ErrorCode::UNKNOWN_MODEL,
                            "no model is assigned to this device".into(),
                        )
                        .await;
                    }
                    Err(e) => {
                        self.refuse(exchange, ErrorCode::INTERNAL, e.to_string())
                            .await;
                    }
                }
                true
            }
            ServerEvent::RangeRequested {
                exchange, request, ..
            } => {
                let bytes = match self.model_bytes(request.model.0).await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        self.refuse(
                            exchange,
                            ErrorCode::UNKNOWN_MODEL,
                            format!("no model version {}", request.model),
                        )
                        .await;
                        return true;
                    }
                    Err(e) => {
                        // E.g. the blob on the server's disk no longer matches its name: never
                        // serve it; the device retries later.
                        tracing::error!(error = %e, version = request.model.0, "cannot serve model");
                        let mut msg = ErrorMsg::new(ErrorCode::INTERNAL, e.to_string());
                        msg.retry_after_s = Some(30);
                        let _ = lock(&self.session).proto.refuse(exchange, msg);
                        return true;
                    }
                };
                let len = bytes.len() as u64;
                let end = request.offset.checked_add(request.len);
                if end.is_none_or(|e| e > len) {
                    self.refuse(
                        exchange,
                        ErrorCode::RANGE_INVALID,
                        format!(
                            "range {}+{} is outside the model's {len} bytes",
                            request.offset, request.len
                        ),
                    )
                    .await;
                    return true;
                }
                self.stream_range(exchange, &bytes, request.offset, end.unwrap_or(len), send)
                    .await
            }
            ServerEvent::TelemetryReceived {
                exchange,
                device,
                batch,
            } => {
                let mut rows = Vec::with_capacity(batch.records.len());
                let mut seqs = Vec::with_capacity(batch.records.len());
                for r in batch.records {
                    let mut payload = Vec::with_capacity(128);
                    if ciborium::into_writer(&r.body, &mut payload).is_err() {
                        self.refuse(exchange, ErrorCode::INTERNAL, "encode failed".into())
                            .await;
                        return true;
                    }
                    seqs.push(r.sequence);
                    let shadow = match &r.body {
                        sextant_proto::RecordBody::Shadow(s) => Some(ShadowFigures {
                            baseline: s.baseline.0,
                            candidate: s.candidate.0,
                            frames: s.frames,
                            baseline_localized: s.baseline_localized,
                            candidate_localized: s.candidate_localized,
                            both_localized: s.both_localized,
                            median_translation_diff_m: s.median_translation_diff_m,
                            median_rotation_diff_rad: s.median_rotation_diff_rad,
                            baseline_median_us: s.baseline_median_us,
                            candidate_median_us: s.candidate_median_us,
                        }),
                        sextant_proto::RecordBody::Localization(_) => None,
                    };
                    rows.push(TelemetryRow {
                        device_id: device.as_str().to_owned(),
                        sequence: r.sequence,
                        recorded_at_ms: i64::try_from(r.recorded_at_ms).unwrap_or(i64::MAX),
                        payload,
                        shadow,
                    });
                }
                if seqs.iter().any(|s| i64::try_from(*s).is_err()) {
                    self.refuse(
                        exchange,
                        ErrorCode::MALFORMED,
                        "sequence number above 2^63".into(),
                    )
                    .await;
                    return true;
                }
                let (tx, rx) = tokio::sync::oneshot::channel();
                let sent = self.shared.ingest.send(IngestJob { rows, reply: tx });
                let outcome = match sent {
                    Ok(()) => rx
                        .await
                        .unwrap_or_else(|_| Err("ingest writer gone".into())),
                    Err(_) => Err("ingest writer gone".into()),
                };
                match outcome {
                    Ok(out) => {
                        let ack = TelemetryAck {
                            batch_id: batch.batch_id,
                            acked: SeqRange::compress(seqs),
                            stored: u32::try_from(out.new).unwrap_or(u32::MAX),
                            duplicates: u32::try_from(out.duplicates).unwrap_or(u32::MAX),
                        };
                        let r = lock(&self.session).proto.ack_telemetry(exchange, ack);
                        if let Err(e) = r {
                            self.refuse(exchange, ErrorCode::INTERNAL, e.to_string())
                                .await;
                        }
                    }
                    Err(e) => {
                        let mut msg = ErrorMsg::new(ErrorCode::STORAGE_UNAVAILABLE, e);
                        msg.retry_after_s = Some(1);
                        let _ = lock(&self.session).proto.refuse(exchange, msg);
                    }
                }
                true
            }
            ServerEvent::ExchangeFailed { exchange, failure } => {
                tracing::debug!(device = %self.device, %exchange, ?failure, "exchange failed");
                true
            }
        }
    }

    async fn stream_range(
        &self,
        exchange: ExchangeId,
        bytes: &[u8],
        offset: u64,
        end: u64,
        send: &mut quinn::SendStream,
    ) -> bool {
        let chunk = self.shared.config.protocol.chunk_len.max(1) as u64;
        let mut next = offset;
        while next < end {
            let stop = (next + chunk).min(end);
            let piece = &bytes[next as usize..stop as usize];
            let (r, transmits) = {
                let mut s = lock(&self.session);
                let r = s.proto.send_range_data(exchange, piece);
                let (t, _) = s.take(exchange);
                (r, t)
            };
            if r.is_err() {
                // The exchange was reset by the client (or failed): stop sending.
                return false;
            }
            if !write_transmits(send, transmits).await {
                lock(&self.session).proto.handle_reset(exchange);
                let _ = self.take(exchange);
                return false;
            }
            self.shared
                .stats
                .model_bytes_sent
                .fetch_add(stop - next, Ordering::Relaxed);
            next = stop;
        }
        true
    }

    /// The device's assignment and the signed metadata of every model it names.
    async fn assignment(
        &self,
    ) -> Result<Option<(Assignment, Vec<sextant_proto::SignedModelMetadata>)>> {
        let shared = Arc::clone(&self.shared);
        let device = self.device.clone();
        let a = tokio::task::spawn_blocking(move || lock(&shared.db).effective_assignment(&device))
            .await
            .map_err(|e| BackendError::Invalid(e.to_string()))??;
        let Some(a) = a else { return Ok(None) };
        let assignment = Assignment {
            model: sextant_proto::ModelVersion(a.model_version),
            shadow: a.shadow_version.map(sextant_proto::ModelVersion),
            rollout: None,
            resync_after_s: self.shared.config.resync_after_s,
        };
        let mut metadata = Vec::new();
        for v in assignment.metadata_versions() {
            match self.model(v.0).await? {
                Some(m) => metadata.push(m.signed.clone()),
                None => {
                    return Err(BackendError::Store(StoreError::NotFound(format!(
                        "model version {v}"
                    ))));
                }
            }
        }
        Ok(Some((assignment, metadata)))
    }

    /// A registered model's signed metadata (read once, then cached).
    async fn model(&self, version: u64) -> Result<Option<Arc<CachedMeta>>> {
        if let Some(m) = lock(&self.shared.models).get(&version) {
            return Ok(Some(Arc::clone(m)));
        }
        let shared = Arc::clone(&self.shared);
        let loaded = tokio::task::spawn_blocking(move || -> Result<Option<CachedMeta>> {
            use crate::store::Storage as _;
            let Some(rec) = lock(&shared.db).model(version)? else {
                return Ok(None);
            };
            Ok(Some(CachedMeta {
                signed: registry::signed_metadata(&rec)?,
                sha256: rec.sha256,
            }))
        })
        .await
        .map_err(|e| BackendError::Invalid(e.to_string()))??;
        let Some(m) = loaded else { return Ok(None) };
        let m = Arc::new(m);
        lock(&self.shared.models).insert(version, Arc::clone(&m));
        Ok(Some(m))
    }

    /// A registered model's bytes, read from the blob store once (verified against their
    /// SHA-256 there: a blob damaged or tampered with on disk is an error, never served) and
    /// then cached.
    async fn model_bytes(&self, version: u64) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(meta) = self.model(version).await? else {
            return Ok(None);
        };
        if let Some(b) = lock(&self.shared.model_bytes).get(&meta.sha256) {
            return Ok(Some(Arc::clone(b)));
        }
        let shared = Arc::clone(&self.shared);
        let sha = meta.sha256;
        let bytes = tokio::task::spawn_blocking(move || shared.blobs.get(&sha))
            .await
            .map_err(|e| BackendError::Invalid(e.to_string()))??;
        let bytes = Arc::new(bytes);
        lock(&self.shared.model_bytes).insert(sha, Arc::clone(&bytes));
        Ok(Some(bytes))
    }
}

/// Writes frames; finishes the stream after a `fin` frame. Returns `false` if the stream is gone.
async fn write_transmits(send: &mut quinn::SendStream, transmits: Vec<Transmit>) -> bool {
    for t in transmits {
        if send.write_all(&t.data).await.is_err() {
            return false;
        }
        if t.fin {
            let _ = send.finish();
        }
    }
    true
}

//! The agent's QUIC loop: [`sextant_proto::Client`] driven over quinn with the storage pieces.
//!
//! # What one agent does
//!
//! - **Connect** (mutual TLS) and handshake; on any failure wait [`Backoff`] (exponential, full
//!   jitter, seeded by the device id) and reconnect.
//! - **Sync** at once and then every `min(resync_after_s, sync_interval)`: the backend answers
//!   with the assignment and the signed metadata of the assigned model.
//! - **Verify before download**: signature against the pinned release key, expiry, version not
//!   below the device's floor ([`crate::trust`]). A refused version is remembered (with its
//!   digest) and not fetched again; the running model stays.
//! - **Download in chunks, resuming**: [`ModelStore::begin_download`] reopens the `.part` file at
//!   its last checkpoint; the request asks for `offset..length`; chunks are written as they
//!   arrive and checkpointed (fsync + state file) every `checkpoint_bytes`, and when the stream
//!   or connection is cut. Conditions (unmetered, charging, space) are checked with
//!   [`may_start_download`] first.
//! - **Install and activate**: [`Download::finish`] checks length and SHA-256 and renames the
//!   blob into place atomically; [`ModelStore::activate`] runs the self-check (load with the
//!   runtime, describe a reference patch) with the model on trial, and rolls back to the last
//!   known good model on failure. Only a model that passed is swapped into the [`ModelSlot`]
//!   the frame path reads (lock-free); the device floor then rises to the metadata's floor.
//! - **Telemetry**: a drain thread moves events from the frame path's lock-free ring
//!   ([`crate::handoff`]) into the durable [`TelemetryQueue`]; the session uploads the oldest
//!   records in batches (one batch in flight), deletes them only when acknowledged, and retries
//!   failed uploads with backoff. Records carry localisation outcomes only: no image, keypoint
//!   or descriptor ever leaves the device.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sextant_proto::{
    Client, ClientConfig, ClientEvent, DeviceId, DropCounters, EncodedRecord, ExchangeFailure,
    ExchangeId, ExchangeKind, Label, RecordBody, SignedModelMetadata, SyncRequest, Time,
};
use tokio::sync::{Notify, mpsc};

use crate::backoff::{
    Backoff, BackoffPolicy, DownloadConditions, DownloadDecision, DownloadPolicy,
    may_start_download,
};
use crate::error::{AgentError, Result};
use crate::fsutil;
use crate::queue::{RawBatch, TelemetryQueue};
use crate::refusals::{RefusalKind, Refusals};
use crate::slot::{LoadedModel, ModelSlot, self_check};
use crate::store::{Download, ModelRef, ModelStore};
use crate::trust::{PinnedKey, check_signed_metadata};

/// Everything an agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// State directory: `models/` (model store), `queue/` (telemetry), `agent.state` (floor).
    pub dir: PathBuf,
    /// The backend's address.
    pub server: SocketAddr,
    /// The name the server certificate must carry (DNS name or IP).
    pub server_name: String,
    /// The fleet CA certificate.
    pub ca_cert: PathBuf,
    /// This device's certificate.
    pub device_cert: PathBuf,
    /// This device's private key.
    pub device_key: PathBuf,
    /// Release keys trusted for model metadata.
    pub pinned: Vec<PinnedKey>,
    /// The device id (must match the certificate).
    pub device_id: String,
    /// Device class label.
    pub device_class: String,
    /// Sync at least this often, whatever the backend's `resync_after_s` says.
    pub sync_interval: Duration,
    /// Reconnect pacing.
    pub backoff: BackoffPolicy,
    /// Download conditions reported by the (simulated) OS.
    pub conditions: DownloadConditions,
    /// Download rules.
    pub download_policy: DownloadPolicy,
    /// Simulated link speed for model downloads, bytes per second (`None`: unthrottled).
    pub max_download_rate: Option<u64>,
    /// Most records per telemetry batch (further capped by the server's limit).
    pub batch_records: usize,
    /// Make the download durable every this many bytes.
    pub checkpoint_bytes: u64,
}

/// What the agent reports (the CLI prints these as JSON lines).
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// Handshake done.
    Connected,
    /// The session ended; the agent reconnects after a backoff delay.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A sync returned this assignment.
    Assigned {
        /// The model to run.
        version: u64,
    },
    /// A download (re)started at `offset` of `length` bytes.
    DownloadStarted {
        /// Model version.
        version: u64,
        /// Bytes already on disk (the resume point).
        offset: u64,
        /// Total length.
        length: u64,
    },
    /// A download checkpoint was made durable at `offset`.
    DownloadProgress {
        /// Model version.
        version: u64,
        /// Durable bytes.
        offset: u64,
    },
    /// A download stopped before completing (cut, or refused by the server); it resumes from
    /// its last checkpoint at the next sync.
    DownloadFailed {
        /// Model version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// A download may not start now (network metered, battery, space).
    DownloadDeferred {
        /// Model version.
        version: u64,
        /// The policy's verdict.
        reason: String,
    },
    /// A new model passed its self-check and is what the frame path now runs.
    Activated {
        /// Model version.
        version: u64,
    },
    /// A model was refused before activation (bad signature, expired, below floor, wrong length
    /// or hash); the running model stays.
    Refused {
        /// Model version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// A model failed to load or its self-check after install; the store rolled back.
    RolledBack {
        /// The refused version.
        from: u64,
        /// The version active again, if any.
        to: Option<u64>,
        /// Why.
        reason: String,
    },
    /// A shadow candidate was downloaded, verified and loaded; it runs beside the active model
    /// (its results are never used).
    ShadowInstalled {
        /// Model version.
        version: u64,
    },
    /// The assignment no longer names a shadow candidate; the installed one was dropped.
    ShadowCleared {
        /// Model version.
        version: u64,
    },
    /// A telemetry batch was acknowledged.
    Uploaded {
        /// Records in the batch.
        records: u64,
        /// Stored now by the backend.
        stored: u64,
        /// Already stored before (a retry).
        duplicates: u64,
    },
}

/// Counters shared with the CLI (for `--exit-when-idle` and the final summary).
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Events appended to the durable queue by this process.
    pub appended: AtomicU64,
    /// Records acknowledged by the backend in this process.
    pub acked: AtomicU64,
    /// Duplicates the backend reported.
    pub duplicates: AtomicU64,
    /// Telemetry upload attempts that failed.
    pub upload_failures: AtomicU64,
    /// Set when the latest sync left nothing to do for the model (active = assigned, or the
    /// assigned one was refused).
    pub model_settled: AtomicBool,
    /// Model bytes received.
    pub download_bytes: AtomicU64,
}

/// Unix seconds now.
pub fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn net(e: impl std::fmt::Display) -> AgentError {
    AgentError::Network(e.to_string())
}

/// The device's persistent agent state besides the model store and queue: the rollback floor.
fn read_floor(path: &Path) -> Result<u64> {
    Ok(fsutil::read_state_file(path)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_le_bytes))
}

/// Acknowledged records' cursor is made durable at least this often (see
/// [`TelemetryQueue::ack_through_deferred`]); at most this much acknowledged telemetry is sent
/// again after a crash (and stored once by the backend).
const ACK_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The file naming the installed shadow candidate.
const SHADOW_STATE: &str = "shadow.state";

/// The shadow candidate recorded in `path`, if any (a damaged file is logged and ignored: the
/// next sync names the candidate again).
fn read_shadow(path: &Path) -> Option<ModelRef> {
    match fsutil::read_state_file(path) {
        Ok(Some(b)) if b.len() == 40 => {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[..8]);
            let mut sha = [0u8; 32];
            sha.copy_from_slice(&b[8..]);
            Some(ModelRef {
                version: u64::from_le_bytes(v),
                sha256: sha,
            })
        }
        Ok(Some(_)) | Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "shadow state unreadable; ignored");
            None
        }
    }
}

/// The sync agent of one device.
pub struct Agent {
    cfg: AgentConfig,
    store: ModelStore,
    queue: Arc<Mutex<TelemetryQueue>>,
    slot: Arc<ModelSlot>,
    shadow_slot: Arc<ModelSlot>,
    /// The installed shadow candidate (persisted in `shadow.state`).
    shadow: Option<ModelRef>,
    floor: u64,
    refusals: Refusals,
    /// Reused buffer of the records being uploaded.
    raw: RawBatch,
    /// When acknowledgements were last made durable.
    last_ack_flush: Instant,
    /// Records up to this sequence number are decoded in full before upload (set when the
    /// server refused a batch as malformed).
    strict_through: Option<u64>,
    counters: Arc<AgentCounters>,
    new_events: Arc<Notify>,
    emit: Box<dyn Fn(AgentEvent) + Send>,
    rolled_back_from: Option<u64>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("device", &self.cfg.device_id)
            .field("floor", &self.floor)
            .finish()
    }
}

/// What a download is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The model to run.
    Active,
    /// The candidate to run in shadow.
    Shadow,
}

struct DownloadState {
    role: Role,
    exchange: ExchangeId,
    version: u64,
    signed: SignedModelMetadata,
    download: Download,
    since_checkpoint: u64,
}

enum Inbound {
    Data(ExchangeId, Vec<u8>),
    End(ExchangeId),
    Reset(ExchangeId),
}

struct Session {
    conn: quinn::Connection,
    client: Client,
    sends: HashMap<ExchangeId, quinn::SendStream>,
    download_exchanges: HashSet<ExchangeId>,
    tx: mpsc::Sender<Inbound>,
    rx: mpsc::Receiver<Inbound>,
    epoch: Instant,
    download: Option<DownloadState>,
    sync_in_flight: bool,
    next_sync: Instant,
    upload: Option<(ExchangeId, Vec<u64>)>,
    next_upload: Instant,
    upload_backoff: Backoff,
}

impl Session {
    fn now(&self) -> Time {
        Time(self.epoch.elapsed().as_millis() as u64)
    }
}

impl Agent {
    /// Opens the state directory (model store, queue, floor) and loads the active model into
    /// the slot (rolling back if it no longer loads).
    pub fn open(
        cfg: AgentConfig,
        queue: Arc<Mutex<TelemetryQueue>>,
        slot: Arc<ModelSlot>,
        shadow_slot: Arc<ModelSlot>,
        counters: Arc<AgentCounters>,
        new_events: Arc<Notify>,
        emit: Box<dyn Fn(AgentEvent) + Send>,
    ) -> Result<Agent> {
        let mut store = ModelStore::open(&cfg.dir.join("models"))?;
        let floor = read_floor(&cfg.dir.join("agent.state"))?;
        let mut rolled_back_from = store.rolled_back_at_open().map(|m| m.version);
        // Load the active model; if it no longer loads, roll back to the last known good one.
        for _ in 0..2 {
            let Some(active) = store.active() else { break };
            match store
                .read_blob(&active.sha256)
                .map_err(|e| e.to_string())
                .and_then(|b| self_check(&b))
            {
                Ok(model) => {
                    slot.swap(LoadedModel {
                        version: active.version,
                        sha256: active.sha256,
                        model,
                    });
                    break;
                }
                Err(reason) => {
                    tracing::warn!(version = active.version, %reason, "active model fails its self-check; rolling back");
                    rolled_back_from = Some(active.version);
                    let before = store.active();
                    store.rollback()?;
                    if store.active() == before {
                        break;
                    }
                }
            }
        }
        let refusals = Refusals::open(&cfg.dir.join("refused.state"));
        // The shadow candidate installed before, if its blob is still there and still loads.
        let shadow = read_shadow(&cfg.dir.join(SHADOW_STATE)).filter(|m| {
            match store.read_blob(&m.sha256).map_err(|e| e.to_string()).and_then(|b| self_check(&b)) {
                Ok(model) => {
                    shadow_slot.swap(LoadedModel {
                        version: m.version,
                        sha256: m.sha256,
                        model,
                    });
                    true
                }
                Err(reason) => {
                    tracing::warn!(version = m.version, %reason, "shadow candidate no longer loads; dropped");
                    false
                }
            }
        });
        Ok(Agent {
            cfg,
            store,
            queue,
            slot,
            shadow_slot,
            shadow,
            floor,
            refusals,
            raw: RawBatch::default(),
            last_ack_flush: Instant::now(),
            strict_through: None,
            counters,
            new_events,
            emit,
            rolled_back_from,
        })
    }

    /// The device's current rollback floor.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Runs sessions until `stop` is notified, reconnecting with backoff.
    pub async fn run(mut self, stop: Arc<Notify>) -> Result<()> {
        let tls = crate::tls::client_tls_config(
            &self.cfg.ca_cert,
            &self.cfg.device_cert,
            &self.cfg.device_key,
        )?;
        let client_cfg = crate::tls::quic_client_config(tls)?;
        let bind: SocketAddr = if self.cfg.server.is_ipv6() {
            "[::]:0".parse().map_err(net)?
        } else {
            "0.0.0.0:0".parse().map_err(net)?
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(net)?;
        endpoint.set_default_client_config(client_cfg);
        let seed = self
            .cfg
            .device_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
            ^ unix_ms();
        let mut backoff = Backoff::new(self.cfg.backoff, seed);
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                r = self.session(&endpoint) => r,
                () = stop.notified() => {
                    endpoint.close(0u32.into(), b"agent stopping");
                    return Ok(());
                }
            };
            let reason = match result {
                Ok(()) => "session ended".to_owned(),
                Err(e) => e.to_string(),
            };
            (self.emit)(AgentEvent::Disconnected { reason });
            if started.elapsed() > Duration::from_secs(10) {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.notified() => return Ok(()),
            }
        }
    }

    async fn session(&mut self, endpoint: &quinn::Endpoint) -> Result<()> {
        let conn = endpoint
            .connect(self.cfg.server, &self.cfg.server_name)
            .map_err(net)?
            .await
            .map_err(net)?;
        let device = DeviceId::new(self.cfg.device_id.clone())?;
        let config = ClientConfig::new(
            device,
            Label::new(self.cfg.device_class.clone())?,
            Label::new("sim-1.0")?,
            Label::new(env!("CARGO_PKG_VERSION"))?,
        );
        let (tx, rx) = mpsc::channel(64);
        let epoch = Instant::now();
        let mut s = Session {
            client: Client::new(config, Time(0))?,
            conn,
            sends: HashMap::new(),
            download_exchanges: HashSet::new(),
            tx,
            rx,
            epoch,
            download: None,
            sync_in_flight: false,
            next_sync: epoch,
            upload: None,
            next_upload: epoch,
            upload_backoff: Backoff::new(
                BackoffPolicy {
                    base: Duration::from_millis(100),
                    cap: Duration::from_secs(10),
                },
                unix_ms(),
            ),
        };
        let mut result = self.drive(&mut s).await;
        if let (Err(e), Some(reason)) = (&result, s.conn.close_reason()) {
            result = Err(AgentError::Network(format!(
                "{e}; connection closed: {reason}"
            )));
        }
        if let Err(e) = lock(&self.queue).flush_acks() {
            tracing::warn!(error = %e, "could not persist acknowledgements");
        }
        // Whatever happened, make the bytes downloaded so far durable for the next session.
        if let Some(mut d) = s.download.take() {
            let _ = d.download.checkpoint();
        }
        result
    }

    async fn drive(&mut self, s: &mut Session) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut connected = false;
        loop {
            self.flush(s).await?;
            while let Some(ev) = s.client.poll_event() {
                self.on_event(s, ev, &mut connected)?;
            }
            if s.client.is_closed() {
                return Err(AgentError::Network("session closed".into()));
            }
            if connected {
                self.maybe_start(s)?;
            }
            self.flush(s).await?;
            let new_events = Arc::clone(&self.new_events);
            tokio::select! {
                msg = s.rx.recv() => {
                    let Some(msg) = msg else { return Err(net("stream readers gone")) };
                    let now = s.now();
                    match msg {
                        Inbound::Data(id, bytes) => {
                            if s.download.as_ref().is_some_and(|d| d.exchange == id) {
                                self.counters.download_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            }
                            if s.client.handle_data(now, id, &bytes).is_err()
                                && let Some(mut send) = s.sends.remove(&id)
                            {
                                let _ = send.reset(0u32.into());
                            }
                        }
                        Inbound::End(id) => {
                            let _ = s.client.handle_stream_end(id);
                            s.sends.remove(&id);
                            s.download_exchanges.remove(&id);
                        }
                        Inbound::Reset(id) => {
                            s.client.handle_reset(id);
                            s.sends.remove(&id);
                            s.download_exchanges.remove(&id);
                        }
                    }
                }
                () = new_events.notified() => {}
                _ = tick.tick() => {
                    if self.last_ack_flush.elapsed() >= ACK_FLUSH_EVERY {
                        self.last_ack_flush = Instant::now();
                        lock(&self.queue).flush_acks()?;
                    }
                    let now = s.now();
                    if s.client.poll_timeout().is_some_and(|t| t <= now) {
                        s.client.handle_timeout(now);
                    }
                }
                e = s.conn.closed() => {
                    // Closed as malformed while a batch was in flight: send those records
                    // again only after decoding each in full.
                    if let quinn::ConnectionError::ApplicationClosed(c) = &e
                        && c.error_code == quinn::VarInt::from(u32::from(sextant_proto::ErrorCode::MALFORMED.0))
                        && let Some((_, seqs)) = &s.upload
                    {
                        self.strict_through = seqs.last().copied();
                    }
                    s.client.handle_connection_lost();
                    while let Some(ev) = s.client.poll_event() {
                        let _ = self.on_event(s, ev, &mut connected);
                    }
                    return Err(net(e));
                }
            }
        }
    }

    /// Writes queued frames, opening a stream (and its reader task) for each new exchange.
    async fn flush(&mut self, s: &mut Session) -> Result<()> {
        while let Some(t) = s.client.poll_transmit() {
            if !s.sends.contains_key(&t.exchange) {
                let (send, recv) = s.conn.open_bi().await.map_err(net)?;
                let rate = if s.download_exchanges.contains(&t.exchange) {
                    self.cfg.max_download_rate
                } else {
                    None
                };
                tokio::spawn(read_stream(recv, t.exchange, s.tx.clone(), rate));
                s.sends.insert(t.exchange, send);
            }
            if let Some(send) = s.sends.get_mut(&t.exchange) {
                // Hand the frame over as it is (`Bytes` from the `Vec`): no copy of a batch.
                send.write_chunk(t.data.into()).await.map_err(net)?;
                if t.fin {
                    let _ = send.finish();
                }
            }
        }
        Ok(())
    }

    /// Starts a sync or a telemetry upload when one is due.
    fn maybe_start(&mut self, s: &mut Session) -> Result<()> {
        let now_i = Instant::now();
        if !s.sync_in_flight && s.download.is_none() && now_i >= s.next_sync {
            let active = self.store.active();
            let request = SyncRequest {
                active: active.map(|m| sextant_proto::ModelVersion(m.version)),
                shadowing: self.shadow.map(|m| sextant_proto::ModelVersion(m.version)),
                floor: sextant_proto::ModelVersion(self.floor),
                rolled_back_from: self.rolled_back_from.map(sextant_proto::ModelVersion),
            };
            let now = s.now();
            s.client.start_sync(now, request)?;
            s.sync_in_flight = true;
        }
        if s.upload.is_none() && now_i >= s.next_upload {
            let max = s
                .client
                .welcome()
                .map_or(0, |w| w.max_batch_records as usize)
                .min(self.cfg.batch_records)
                .max(1);
            let dropped = {
                let q = lock(&self.queue);
                if q.stats().items == 0 {
                    return Ok(());
                }
                q.peek_raw(max, 512 << 10, &mut self.raw)?;
                q.stats().dropped
            };
            // Bodies go out as stored (CBOR of a `RecordBody`), spliced into the frame. Those
            // this process encoded (`encoded_here`: `RecordBody::encode_cbor`'s bytes, held to
            // them by the queue's checksum when read back from disk) are well-formed by
            // construction; any other (found on disk at start-up) is checked to be one
            // well-formed CBOR item. After the server refused a batch as malformed, records up
            // to that batch's end are fully decoded first (`strict`).
            let strict = self
                .strict_through
                .is_some_and(|t| self.raw.records.first().is_some_and(|r| r.sequence <= t));
            let mut sent = Vec::with_capacity(self.raw.records.len());
            let mut undecodable_through = None;
            for r in &self.raw.records {
                let body = self.raw.payload(r);
                let ok = if strict {
                    ciborium::from_reader::<RecordBody, _>(body).is_ok()
                } else {
                    // Debug builds (every test) still check what the release build trusts.
                    debug_assert!(!r.encoded_here || sextant_proto::check_item(body).is_ok());
                    r.encoded_here || sextant_proto::check_item(body).is_ok()
                };
                if ok {
                    sent.push(r.clone());
                } else if sent.is_empty() {
                    undecodable_through = Some(r.sequence);
                } else {
                    break;
                }
            }
            if let Some(seq) = undecodable_through {
                // A record that cannot be sent would stall the queue forever: drop it.
                tracing::warn!(
                    through = seq,
                    "dropping telemetry records that do not decode"
                );
                lock(&self.queue).ack_through(seq)?;
            }
            if sent.is_empty() {
                return Ok(());
            }
            let records: Vec<EncodedRecord<'_>> = sent
                .iter()
                .map(|r| EncodedRecord {
                    sequence: r.sequence,
                    recorded_at_ms: r.recorded_at_ms,
                    body: self.raw.payload(r),
                })
                .collect();
            let drops = DropCounters {
                by_items: dropped.by_items,
                by_bytes: dropped.by_bytes,
                by_age: dropped.by_age,
                by_handoff: dropped.by_handoff,
            };
            let now = s.now();
            let id =
                s.client
                    .upload_telemetry_encoded(now, records[0].sequence, &records, &drops)?;
            s.upload = Some((id, sent.iter().map(|r| r.sequence).collect()));
        }
        Ok(())
    }

    fn on_event(&mut self, s: &mut Session, ev: ClientEvent, connected: &mut bool) -> Result<()> {
        match ev {
            ClientEvent::Connected(_) => {
                *connected = true;
                (self.emit)(AgentEvent::Connected);
            }
            ClientEvent::Refused(e) => {
                return Err(AgentError::Network(format!(
                    "handshake refused ({}): {}",
                    e.code.0, e.message
                )));
            }
            ClientEvent::Synced {
                assignment,
                metadata,
                ..
            } => {
                s.sync_in_flight = false;
                let interval = Duration::from_secs(u64::from(assignment.resync_after_s))
                    .min(self.cfg.sync_interval);
                s.next_sync = Instant::now() + interval;
                self.rolled_back_from = None;
                let find = |v: sextant_proto::ModelVersion| {
                    metadata.iter().find(|m| m.metadata.version == v).cloned()
                };
                let shadow = assignment
                    .shadow
                    .filter(|v| *v != assignment.model)
                    .and_then(find);
                if let Some(signed) = find(assignment.model) {
                    self.on_assignment(s, signed)?;
                }
                self.on_shadow_assignment(s, shadow)?;
            }
            ClientEvent::Chunk { exchange, chunk } => {
                if let Some(d) = s.download.as_mut().filter(|d| d.exchange == exchange) {
                    d.download.write(&chunk.data.0)?;
                    d.since_checkpoint += chunk.data.0.len() as u64;
                    if d.since_checkpoint >= self.cfg.checkpoint_bytes {
                        d.download.checkpoint()?;
                        d.since_checkpoint = 0;
                        (self.emit)(AgentEvent::DownloadProgress {
                            version: d.version,
                            offset: d.download.offset(),
                        });
                    }
                }
            }
            ClientEvent::DownloadComplete { exchange, .. } => {
                if let Some(d) = s.download.take_if(|d| d.exchange == exchange) {
                    let version = d.version;
                    match (d.download.finish(), d.role) {
                        (Ok(sha), Role::Active) => self.activate(version, sha, &d.signed),
                        (Ok(sha), Role::Shadow) => self.install_shadow(version, sha),
                        (Err(e), _) => {
                            self.refuse(RefusalKind::Content, &d.signed, e.to_string());
                        }
                    }
                    s.next_sync = Instant::now();
                }
            }
            ClientEvent::TelemetryAcked { exchange, ack } => {
                if let Some((id, sent)) = s.upload.take() {
                    if id != exchange {
                        s.upload = Some((id, sent));
                        return Ok(());
                    }
                    let mut through = None;
                    for seq in &sent {
                        if ack.acked.iter().any(|r| r.contains(*seq)) {
                            through = Some(*seq);
                        } else {
                            break;
                        }
                    }
                    if let Some(t) = through {
                        let n = lock(&self.queue).ack_through_deferred(t)?;
                        self.counters.acked.fetch_add(n, Ordering::Relaxed);
                    }
                    self.counters
                        .duplicates
                        .fetch_add(u64::from(ack.duplicates), Ordering::Relaxed);
                    s.upload_backoff.reset();
                    s.next_upload = Instant::now();
                    (self.emit)(AgentEvent::Uploaded {
                        records: sent.len() as u64,
                        stored: u64::from(ack.stored),
                        duplicates: u64::from(ack.duplicates),
                    });
                }
            }
            ClientEvent::ExchangeFailed {
                exchange,
                kind,
                failure,
            } => {
                s.sends.remove(&exchange);
                tracing::info!(%exchange, ?kind, ?failure, "exchange failed");
                match kind {
                    ExchangeKind::Handshake => {
                        return Err(AgentError::Network(format!(
                            "handshake failed: {failure:?}"
                        )));
                    }
                    ExchangeKind::Sync => {
                        s.sync_in_flight = false;
                        let settled = matches!(
                            &failure,
                            ExchangeFailure::Remote(e) if e.code == sextant_proto::ErrorCode::UNKNOWN_MODEL
                        );
                        if settled {
                            self.counters.model_settled.store(true, Ordering::Relaxed);
                        }
                        s.next_sync =
                            Instant::now() + Duration::from_millis(500).min(self.cfg.sync_interval);
                    }
                    ExchangeKind::Download => {
                        let retry = match &failure {
                            ExchangeFailure::Remote(e) => {
                                e.retry_after_s.map(|r| Duration::from_secs(u64::from(r)))
                            }
                            _ => None,
                        };
                        if let Some(mut d) = s.download.take_if(|d| d.exchange == exchange) {
                            d.download.checkpoint()?;
                            (self.emit)(AgentEvent::DownloadFailed {
                                version: d.version,
                                reason: match &failure {
                                    ExchangeFailure::Remote(e) => {
                                        format!("server error {}: {}", e.code.0, e.message)
                                    }
                                    other => format!("{other:?}"),
                                },
                            });
                        }
                        // A cut resumes soon; a server that says when to come back is obeyed
                        // (capped by the sync interval).
                        s.next_sync = Instant::now()
                            + retry.map_or(Duration::from_millis(200), |r| {
                                r.min(self.cfg.sync_interval.max(Duration::from_millis(200)))
                            });
                    }
                    ExchangeKind::Telemetry => {
                        if let Some((id, seqs)) =
                            s.upload.as_ref().filter(|(id, _)| *id == exchange)
                        {
                            let _ = id;
                            if matches!(&failure, ExchangeFailure::Remote(e) if e.code == sextant_proto::ErrorCode::MALFORMED)
                            {
                                self.strict_through = seqs.last().copied();
                            }
                            s.upload = None;
                            self.counters
                                .upload_failures
                                .fetch_add(1, Ordering::Relaxed);
                            let retry = match &failure {
                                ExchangeFailure::Remote(e) => {
                                    e.retry_after_s.map(|r| Duration::from_secs(u64::from(r)))
                                }
                                _ => None,
                            };
                            let delay = retry.unwrap_or_else(|| s.upload_backoff.next_delay());
                            s.next_upload = Instant::now() + delay;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn refuse(&mut self, kind: RefusalKind, signed: &SignedModelMetadata, reason: String) {
        let version = signed.metadata.version.0;
        tracing::warn!(version, %reason, "model refused");
        if let Err(e) = self.refusals.insert(kind, signed) {
            tracing::error!(error = %e, "could not persist the refusal");
        }
        self.counters.model_settled.store(true, Ordering::Relaxed);
        (self.emit)(AgentEvent::Refused { version, reason });
    }

    fn on_assignment(&mut self, s: &mut Session, signed: SignedModelMetadata) -> Result<()> {
        let m = &signed.metadata;
        let version = m.version.0;
        let sha = m.sha256.0;
        (self.emit)(AgentEvent::Assigned { version });
        let target = ModelRef {
            version,
            sha256: sha,
        };
        if self.store.active() == Some(target) {
            self.counters.model_settled.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if self.refusals.is_refused(&signed) || self.store.last_refused() == Some(target) {
            self.counters.model_settled.store(true, Ordering::Relaxed);
            return Ok(());
        }
        self.counters.model_settled.store(false, Ordering::Relaxed);
        self.fetch(s, signed, Role::Active)
    }

    /// The shadow half of a sync: installs the candidate the assignment names (download,
    /// verification and self-check exactly as for the active model, but never activated), or
    /// drops the installed one when the assignment names none. Waits while the active model
    /// downloads (the next sync comes back to it).
    fn on_shadow_assignment(
        &mut self,
        s: &mut Session,
        signed: Option<SignedModelMetadata>,
    ) -> Result<()> {
        let Some(signed) = signed else {
            self.clear_shadow();
            return Ok(());
        };
        if s.download.is_some() {
            self.counters.model_settled.store(false, Ordering::Relaxed);
            return Ok(());
        }
        let m = &signed.metadata;
        let (version, sha) = (m.version.0, m.sha256.0);
        let target = ModelRef {
            version,
            sha256: sha,
        };
        if self.shadow == Some(target) {
            return Ok(());
        }
        if self.store.active() == Some(target) {
            // The candidate is what runs already: nothing to compare.
            self.clear_shadow();
            return Ok(());
        }
        if self.refusals.is_refused(&signed) {
            return Ok(());
        }
        self.fetch(s, signed, Role::Shadow)
    }

    /// Checks `signed` and installs its model in `role`: at once when the blob is in the store,
    /// else by a download (resumed from the last checkpoint) when the download conditions allow
    /// it. The active model is activated, the shadow candidate installed in the shadow slot.
    fn fetch(&mut self, s: &mut Session, signed: SignedModelMetadata, role: Role) -> Result<()> {
        let m = &signed.metadata;
        let (version, sha) = (m.version.0, m.sha256.0);
        let claims = match check_signed_metadata(&signed, &self.cfg.pinned, unix_s(), self.floor) {
            Ok(c) => c,
            Err(e) => {
                self.refuse(RefusalKind::Metadata, &signed, e.to_string());
                return Ok(());
            }
        };
        let install = |this: &mut Self, sha| match role {
            Role::Active => this.activate(version, sha, &signed),
            Role::Shadow => this.install_shadow(version, sha),
        };
        if self.store.has_blob(&sha) {
            install(self, sha);
            return Ok(());
        }
        let download = self.store.begin_download(sha, claims.length)?;
        let offset = download.offset();
        let decision = may_start_download(
            &self.cfg.conditions,
            &self.cfg.download_policy,
            claims.length - offset,
            false,
        );
        if decision != DownloadDecision::Allow {
            (self.emit)(AgentEvent::DownloadDeferred {
                version,
                reason: format!("{decision:?}"),
            });
            if role == Role::Active {
                s.next_sync = Instant::now() + self.cfg.sync_interval;
            }
            return Ok(());
        }
        if offset >= claims.length {
            match download.finish() {
                Ok(sha) => install(self, sha),
                Err(e) => self.refuse(RefusalKind::Content, &signed, e.to_string()),
            }
            return Ok(());
        }
        if role == Role::Shadow {
            self.counters.model_settled.store(false, Ordering::Relaxed);
        }
        let now = s.now();
        let exchange = s.client.start_download(now, &signed.metadata, offset)?;
        s.download_exchanges.insert(exchange);
        (self.emit)(AgentEvent::DownloadStarted {
            version,
            offset,
            length: claims.length,
        });
        s.download = Some(DownloadState {
            role,
            exchange,
            version,
            signed,
            download,
            since_checkpoint: 0,
        });
        Ok(())
    }

    /// Loads an installed (verified) blob as the shadow candidate: self-check, then the shadow
    /// slot and `shadow.state`. A candidate that fails to load is refused for good.
    fn install_shadow(&mut self, version: u64, sha256: [u8; 32]) {
        let loaded = self
            .store
            .read_blob(&sha256)
            .map_err(|e| e.to_string())
            .and_then(|b| self_check(&b));
        match loaded {
            Ok(model) => {
                let mut state = version.to_le_bytes().to_vec();
                state.extend_from_slice(&sha256);
                if let Err(e) = fsutil::write_state_file(&self.cfg.dir.join(SHADOW_STATE), &state) {
                    tracing::error!(error = %e, "could not persist the shadow candidate");
                }
                self.shadow_slot.swap(LoadedModel {
                    version,
                    sha256,
                    model,
                });
                self.shadow = Some(ModelRef { version, sha256 });
                (self.emit)(AgentEvent::ShadowInstalled { version });
            }
            Err(reason) => {
                if let Err(e) = self.refusals.insert_content(version, sha256) {
                    tracing::error!(error = %e, "could not persist the refusal");
                }
                (self.emit)(AgentEvent::Refused {
                    version,
                    reason: format!("shadow candidate failed its self-check: {reason}"),
                });
            }
        }
    }

    /// Stops shadowing (the assignment names no candidate any more).
    fn clear_shadow(&mut self) {
        let Some(old) = self.shadow.take() else {
            return;
        };
        self.shadow_slot.clear();
        if let Err(e) = std::fs::remove_file(self.cfg.dir.join(SHADOW_STATE))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "could not remove the shadow state");
        }
        if let Err(e) = self.store.collect_garbage_except(&[]) {
            tracing::warn!(error = %e, "blob garbage collection failed");
        }
        (self.emit)(AgentEvent::ShadowCleared {
            version: old.version,
        });
    }

    /// Activates an installed blob through the store's trial + self-check; swaps the slot only
    /// after the check passed.
    fn activate(&mut self, version: u64, sha256: [u8; 32], signed: &SignedModelMetadata) {
        let mut loaded = None;
        let r = self.store.activate(ModelRef { version, sha256 }, |bytes| {
            self_check(bytes).map(|m| loaded = Some(m))
        });
        match (r, loaded) {
            (Ok(()), Some(model)) => {
                self.slot.swap(LoadedModel {
                    version,
                    sha256,
                    model,
                });
                let floor = signed.metadata.floor.0.max(self.floor);
                if floor != self.floor {
                    match fsutil::write_state_file(
                        &self.cfg.dir.join("agent.state"),
                        &floor.to_le_bytes(),
                    ) {
                        Ok(()) => self.floor = floor,
                        Err(e) => tracing::error!(error = %e, "could not persist the floor"),
                    }
                }
                let keep: Vec<[u8; 32]> = self.shadow.iter().map(|m| m.sha256).collect();
                if let Err(e) = self.store.collect_garbage_except(&keep) {
                    tracing::warn!(error = %e, "blob garbage collection failed");
                }
                self.counters.model_settled.store(true, Ordering::Relaxed);
                (self.emit)(AgentEvent::Activated { version });
            }
            (Ok(()), None) => {
                // Already active (the store skipped the self-check).
                self.counters.model_settled.store(true, Ordering::Relaxed);
            }
            (Err(e), _) => {
                if let Err(pe) = self.refusals.insert_content(version, sha256) {
                    tracing::error!(error = %pe, "could not persist the refusal");
                }
                self.rolled_back_from = Some(version);
                self.counters.model_settled.store(true, Ordering::Relaxed);
                (self.emit)(AgentEvent::RolledBack {
                    from: version,
                    to: self.store.active().map(|m| m.version),
                    reason: e.to_string(),
                });
            }
        }
    }
}

/// Forwards what a stream delivers to the session; throttles to `rate` bytes/s if set.
async fn read_stream(
    mut recv: quinn::RecvStream,
    id: ExchangeId,
    tx: mpsc::Sender<Inbound>,
    rate: Option<u64>,
) {
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        match recv.read_chunk(256 << 10, true).await {
            Ok(Some(chunk)) => {
                total += chunk.bytes.len() as u64;
                if tx
                    .send(Inbound::Data(id, chunk.bytes.to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
                if let Some(r) = rate.filter(|r| *r > 0) {
                    let due = Duration::from_secs_f64(total as f64 / r as f64);
                    let elapsed = start.elapsed();
                    if due > elapsed {
                        tokio::time::sleep(due - elapsed).await;
                    }
                }
            }
            Ok(None) => {
                let _ = tx.send(Inbound::End(id)).await;
                return;
            }
            Err(_) => {
                let _ = tx.send(Inbound::Reset(id)).await;
                return;
            }
        }
    }
}

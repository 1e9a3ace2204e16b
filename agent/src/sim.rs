//! A simulated device around [`Agent`]: a frame path that produces localisation events at a
//! set rate through the lock-free hand-off, the drain thread that appends them to the durable
//! queue, and the agent's QUIC loop. `sextant agent run` is this.
//!
//! When the assignment names a shadow candidate and the agent has installed it, each simulated
//! frame also runs a few patches through both models (real descriptor runs, timed) and every
//! [`SimConfig::shadow_window`] frames a [`sextant_proto::ShadowReport`] goes into the same
//! telemetry queue (see `ShadowRun` for what is simulated and what is measured).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sextant_proto::{
    ComputeBackend, FailureReason, Label, LocalizationEvent, ModelVersion, Outcome, PoseSource,
    RecordBody, SliceKeys, StageTimings,
};
use sextant_runtime::descriptor::PATCH_PIXELS;
use tokio::sync::Notify;

use crate::error::{AgentError, Result};
use crate::handoff::Handoff;
use crate::queue::{QueueConfig, TelemetryQueue};
use crate::runner::{Agent, AgentConfig, AgentCounters, AgentEvent, unix_ms};
use crate::shadow::{PairScratch, ShadowSample, ShadowWindow, describe_pair};
use crate::slot::{LoadedModel, ModelSlot};

/// Capacity of the simulated frame path's ring (items: one less).
pub const RING: usize = 4096;

/// Most events the drain appends as one batch (one write).
const DRAIN_BATCH: usize = 2048;

/// How long the drain waits after a batch smaller than [`DRAIN_BATCH`] before the next one:
/// bounds the extra latency to disk and saves a wake-up and a write per handful of events.
const DRAIN_GATHER: Duration = Duration::from_millis(2);

/// How long a waiting (rate 0) producer sleeps when the ring is full.
const RING_FULL_WAIT: Duration = Duration::from_millis(1);

/// Settings of a simulated device.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The agent.
    pub agent: AgentConfig,
    /// Telemetry queue limits.
    pub queue: QueueConfig,
    /// Events the simulated frame path produces in this process.
    pub events_total: u64,
    /// Their rate (0: as fast as the ring drains, waiting instead of dropping).
    pub events_per_sec: u64,
    /// Exit once every event is acknowledged and the model matches the assignment (or the
    /// assigned one was refused).
    pub exit_when_idle: bool,
    /// Exit after this long regardless.
    pub run_for: Option<Duration>,
    /// Frames per shadow report while a shadow candidate is installed.
    pub shadow_window: u32,
}

/// What a simulated device reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    /// From the agent.
    Agent(AgentEvent),
    /// Every event of this process reached the durable queue.
    Generated {
        /// Events appended.
        appended: u64,
        /// Events the ring dropped.
        dropped: u64,
    },
}

/// The final counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSummary {
    /// Events appended to the queue by this process.
    pub appended: u64,
    /// Records acknowledged in this process.
    pub acked: u64,
    /// Duplicates the backend reported.
    pub duplicates: u64,
    /// Records still queued.
    pub queued: u64,
    /// Drop counters of the queue (cumulative): items, bytes, age, hand-off.
    pub dropped: [u64; 4],
    /// Active model version.
    pub active: Option<u64>,
    /// Shadow candidate version, if one is installed.
    pub shadow: Option<u64>,
    /// Rollback floor.
    pub floor: u64,
    /// Process CPU time (user + system), ms: the agent and the simulated frame path together.
    pub cpu_ms: u64,
    /// Of `cpu_ms`, what the simulated frame path's thread took (making the events and pushing
    /// them into the hand-off: the app's work, not the agent's), ms; `None` where the thread had
    /// not finished or its CPU time cannot be read.
    pub producer_cpu_ms: Option<u64>,
    /// Model bytes received.
    pub download_bytes: u64,
    /// Records read for upload from the queue's memory copy, and read back from its segment
    /// files ([`crate::queue::QueueStats`]; a record sent twice counts twice).
    pub read_from: [u64; 2],
}

/// CPU time of this process (user + system) in milliseconds, from `/proc/self/stat`.
pub fn process_cpu_ms() -> u64 {
    cpu_ms_of_stat("/proc/self/stat").unwrap_or(0)
}

/// CPU time (user + system, ms) of process `pid`, from `/proc/<pid>/stat`; `None` if it cannot
/// be read.
pub fn cpu_ms_of(pid: u32) -> Option<u64> {
    cpu_ms_of_stat(&format!("/proc/{pid}/stat"))
}

/// CPU time (user + system) of the calling thread in nanoseconds, from
/// `/proc/thread-self/schedstat` (its first field, time spent on a CPU); `None` if it cannot be
/// read.
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn cpu_ms_of_stat(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    // `rest` starts at field 3 (state), so field n is at index n - 3. USER_HZ is 100 on Linux.
    Some((ticks(11)? + ticks(12)?) * 10)
}

fn event(i: u64, model: u64, slice: &SliceKeys) -> LocalizationEvent {
    let ok = i % 10 != 3;
    LocalizationEvent {
        model: ModelVersion(model),
        slice: slice.clone(),
        outcome: if ok {
            Outcome::Localized {
                source: PoseSource::Visual,
            }
        } else {
            Outcome::Failed {
                reason: FailureReason::TooFewMatches,
            }
        },
        confidence: if ok { 0.8 } else { 0.0 },
        inliers: (40 + i % 60) as u32,
        timings: StageTimings {
            preprocess_us: 800,
            detect_us: 2100,
            describe_us: 3300,
            match_us: 1200,
            solve_us: 400,
            total_us: 7800,
        },
    }
}

fn slice_keys(device_class: &Label) -> SliceKeys {
    SliceKeys {
        device_class: device_class.clone(),
        app_version: Label::new("sim-1.0").unwrap_or_else(|_| device_class.clone()),
        backend: ComputeBackend::Cpu,
        region: None,
    }
}

/// Patches per simulated frame that both models describe in a shadow run.
const SHADOW_PATCHES: usize = 4;

/// Below this mean descriptor agreement (cosine) the candidate is taken not to localise a frame
/// the baseline localised.
const SHADOW_AGREEMENT: f32 = 0.9;

/// The shadow side of the simulated frame path. The simulation has no scene, so "localised"
/// is simulated: the baseline localises the frames the simulated event says it does, and the
/// candidate those of them on which its descriptors of the frame's patches agree with the
/// baseline's (mean cosine ≥ [`SHADOW_AGREEMENT`]). The latencies are real: both models run on
/// the same [`SHADOW_PATCHES`] patches per frame. There are no poses, so the pose differences
/// are reported as 0.
#[derive(Default)]
struct ShadowRun {
    window: Option<ShadowWindow>,
    scratch: PairScratch,
    patches: Vec<u8>,
}

impl ShadowRun {
    /// Runs frame `i` through both models if a candidate is installed; returns a report when a
    /// window is full or the model pair changed.
    fn frame(
        &mut self,
        i: u64,
        baseline: Option<&LoadedModel>,
        candidate: Option<&LoadedModel>,
        ev: &LocalizationEvent,
        window_len: usize,
        slice: &SliceKeys,
    ) -> Option<sextant_proto::ShadowReport> {
        let (Some(b), Some(c)) = (baseline, candidate) else {
            return self.flush(slice);
        };
        let mut report = None;
        if self
            .window
            .as_ref()
            .is_some_and(|w| w.pair() != (b.version, c.version))
        {
            report = self.flush(slice);
        }
        let w = self
            .window
            .get_or_insert_with(|| ShadowWindow::new(b.version, c.version));
        self.patches.clear();
        self.patches
            .extend((0..SHADOW_PATCHES * PATCH_PIXELS).map(|k| {
                let k = k as u64;
                ((k * 7 + i * 13 + (k / 32) * (i % 5 + 1)) % 251) as u8
            }));
        let baseline_localized = matches!(ev.outcome, Outcome::Localized { .. });
        match describe_pair(
            &b.model,
            &c.model,
            &self.patches,
            SHADOW_PATCHES,
            &mut self.scratch,
        ) {
            Ok(run) => w.push(ShadowSample {
                baseline_localized,
                candidate_localized: baseline_localized && run.agreement >= SHADOW_AGREEMENT,
                translation_diff_m: 0.0,
                rotation_diff_rad: 0.0,
                baseline_us: run.baseline_us,
                candidate_us: run.candidate_us,
            }),
            Err(e) => tracing::warn!(error = %e, "shadow run failed"),
        }
        if w.frames() >= window_len {
            return report.or_else(|| self.flush(slice));
        }
        report
    }

    /// The report of the frames not yet reported.
    fn flush(&mut self, slice: &SliceKeys) -> Option<sextant_proto::ShadowReport> {
        self.window.take().and_then(|mut w| w.take_report(slice))
    }
}

/// Runs a simulated device until idle (with `exit_when_idle`), `run_for`, or SIGINT.
pub fn run_blocking(
    cfg: SimConfig,
    emit: Arc<dyn Fn(SimEvent) + Send + Sync>,
) -> Result<SimSummary> {
    std::fs::create_dir_all(&cfg.agent.dir)
        .map_err(|e| AgentError::io("create agent directory", &cfg.agent.dir, e))?;
    let queue = Arc::new(Mutex::new(TelemetryQueue::open(
        &cfg.agent.dir.join("queue"),
        &cfg.agent.device_id,
        cfg.queue.clone(),
    )?));
    let slot = Arc::new(ModelSlot::new());
    let shadow_slot = Arc::new(ModelSlot::new());
    let counters = Arc::new(AgentCounters::default());
    let new_events = Arc::new(Notify::new());
    let stop = Arc::new(Notify::new());
    let emit_agent = Arc::clone(&emit);
    let agent = Agent::open(
        cfg.agent.clone(),
        Arc::clone(&queue),
        Arc::clone(&slot),
        Arc::clone(&shadow_slot),
        Arc::clone(&counters),
        Arc::clone(&new_events),
        Box::new(move |e| emit_agent(SimEvent::Agent(e))),
    )?;
    let floor_at_start = agent.floor();

    // The frame path and the drain, on their own threads (the camera thread never waits).
    let ring: &'static mut Handoff<RecordBody, RING> = Box::leak(Box::default());
    let (mut tap, mut drain) = ring.split();
    let generated_all = Arc::new(AtomicBool::new(cfg.events_total == 0));
    let drained_all = Arc::new(AtomicBool::new(cfg.events_total == 0));
    let appended = Arc::new(AtomicU64::new(0));
    // The frame thread's own CPU time, stored as it ends (u64::MAX: unknown or not ended).
    let producer_cpu_ns = Arc::new(AtomicU64::new(u64::MAX));
    let class = Label::new(cfg.agent.device_class.clone())?;
    {
        let slot = Arc::clone(&slot);
        let shadow_slot = Arc::clone(&shadow_slot);
        let generated_all = Arc::clone(&generated_all);
        let producer_cpu_ns = Arc::clone(&producer_cpu_ns);
        let (total, rate) = (cfg.events_total, cfg.events_per_sec);
        let window_len = cfg.shadow_window.max(1) as usize;
        std::thread::Builder::new()
            .name("sim-frames".into())
            .spawn(move || {
                let start = Instant::now();
                let mut shadow = ShadowRun::default();
                let slice = slice_keys(&class);
                for i in 0..total {
                    let model = slot.current();
                    let version = model.as_ref().map_or(0, |m| m.version);
                    let ev = event(i, version, &slice);
                    let report = shadow.frame(
                        i,
                        model.as_deref(),
                        shadow_slot.current().as_deref(),
                        &ev,
                        window_len,
                        &slice,
                    );
                    let mut push = |body: RecordBody| {
                        if rate == 0 {
                            while !tap.has_room() {
                                std::thread::sleep(RING_FULL_WAIT);
                            }
                        }
                        tap.push(body);
                    };
                    if let Some(r) = report {
                        push(RecordBody::Shadow(r));
                    }
                    if rate != 0 && i.is_multiple_of(64) {
                        let due = Duration::from_secs_f64(i as f64 / rate as f64);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    push(RecordBody::Localization(ev));
                }
                if let Some(r) = shadow.flush(&slice) {
                    while !tap.has_room() {
                        std::thread::sleep(RING_FULL_WAIT);
                    }
                    tap.push(RecordBody::Shadow(r));
                }
                if let Some(ns) = thread_cpu_ns() {
                    producer_cpu_ns.store(ns, Ordering::Relaxed);
                }
                generated_all.store(true, Ordering::Release);
            })
            .map_err(|e| AgentError::io("spawn frame thread", Path::new("-"), e))?;
    }
    {
        let queue = Arc::clone(&queue);
        let generated_all = Arc::clone(&generated_all);
        let drained_all = Arc::clone(&drained_all);
        let appended = Arc::clone(&appended);
        let new_events = Arc::clone(&new_events);
        let emit = Arc::clone(&emit);
        let total = cfg.events_total;
        std::thread::Builder::new()
            .name("sim-drain".into())
            .spawn(move || {
                loop {
                    let done = generated_all.load(Ordering::Acquire);
                    let (n, was_empty) = {
                        let mut q = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let was_empty = q.stats().items == 0;
                        (
                            drain.drain_records_into(&mut q, DRAIN_BATCH, unix_ms()),
                            was_empty,
                        )
                    };
                    match n {
                        Ok(n) if n > 0 => {
                            appended.fetch_add(n as u64, Ordering::Relaxed);
                            // Wake the session only if it may be idle for want of records: while
                            // the queue holds some, it comes back for more by itself (after each
                            // acknowledgement, or at its next tick).
                            if was_empty {
                                new_events.notify_one();
                            }
                            if n < DRAIN_BATCH && !done {
                                // Not backlogged: let a batch gather rather than wake (and
                                // write) per handful of events.
                                std::thread::sleep(DRAIN_GATHER);
                            }
                            continue;
                        }
                        Ok(_) => {
                            // Nothing to append: sync what a group-sync policy left pending.
                            let synced = queue
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .sync_if_due();
                            if let Err(e) = synced {
                                tracing::error!(error = %e, "telemetry fsync failed");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "telemetry append failed"),
                    }
                    if done && total > 0 {
                        let st = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .stats();
                        drained_all.store(true, Ordering::Release);
                        emit(SimEvent::Generated {
                            appended: appended.load(Ordering::Relaxed),
                            dropped: st.dropped.by_handoff,
                        });
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .map_err(|e| AgentError::io("spawn drain thread", Path::new("-"), e))?;
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::io("start the async runtime", Path::new("-"), e))?;
    let started = Instant::now();
    let result = rt.block_on(async {
        let stop2 = Arc::clone(&stop);
        let task = tokio::spawn(agent.run(stop2));
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| AgentError::io("install SIGINT handler", Path::new("-"), e))?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| AgentError::io("install SIGTERM handler", Path::new("-"), e))?;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
            if task.is_finished() {
                break;
            }
            if cfg.run_for.is_some_and(|d| started.elapsed() >= d) {
                break;
            }
            if cfg.exit_when_idle
                && drained_all.load(Ordering::Acquire)
                && counters.model_settled.load(Ordering::Relaxed)
                && queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .stats()
                    .items
                    == 0
            {
                break;
            }
        }
        stop.notify_one();
        match task.await {
            Ok(r) => r,
            Err(e) => Err(AgentError::Network(format!("agent task: {e}"))),
        }
    });
    result?;
    let st = {
        let mut q = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.flush_acks()?;
        q.stats()
    };
    let floor = crate::fsutil::read_state_file(&cfg.agent.dir.join("agent.state"))?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(floor_at_start, u64::from_le_bytes);
    Ok(SimSummary {
        appended: appended.load(Ordering::Relaxed),
        acked: counters.acked.load(Ordering::Relaxed),
        duplicates: counters.duplicates.load(Ordering::Relaxed),
        queued: st.items,
        dropped: [
            st.dropped.by_items,
            st.dropped.by_bytes,
            st.dropped.by_age,
            st.dropped.by_handoff,
        ],
        active: slot.version(),
        shadow: shadow_slot.version(),
        floor,
        cpu_ms: process_cpu_ms(),
        producer_cpu_ms: Some(producer_cpu_ns.load(Ordering::Relaxed))
            .filter(|ns| *ns != u64::MAX)
            .map(|ns| (ns + 500_000) / 1_000_000),
        download_bytes: counters.download_bytes.load(Ordering::Relaxed),
        read_from: [st.read_from_memory, st.read_from_disk],
    })
}

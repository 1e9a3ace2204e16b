//! End to end with real processes over loopback QUIC: model delivery to a fleet, resumed
//! downloads, and telemetry that survives killing either side.

mod fleet_support;

use std::collections::BTreeSet;

use fleet_support::{Fleet, free_port, model_variant, secs, serial, shipped_model};

/// Backend + five agents: the published model reaches all five (each activates it after its
/// self-check), and every event each agent produced is stored exactly once.
#[test]
fn a_published_model_reaches_five_agents_and_every_event_is_stored_once() {
    let _g = serial();
    let fleet = Fleet::new();
    fleet.publish(&shipped_model(), 1, true);
    let (_backend, addr) = fleet.backend(0, &[]);
    let ids: Vec<String> = (0..5).map(|i| format!("dev-{i}")).collect();
    let mut agents: Vec<_> = ids
        .iter()
        .map(|id| {
            fleet.device(id);
            fleet.agent(
                id,
                addr,
                &[
                    "--events",
                    "400",
                    "--rate",
                    "0",
                    "--batch",
                    "100",
                    "--exit-when-idle",
                ],
            )
        })
        .collect();
    for a in &mut agents {
        a.wait_success(secs(60));
        let s = a.summary();
        assert_eq!(s["active"], 1, "{s}");
        assert_eq!(s["appended"], 400, "{s}");
        assert_eq!(s["acked"], 400, "{s}");
        assert_eq!(s["queued"], 0, "{s}");
        assert_eq!(s["dropped"]["by_handoff"], 0, "{s}");
        assert!(
            a.events()
                .iter()
                .any(|e| e["event"] == "activated" && e["version"] == 1)
        );
    }
    for id in &ids {
        let seqs = fleet.stored(id);
        assert_eq!(seqs.len(), 400, "{id}");
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(unique.len(), 400, "{id}: stored twice");
    }

    // A second release reaches the running fleet without a restart: rerun the agents (their
    // state folders keep v1), publish v2, and every agent switches.
    fleet.publish(&model_variant("v2", 64), 2, true);
    let mut agents: Vec<_> = ids
        .iter()
        .map(|id| fleet.agent(id, addr, &["--exit-when-idle"]))
        .collect();
    for a in &mut agents {
        a.wait_success(secs(60));
        assert_eq!(a.summary()["active"], 2);
        assert_eq!(a.summary()["floor"], 2);
    }
}

/// An agent SIGKILLed in the middle of a download resumes from its last durable checkpoint and
/// installs a byte-identical model.
#[test]
fn an_agent_killed_mid_download_resumes_where_it_stopped() {
    let _g = serial();
    let fleet = Fleet::new();
    let big = model_variant("big", 6 << 20);
    fleet.publish(&big, 1, true);
    let (_backend, addr) = fleet.backend(0, &[]);
    fleet.device("slow");
    let mut a = fleet.agent(
        "slow",
        addr,
        &[
            "--max-download-rate",
            "3000000",
            "--checkpoint-bytes",
            "262144",
        ],
    );
    let started = a.wait_event("download_started", secs(30));
    assert_eq!(started["offset"], 0);
    let progress = a.wait_for("a checkpoint past 1 MiB", secs(30), |v| {
        v["event"] == "download_progress" && v["offset"].as_u64().unwrap_or(0) >= 1 << 20
    });
    let durable = progress["offset"].as_u64().unwrap();
    a.kill9();

    let mut b = fleet.agent("slow", addr, &["--exit-when-idle"]);
    let resumed = b.wait_event("download_started", secs(30));
    let offset = resumed["offset"].as_u64().unwrap();
    assert!(
        offset >= durable && offset < big.len() as u64,
        "resumed at {offset}, last durable checkpoint {durable}"
    );
    b.wait_success(secs(60));
    assert_eq!(b.summary()["active"], 1);
    let received = b.summary()["download_bytes"].as_u64().unwrap();
    assert!(
        received < big.len() as u64,
        "the restarted agent fetched {received} bytes of {}",
        big.len()
    );
}

/// The backend is SIGKILLed while agents upload and restarted on the same port and data: no
/// event is lost and none is stored twice (every event counted end to end).
#[test]
fn the_backend_killed_mid_upload_loses_no_event_and_stores_none_twice() {
    let _g = serial();
    let fleet = Fleet::new();
    fleet.publish(&shipped_model(), 1, true);
    let port = free_port();
    let (mut backend, addr) = fleet.backend(port, &[]);
    let ids = ["up-0", "up-1", "up-2"];
    let mut agents: Vec<_> = ids
        .iter()
        .map(|id| {
            fleet.device(id);
            fleet.agent(
                id,
                addr,
                &[
                    "--events",
                    "3000",
                    "--rate",
                    "1500",
                    "--batch",
                    "50",
                    "--exit-when-idle",
                ],
            )
        })
        .collect();
    // Let uploads flow, then kill the backend in the middle of them.
    agents[0].wait_event("uploaded", secs(30));
    std::thread::sleep(std::time::Duration::from_millis(300));
    backend.kill9();
    let stored_at_kill: usize = ids.iter().map(|id| fleet.stored(id).len()).sum();
    assert!(
        stored_at_kill < 9000,
        "the kill came too late to test anything"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (_backend, _) = fleet.backend(port, &[]);
    for a in &mut agents {
        a.wait_success(secs(90));
    }
    for (id, a) in ids.iter().zip(&agents) {
        let s = a.summary();
        let generated = 3000;
        assert_eq!(s["appended"], generated, "{id}: {s}");
        assert_eq!(s["dropped"]["by_handoff"], 0, "{id}: {s}");
        assert_eq!(s["queued"], 0, "{id}: {s}");
        let seqs = fleet.stored(id);
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(unique.len(), seqs.len(), "{id}: an event was stored twice");
        assert_eq!(seqs.len(), generated, "{id}: events lost");
    }
}

/// An agent SIGKILLed with events in its disk queue (backend unreachable) delivers every one of
/// them after it restarts.
#[test]
fn an_agent_killed_with_events_on_disk_delivers_them_after_restart() {
    let _g = serial();
    let fleet = Fleet::new();
    fleet.publish(&shipped_model(), 1, true);
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    fleet.device("offline");
    // No backend yet: the events can only go to disk.
    let mut a = fleet.agent("offline", addr, &["--events", "700", "--rate", "0"]);
    let g = a.wait_event("generated", secs(30));
    assert_eq!(g["appended"], 700);
    a.kill9();
    assert!(fleet.stored("offline").is_empty());

    let (_backend, addr) = fleet.backend(port, &[]);
    let mut b = fleet.agent("offline", addr, &["--exit-when-idle"]);
    b.wait_success(secs(60));
    assert_eq!(b.summary()["acked"], 700);
    assert_eq!(fleet.stored("offline").len(), 700);
}

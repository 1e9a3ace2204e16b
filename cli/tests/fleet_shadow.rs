//! End to end with real processes over loopback QUIC: a shadow candidate named in the
//! assignment is downloaded, verified and loaded beside the active model without being
//! activated; the simulated device runs both on its frames and its shadow reports reach the
//! backend, which shows them in `sextant backend status`.

mod fleet_support;

use std::time::{Duration, Instant};

use fleet_support::{Fleet, model_variant, secs, serial, shipped_model};

#[test]
fn a_shadow_candidate_runs_beside_the_active_model_and_is_reported() {
    let _g = serial();
    let fleet = Fleet::new();
    fleet.publish(&shipped_model(), 1, true);
    fleet.publish(&model_variant("candidate", 10), 2, false);
    let (_backend, addr) = fleet.backend(0, &[]);
    fleet.device("shadowed");
    let mut a = fleet.agent(
        "shadowed",
        addr,
        &[
            "--events",
            "100000",
            "--rate",
            "300",
            "--batch",
            "50",
            "--sync-interval-ms",
            "150",
            "--shadow-window",
            "30",
        ],
    );
    a.wait_for("v1 active", secs(30), |v| {
        v["event"] == "activated" && v["version"] == 1
    });

    fleet.assign_all_with_shadow(1, 2);
    a.wait_for("v2 installed as shadow", secs(30), |v| {
        v["event"] == "shadow_installed" && v["version"] == 2
    });

    // Shadow reports arrive and the backend aggregates them.
    let deadline = Instant::now() + secs(30);
    let line = loop {
        let status = fleet.status();
        if let Some(l) = status.lines().find(|l| l.starts_with("shadow v2 vs v1:")) {
            let frames: u64 = l
                .split(" frames")
                .next()
                .and_then(|h| h.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if frames >= 60 {
                break l.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no shadow reports:\n{status}");
        std::thread::sleep(Duration::from_millis(300));
    };
    // The candidate is the same network as the baseline (only an ignored ONNX doc string
    // differs), so it agrees with it on every frame.
    assert!(line.contains("from 1 device(s)"), "{line}");
    let pct = |who: &str| -> String {
        line.split(&format!("{who} "))
            .nth(1)
            .and_then(|r| r.split(" %").next())
            .unwrap_or_default()
            .to_owned()
    };
    let baseline = pct("localized: baseline");
    assert!(!baseline.is_empty(), "{line}");
    assert_eq!(pct("candidate"), baseline, "{line}");
    assert_eq!(pct("both"), baseline, "{line}");

    // Dropping the candidate from the assignment drops it on the device.
    fleet.assign_all(1);
    a.wait_for("shadow cleared", secs(30), |v| {
        v["event"] == "shadow_cleared" && v["version"] == 2
    });
    a.interrupt();
    a.wait_success(secs(20));
    let s = a.summary();
    assert_eq!(s["active"], 1, "{s}");
    assert_eq!(s["shadow"], serde_json::Value::Null, "{s}");
    let activated: Vec<_> = a
        .events()
        .into_iter()
        .filter(|e| e["event"] == "activated")
        .map(|e| e["version"].clone())
        .collect();
    assert_eq!(
        activated,
        vec![serde_json::json!(1)],
        "the candidate was never activated"
    );
}

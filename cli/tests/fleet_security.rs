//! End to end with real processes over loopback QUIC: what a device refuses (tampered bytes,
//! bad or missing signatures, expired metadata, version rollback, a model that fails its
//! self-check) while the old model keeps running, and what the backend refuses (clients without
//! a valid certificate, revoked devices, malformed frames) while it keeps serving others.

mod fleet_support;

use std::time::{SystemTime, UNIX_EPOCH};

use fleet_support::{Fleet, model_variant, secs, serial, shipped_model};
use sextant_backend::pki::ReleaseKey;
use sextant_backend::registry::{PublishRequest, register, sign_metadata};
use sextant_backend::store::DataDir;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn request(bytes: &[u8], version: u64, expires_at_s: u64) -> PublishRequest<'_> {
    PublishRequest {
        bytes,
        family: "descriptor",
        version,
        floor: version,
        issued_at_s: now_s() - 3600,
        expires_at_s,
    }
}

#[test]
fn bad_models_are_refused_and_the_old_model_keeps_running() {
    let _g = serial();
    let fleet = Fleet::new();
    let key = ReleaseKey::load(&fleet.release_key()).unwrap();
    let week = now_s() + 7 * 86_400;
    fleet.publish(&model_variant("v4", 10), 4, false);
    fleet.publish(&shipped_model(), 5, true);
    {
        let mut data = DataDir::open(&fleet.data()).unwrap();
        // 6: expired metadata (correctly signed).
        let b6 = model_variant("v6", 10);
        let s6 = sign_metadata(&key, &request(&b6, 6, now_s() - 60)).unwrap();
        register(&mut data, &b6, &s6).unwrap();
        // 7: signed by a key the device does not pin.
        let other = ReleaseKey::generate(&fleet.path("other-key")).unwrap();
        let b7 = model_variant("v7", 10);
        let s7 = sign_metadata(&other, &request(&b7, 7, week)).unwrap();
        register(&mut data, &b7, &s7).unwrap();
        // 8: no signature (all zero bytes where it belongs).
        let b8 = model_variant("v8", 10);
        let mut s8 = sign_metadata(&key, &request(&b8, 8, week)).unwrap();
        s8.signature.0 = [0; 64];
        register(&mut data, &b8, &s8).unwrap();
        // 9: a signed claim that does not match the bytes (length grown by one byte on the
        // metadata side: the device must refuse the download, not install it).
        let b9 = model_variant("v9", 10);
        let mut s9 = sign_metadata(&key, &request(&b9, 9, week)).unwrap();
        s9.metadata.sha256.0[0] ^= 1;
        s9.signature.0 = key.sign(&s9.metadata.canonical_bytes());
        register(&mut data, &b9, &s9).unwrap();
        // 10: properly signed garbage: downloads and verifies, then fails to load.
        let b10 = b"this is not an ONNX model".repeat(100);
        let s10 = sign_metadata(&key, &request(&b10, 10, week)).unwrap();
        register(&mut data, &b10, &s10).unwrap();
    }
    let (_backend, addr) = fleet.backend(0, &[]);
    fleet.device("victim");
    let a = fleet.agent(
        "victim",
        addr,
        &[
            "--sync-interval-ms",
            "150",
            "--events",
            "200",
            "--rate",
            "100",
        ],
    );
    a.wait_for("v5 active", secs(30), |v| {
        v["event"] == "activated" && v["version"] == 5
    });

    let expect_refused = |version: u64, needle: &str| {
        fleet.assign_all(version);
        let r = a.wait_for(&format!("refusal of v{version}"), secs(30), |v| {
            (v["event"] == "refused" || v["event"] == "rolled_back")
                && (v["version"] == version || v["from"] == version)
        });
        let reason = r["reason"].as_str().unwrap_or_default().to_owned();
        assert!(
            reason.contains(needle),
            "v{version} refused for {reason:?}, expected {needle:?}"
        );
        r
    };
    expect_refused(6, "expired");
    expect_refused(7, "signature");
    expect_refused(8, "signature");
    expect_refused(4, "below the floor");
    expect_refused(9, "sha256");
    let r = expect_refused(10, "self-check");
    assert_eq!(r["event"], "rolled_back");
    assert_eq!(r["to"], 5);

    // Through all of it the device kept running version 5 and never activated anything else.
    let mut a = a;
    a.interrupt();
    a.wait_success(secs(20));
    let s = a.summary();
    assert_eq!(s["active"], 5, "{s}");
    assert_eq!(s["floor"], 5, "{s}");
    let activated: Vec<_> = a
        .events()
        .into_iter()
        .filter(|e| e["event"] == "activated")
        .map(|e| e["version"].clone())
        .collect();
    assert_eq!(activated, vec![serde_json::json!(5)]);
}

/// An attacker with write access to the backend's data directory. First they flip a byte of a
/// published model's blob in place: the backend verifies blobs against their name when it reads
/// them and refuses to serve it (the device reports the failed download and keeps its model).
/// Then they also rewrite the model's database row to name a tampered blob (the signed metadata
/// untouched, since they do not hold the release key): the backend serves those bytes, and the
/// device refuses them against the signed SHA-256. That refusal is persisted: after a restart
/// the device does not download the known-bad release again.
#[test]
fn blobs_tampered_on_the_backends_disk_are_refused_and_remembered() {
    let _g = serial();
    let fleet = Fleet::new();
    let key = ReleaseKey::load(&fleet.release_key()).unwrap();
    let week = now_s() + 7 * 86_400;
    fleet.publish(&shipped_model(), 5, true);
    let b11 = model_variant("v11", 10);
    fleet.publish(&b11, 11, false);
    let b12 = model_variant("v12", 10);
    {
        let mut data = DataDir::open(&fleet.data()).unwrap();
        // v11: one byte of the stored blob flipped in place.
        let sha11 = data.blobs.put(&b11).unwrap();
        let path = data.blobs.path(&sha11);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        // v12: genuine signed metadata, but the row (and blob store) hold tampered bytes of the
        // same length — the state an attacker who edits both `sextant.db` and `blobs/` leaves.
        let s12 = sign_metadata(&key, &request(&b12, 12, week)).unwrap();
        let mut t12 = b12.clone();
        let mid = t12.len() / 2;
        t12[mid] ^= 0x5a;
        register(&mut data, &t12, &s12).unwrap();
    }
    let (_backend, addr) = fleet.backend(0, &[]);
    fleet.device("victim");
    let args = ["--sync-interval-ms", "150"];
    let mut a = fleet.agent("victim", addr, &args);
    a.wait_for("v5 active", secs(30), |v| {
        v["event"] == "activated" && v["version"] == 5
    });

    fleet.assign_all(11);
    let f = a.wait_for("v11 download refused by the server", secs(30), |v| {
        v["event"] == "download_failed" && v["version"] == 11
    });
    assert!(
        f["reason"].as_str().is_some_and(|r| r.contains("corrupt")),
        "{f}"
    );

    fleet.assign_all(12);
    let r = a.wait_for("v12 refused", secs(30), |v| {
        v["event"] == "refused" && v["version"] == 12
    });
    assert!(
        r["reason"].as_str().is_some_and(|r| r.contains("sha256")),
        "{r}"
    );
    a.interrupt();
    a.wait_success(secs(20));
    let s = a.summary();
    assert_eq!(s["active"], 5, "{s}");
    assert!(
        a.events()
            .iter()
            .all(|e| !(e["event"] == "activated" && e["version"] != 5)),
        "only v5 was ever activated"
    );

    // Restart: v12 is still assigned, and is not downloaded again.
    let mut b = fleet.agent(
        "victim",
        addr,
        &["--sync-interval-ms", "150", "--exit-when-idle"],
    );
    b.wait_success(secs(30));
    let ev = b.events();
    assert!(
        ev.iter()
            .any(|e| e["event"] == "assigned" && e["version"] == 12),
        "{ev:?}"
    );
    assert!(
        ev.iter().all(|e| e["event"] != "download_started"),
        "known-bad v12 fetched again: {ev:?}"
    );
    let s = b.summary();
    assert_eq!(s["download_bytes"], 0, "{s}");
    assert_eq!(s["active"], 5, "{s}");
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let _g = serial();
    let fleet = Fleet::new();
    fleet.publish(&shipped_model(), 1, true);
    let (_backend, addr) = fleet.backend(0, &[]);

    // A certificate from another CA.
    let rogue = Fleet::new();
    let rogue_dir = rogue.device("rogue");
    let mut r = fleet.agent_with("rogue", &rogue_dir, addr, &["--run-for-s", "1.5"]);
    r.wait_success(secs(20));
    let ev = r.events();
    assert!(ev.iter().all(|e| e["event"] != "connected"), "{ev:?}");
    assert!(ev.iter().any(|e| e["event"] == "disconnected"), "{ev:?}");

    // A valid certificate used to claim another device's id.
    let good = fleet.device("good");
    let mut m = fleet.agent_with("impostor", &good, addr, &["--run-for-s", "1.5"]);
    m.wait_success(secs(20));
    let ev = m.events();
    assert!(ev.iter().all(|e| e["event"] != "connected"), "{ev:?}");
    assert!(
        ev.iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.contains("200"))),
        "expected UNAUTHENTICATED (200): {ev:?}"
    );

    // A device that works, then is revoked while the server runs: refused from then on.
    let mut ok = fleet.agent("good", addr, &["--exit-when-idle"]);
    ok.wait_success(secs(30));
    assert_eq!(ok.summary()["active"], 1);
    fleet_support::run_ok(&[
        "backend",
        "revoke",
        "--ca",
        fleet.ca().to_str().unwrap(),
        "--device-id",
        "good",
    ]);
    let mut revoked = fleet.agent("good", addr, &["--run-for-s", "1.5"]);
    revoked.wait_success(secs(20));
    let ev = revoked.events();
    assert!(ev.iter().all(|e| e["event"] != "connected"), "{ev:?}");
}

/// A device revoked while its connection is open loses that connection promptly (the backend
/// re-checks open connections when `crl.pem` changes) and cannot reconnect, while another device
/// keeps uploading.
#[test]
fn revoking_a_device_cuts_its_open_connection() {
    let _g = serial();
    let fleet = Fleet::new();
    fleet.publish(&shipped_model(), 1, true);
    let (_backend, addr) = fleet.backend(0, &[]);
    fleet.device("doomed");
    fleet.device("bystander");
    let busy = ["--events", "100000", "--rate", "200", "--batch", "20"];
    let doomed = fleet.agent("doomed", addr, &busy);
    let bystander = fleet.agent("bystander", addr, &busy);
    doomed.wait_event("uploaded", secs(30));
    bystander.wait_event("uploaded", secs(30));

    let t0 = std::time::Instant::now();
    fleet_support::run_ok(&[
        "backend",
        "revoke",
        "--ca",
        fleet.ca().to_str().unwrap(),
        "--device-id",
        "doomed",
    ]);
    let d = doomed.wait_event("disconnected", secs(10));
    let cut_after = t0.elapsed();
    assert!(
        cut_after < std::time::Duration::from_secs(3),
        "cut after {cut_after:?}"
    );
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("200") || reason.contains("revoked"),
        "closed for {reason:?}"
    );
    // Nothing more from it is stored, and it never gets back in.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stored = fleet.stored("doomed").len();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(fleet.stored("doomed").len(), stored);
    let connects = doomed
        .events()
        .iter()
        .filter(|e| e["event"] == "connected")
        .count();
    assert_eq!(connects, 1, "the revoked device reconnected");
    // The other device is unaffected: what it stores keeps growing.
    let before = fleet.stored("bystander").len();
    let deadline = std::time::Instant::now() + secs(10);
    while fleet.stored("bystander").len() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the other device stopped uploading"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(bystander);
}

#[test]
fn malformed_frames_close_that_connection_and_the_server_keeps_serving_others() {
    let _g = serial();
    let fleet = Fleet::new();
    fleet.publish(&shipped_model(), 1, true);
    let (_backend, addr) = fleet.backend(0, &[]);
    let dev = fleet.device("steady");
    let hostile = fleet.device("hostile");
    // A well-behaved device uploading throughout.
    let steady = fleet.agent(
        "steady",
        addr,
        &["--events", "100000", "--rate", "200", "--batch", "20"],
    );
    steady.wait_event("uploaded", secs(30));

    let probe = |kind: &str| -> serde_json::Value {
        let out = fleet_support::run_ok(&[
            "agent",
            "probe",
            "--server",
            &addr.to_string(),
            "--ca",
            fleet.ca().join("ca.crt.pem").to_str().unwrap(),
            "--cert",
            hostile.join("device.crt.pem").to_str().unwrap(),
            "--key",
            hostile.join("device.key.pem").to_str().unwrap(),
            "--device-id",
            "hostile",
            "--kind",
            kind,
        ]);
        serde_json::from_str(out.trim()).unwrap()
    };
    for (kind, codes) in [
        ("random", &[101u64, 102][..]),
        ("oversized", &[102][..]),
        ("truncated-cbor", &[101][..]),
        ("truncated-frame", &[101][..]),
        ("wrong-message", &[103][..]),
    ] {
        let r = probe(kind);
        assert_eq!(r["connected"], true, "{kind}: {r}");
        let code = r["close_code"].as_u64();
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "{kind}: connection not closed with {codes:?}: {r}"
        );
        if let Some(f) = r["error_frame"].as_u64() {
            assert!(codes.contains(&f), "{kind}: error frame {f}: {r}");
        }
        // The steady device keeps getting acknowledgements.
        steady.wait_event("uploaded", secs(10));
    }
    // The control: a correct request keeps its connection.
    let r = probe("valid");
    assert_eq!(r["close_code"], serde_json::Value::Null, "{r}");
    let _ = dev;
}

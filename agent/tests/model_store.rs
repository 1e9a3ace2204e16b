//! The model store on real files: resumable downloads, atomic installs, verified reads,
//! activation with self-check and rollback, and rollback after a real crash during a self-check.

use std::process::Command;

use sextant_agent::AgentError;
use sextant_agent::store::{ModelRef, ModelStore};
use sha2::{Digest, Sha256};

fn model(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(salt))
        .collect()
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn download_resumes_from_its_checkpoint_after_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path()).unwrap();
    let blob = model(300_000, 1);
    let digest = sha(&blob);
    let mut d = store.begin_download(digest, blob.len() as u64).unwrap();
    assert_eq!(d.offset(), 0);
    d.write(&blob[..100_000]).unwrap();
    d.checkpoint().unwrap();
    d.write(&blob[100_000..150_000]).unwrap(); // not checkpointed: lost in the cut
    drop(d);
    drop(store);

    let store = ModelStore::open(dir.path()).unwrap();
    let mut d = store.begin_download(digest, blob.len() as u64).unwrap();
    assert_eq!(d.offset(), 100_000, "resumes at the checkpoint");
    d.write(&blob[100_000..]).unwrap();
    assert!(matches!(
        d.write(b"x"),
        Err(AgentError::DownloadOverrun { .. })
    ));
    assert_eq!(d.finish().unwrap(), digest);
    assert_eq!(store.read_blob(&digest).unwrap(), blob);
    let p = store.blob_path(&digest);
    let h = hex(&digest);
    assert!(p.ends_with(format!("blobs/sha256/{}/{}", &h[..2], &h[2..])));
    assert_eq!(
        std::fs::read_dir(dir.path().join("partial"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_damaged_prefix_restarts_the_download() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path()).unwrap();
    let blob = model(50_000, 2);
    let digest = sha(&blob);
    let mut d = store.begin_download(digest, blob.len() as u64).unwrap();
    d.write(&blob[..20_000]).unwrap();
    d.checkpoint().unwrap();
    drop(d);
    let part = dir
        .path()
        .join("partial")
        .join(format!("{}.part", hex(&digest)));
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[5_000] ^= 0xff;
    std::fs::write(&part, &bytes).unwrap();
    let mut d = store.begin_download(digest, blob.len() as u64).unwrap();
    assert_eq!(d.offset(), 0, "prefix failed verification");
    d.write(&blob).unwrap();
    d.finish().unwrap();
    assert_eq!(store.read_blob(&digest).unwrap(), blob);
}

#[test]
fn wrong_bytes_are_refused_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path()).unwrap();
    let blob = model(10_000, 3);
    let digest = sha(&blob);
    let mut d = store.begin_download(digest, blob.len() as u64).unwrap();
    let mut evil = blob.clone();
    evil[9_999] ^= 1;
    d.write(&evil).unwrap();
    assert!(matches!(d.finish(), Err(AgentError::HashMismatch { .. })));
    assert!(!store.has_blob(&digest));
    let mut d = store.begin_download(digest, blob.len() as u64).unwrap();
    assert_eq!(d.offset(), 0);
    d.write(&blob[..10]).unwrap();
    assert!(matches!(d.finish(), Err(AgentError::LengthMismatch { .. })));
    assert!(!store.has_blob(&digest));
}

#[test]
fn blobs_are_verified_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = ModelStore::open(dir.path()).unwrap();
    let blob = model(4096, 4);
    let digest = store.install_bytes(&blob).unwrap();
    let p = store.blob_path(&digest);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[100] ^= 4;
    std::fs::write(&p, &bytes).unwrap();
    assert!(matches!(
        store.read_blob(&digest),
        Err(AgentError::BlobCorrupt { .. })
    ));
    assert!(matches!(
        store.read_blob(&[0; 32]),
        Err(AgentError::BlobMissing(_))
    ));
}

#[test]
fn failed_self_check_rolls_back_to_last_known_good() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ModelStore::open(dir.path()).unwrap();
    let a = model(1000, 5);
    let b = model(1000, 6);
    let c = model(1000, 7);
    let ma = ModelRef {
        version: 1,
        sha256: store.install_bytes(&a).unwrap(),
    };
    let mb = ModelRef {
        version: 2,
        sha256: store.install_bytes(&b).unwrap(),
    };
    let mc = ModelRef {
        version: 3,
        sha256: store.install_bytes(&c).unwrap(),
    };

    store
        .activate(ma, |bytes| {
            if bytes == a {
                Ok(())
            } else {
                Err("wrong".into())
            }
        })
        .unwrap();
    assert_eq!(store.active(), Some(ma));
    store.activate(mb, |_| Ok(())).unwrap();
    assert_eq!(
        (store.active(), store.last_known_good()),
        (Some(mb), Some(ma))
    );

    let err = store
        .activate(mc, |_| Err("descriptor self-check: 3/50 matches".into()))
        .unwrap_err();
    assert!(matches!(err, AgentError::SelfCheckFailed { .. }), "{err}");
    assert_eq!(store.active(), Some(mb), "back on the last known good");
    assert_eq!(store.last_refused(), Some(mc));
    drop(store);
    let mut store = ModelStore::open(dir.path()).unwrap();
    assert_eq!(store.active(), Some(mb), "rollback is durable");

    // A later local rollback (failure rate spiked) after a good activation.
    store.activate(ma, |_| Ok(())).unwrap();
    assert_eq!(
        (store.active(), store.last_known_good()),
        (Some(ma), Some(mb))
    );
    assert_eq!(store.rollback().unwrap(), Some(mb));
    assert_eq!(store.active(), Some(mb));
    assert_eq!(store.last_refused(), Some(ma));
    assert_eq!(store.collect_garbage().unwrap(), 2);
    assert!(
        store.has_blob(&mb.sha256) && !store.has_blob(&ma.sha256) && !store.has_blob(&mc.sha256)
    );

    // A corrupt or missing blob is refused before anything changes.
    let missing = ModelRef {
        version: 9,
        sha256: [1; 32],
    };
    assert!(matches!(
        store.activate(missing, |_| Ok(())),
        Err(AgentError::BlobMissing(_))
    ));
    assert_eq!(store.active(), Some(mb));
}

#[test]
fn crash_during_self_check_rolls_back_on_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ModelStore::open(dir.path()).unwrap();
    let good = model(2000, 8);
    let bad = model(2000, 9);
    let mg = ModelRef {
        version: 1,
        sha256: store.install_bytes(&good).unwrap(),
    };
    let mb = ModelRef {
        version: 2,
        sha256: store.install_bytes(&bad).unwrap(),
    };
    store.activate(mg, |_| Ok(())).unwrap();
    drop(store);

    let status = Command::new(env!("CARGO_BIN_EXE_sextant-agent-helper"))
        .args([
            "crash-activate",
            dir.path().to_str().unwrap(),
            "2",
            &hex(&mb.sha256),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the helper must die in the self-check");

    let store = ModelStore::open(dir.path()).unwrap();
    assert_eq!(store.rolled_back_at_open(), Some(mb));
    assert_eq!(store.active(), Some(mg));
    assert_eq!(store.last_refused(), Some(mb));
    drop(store);
    let store = ModelStore::open(dir.path()).unwrap();
    assert_eq!(
        store.rolled_back_at_open(),
        None,
        "the rollback itself was durable"
    );
    assert_eq!(store.active(), Some(mg));
}

//! The `sextant` binary, run as a child process the way a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use sextant_sim::session::read_session;

fn sextant(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the sextant binary runs")
}

fn ok(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "sextant failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn scene_render_writes_a_session_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("session");
    ok(&sextant(
        &[
            "scene",
            "render",
            "--scene",
            "plaza",
            "--trajectory",
            "orbit:frames=3",
            "--width",
            "160",
            "--height",
            "120",
            "--format",
            "nv12",
            "--photometric",
            "night",
            "--seed",
            "9",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    ));
    let session = read_session(&out).expect("the written session is valid");
    assert_eq!(session.frames.len(), 3);
    assert_eq!(
        (session.camera.width(), session.camera.height()),
        (160, 120)
    );
    for frame in &session.frames {
        assert!(frame.pose.is_some(), "mapping frames carry poses");
        let up = frame.gravity.expect("frames carry gravity");
        assert!((up.norm() - 1.0).abs() < 1e-9);
        let gray = frame.load_gray().unwrap();
        assert_eq!((gray.width(), gray.height()), (160, 120));
        let depth = frame.load_depth().unwrap().expect("frames carry depth");
        let seen = depth.metres.iter().filter(|&&d| d > 0.0).count();
        assert!(seen > depth.metres.len() / 2, "most pixels see a surface");
    }
    assert!(out.join("render.json").is_file());
}

#[test]
fn demo_runs_from_an_empty_folder_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let stdout = ok(&sextant(
        &[
            "demo",
            "--map-frames",
            "12",
            "--query-frames",
            "4",
            "--slices",
            "nominal,outside",
        ],
        dir.path(),
    ));
    assert!(
        stdout.contains("nominal"),
        "the demo prints its table: {stdout}"
    );
    let out = dir.path().join("sextant-demo");
    let session = read_session(&out.join("query-nominal")).unwrap();
    assert_eq!(session.frames.len(), 4);
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(report.contains("<svg") && report.contains("nominal"));
    // The map it wrote is valid and the results file has one entry per frame.
    let map = sextant_runtime::map::Map::open(&out.join("map.sxmap")).unwrap();
    assert!(map.len() > 100, "{} landmarks", map.len());
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("query-nominal").join("results-cold.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results["format"], "sextant-localizations/1");
    assert_eq!(results["results"].as_array().unwrap().len(), 4);
    // Nothing localised in a place the map does not hold.
    let outside: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("query-outside").join("results-cold.json")).unwrap(),
    )
    .unwrap();
    for r in outside["results"].as_array().unwrap() {
        assert_ne!(r["status"], "localized", "{r}");
    }
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = sextant(
        &[
            "scene",
            "render",
            "--scene",
            "room",
            "--trajectory",
            "spiral:frames=2",
            "--out",
            "x",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spiral"),
        "stderr names the bad kind: {stderr}"
    );
    assert!(!dir.path().join("x").join("session.json").exists());
}

#[test]
fn pnp_solves_problem_files_written_by_eval() {
    let dir = tempfile::tempdir().unwrap();
    let problems = dir.path().join("problems");
    let results = dir.path().join("results");
    ok(&sextant(
        &[
            "eval",
            "pnp",
            "--count",
            "2",
            "--ns",
            "200",
            "--outliers",
            "0.5",
            "--no-extra",
            "--write",
            problems.to_str().unwrap(),
            "--write-only",
        ],
        dir.path(),
    ));
    ok(&sextant(
        &[
            "pnp",
            problems.to_str().unwrap(),
            "--out",
            results.to_str().unwrap(),
            "--reps",
            "1",
        ],
        dir.path(),
    ));
    let mut solved = 0;
    for entry in std::fs::read_dir(&problems).unwrap() {
        let path = entry.unwrap().path();
        let problem: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let result: serde_json::Value = serde_json::from_slice(
            &std::fs::read(results.join(path.file_name().unwrap())).unwrap(),
        )
        .unwrap();
        assert_eq!(result["ok"], true, "{}", path.display());
        let t_gt: Vec<f64> = serde_json::from_value(problem["gt"]["t"].clone()).unwrap();
        let t: Vec<f64> = serde_json::from_value(result["t"].clone()).unwrap();
        let err: f64 = t
            .iter()
            .zip(&t_gt)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = t_gt.iter().map(|a| a * a).sum::<f64>().sqrt();
        assert!(
            err / norm < 0.01,
            "relative translation error {}",
            err / norm
        );
        assert!(result["time_s"].as_f64().unwrap() > 0.0);
        solved += 1;
    }
    assert_eq!(solved, 2);
}

#[test]
fn map_build_info_cut_and_localize_work_on_rendered_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let render = |traj: &str, out: &str, seed: &str| {
        ok(&sextant(
            &[
                "scene",
                "render",
                "--scene",
                "room",
                "--trajectory",
                traj,
                "--seed",
                seed,
                "--out",
                out,
            ],
            dir.path(),
        ))
    };
    render("orbit:frames=10", "map-a", "1");
    render("walk:frames=10", "map-b", "2");
    render("walk:frames=3,height=1.45", "query", "3");
    let built = ok(&sextant(
        &["map", "build", "map-a", "map-b", "--out", "room.sxmap"],
        dir.path(),
    ));
    assert!(built.contains("landmarks"), "{built}");
    let info = ok(&sextant(&["map", "info", "room.sxmap"], dir.path()));
    assert!(info.contains("valid Sextant map"), "{info}");
    let cut = ok(&sextant(
        &[
            "map",
            "cut",
            "room.sxmap",
            "--center",
            "3,2.5",
            "--radius",
            "20",
            "--out",
            "part.sxmap",
        ],
        dir.path(),
    ));
    assert!(cut.contains("landmarks"), "{cut}");
    let said = ok(&sextant(
        &[
            "localize",
            "--map",
            "room.sxmap",
            "query",
            "--out",
            "results.json",
        ],
        dir.path(),
    ));
    assert!(said.contains("frames localised"), "{said}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["format"], "sextant-localizations/1");
    let results = results["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        assert!(r["time_s"].as_f64().unwrap() > 0.0);
        assert_eq!(r["backend"], "cpu");
        if r["status"] == "localized" {
            assert_eq!(r["R"].as_array().unwrap().len(), 3);
            assert!(r["inliers"].as_u64().unwrap() >= 25);
        }
    }
    assert!(
        results.iter().any(|r| r["status"] == "localized"),
        "{results:?}"
    );

    // A truncated map: a clear error and a failing exit status, for info and for localize.
    let bytes = std::fs::read(dir.path().join("room.sxmap")).unwrap();
    std::fs::write(dir.path().join("bad.sxmap"), &bytes[..bytes.len() / 2]).unwrap();
    for args in [
        &["map", "info", "bad.sxmap"][..],
        &["localize", "--map", "bad.sxmap", "query", "--out", "r.json"][..],
    ] {
        let out = sextant(args, dir.path());
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("truncated"), "{args:?}: {stderr}");
    }
    // A session without poses cannot be a mapping session.
    let out = sextant(&["map", "build", "nowhere", "--out", "x.sxmap"], dir.path());
    assert!(!out.status.success());
}

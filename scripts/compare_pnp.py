#!/usr/bin/env python3
"""Compare Sextant's PnP solver with PoseLib, pycolmap and OpenCV (USAC) on the same problem files.

Developer tool, not part of the product. Every solver runs single-threaded on exactly the same
`pnp-problem/1` files (see shared/formats/pnp.md) with the same inlier threshold; everything else
stays at each library's defaults (say so when quoting numbers). Results are written in the
common result format (one file per problem and solver) and a per-regime table is printed:
median `time_s` over all problems (failures included) and success rate (rotation < 1 degree and
relative translation < 1%).

Set up once (any Python >= 3.9):

    python3 -m venv /tmp/pnp-venv
    /tmp/pnp-venv/bin/pip install poselib pycolmap opencv-python-headless numpy

Typical run (problems from `sextant eval pnp --write`, Sextant results from `sextant pnp`):

    cargo build --release
    target/release/sextant eval pnp --count 50 --write /tmp/pnp/problems --write-only
    /tmp/pnp-venv/bin/python scripts/compare_pnp.py /tmp/pnp/problems --out /tmp/pnp/results \\
        --sextant target/release/sextant --reps 3

A solver whose wheel is missing is reported as unavailable and skipped.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Single-threaded everywhere (set before numpy / the solvers load their thread pools).
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402


def thread_cpu():
    return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID) if hasattr(time, "CLOCK_THREAD_CPUTIME_ID") else time.process_time()


def timed(fn, reps):
    """Runs fn() reps times; returns (last result, median wall s, median thread-cpu s)."""
    walls, cpus, out = [], [], None
    for _ in range(reps):
        c0, t0 = thread_cpu(), time.perf_counter()
        out = fn()
        t1, c1 = time.perf_counter(), thread_cpu()
        walls.append(t1 - t0)
        cpus.append(c1 - c0)
    return out, statistics.median(walls), statistics.median(cpus)


def result(R, t, inliers, time_s, cpu_s, reps, solver):
    ok = R is not None
    return {
        "R": np.asarray(R).tolist() if ok else None,
        "t": np.asarray(t).ravel().tolist() if ok else None,
        "inliers": [int(i) for i in inliers] if ok else [],
        "time_s": time_s,
        "cpu_s": cpu_s,
        "reps": reps,
        "ok": ok,
        "solver": solver,
    }


# ---------------------------------------------------------------------------------------------
# Solvers. Each takes the parsed problem and reps, returns a result dict.


def make_poselib():
    import poselib

    def solve(p, x2, x3, reps):
        c = p["camera"]
        cam = {"model": "PINHOLE", "width": c["width"], "height": c["height"], "params": [c["fx"], c["fy"], c["cx"], c["cy"]]}
        ropt = {"max_reproj_error": p["inlier_threshold_px"]}
        (pose, info), ts, cs = timed(lambda: poselib.estimate_absolute_pose(x2, x3, cam, ropt, {}), reps)
        mask = np.asarray(info.get("inliers", []), dtype=bool)
        if info.get("num_inliers", 0) < 3:
            return result(None, None, [], ts, cs, reps, "poselib")
        return result(pose.R, pose.t, np.flatnonzero(mask), ts, cs, reps, "poselib")

    return "poselib " + poselib.__version__, solve


def make_pycolmap():
    import pycolmap

    def solve(p, x2, x3, reps):
        c = p["camera"]
        cam = pycolmap.Camera(model="PINHOLE", width=c["width"], height=c["height"], params=[c["fx"], c["fy"], c["cx"], c["cy"]])
        est = pycolmap.AbsolutePoseEstimationOptions()
        est.ransac.max_error = p["inlier_threshold_px"]
        est.ransac.num_threads = 1
        ref = pycolmap.AbsolutePoseRefinementOptions()
        out, ts, cs = timed(lambda: pycolmap.estimate_and_refine_absolute_pose(x2, x3, cam, est, ref), reps)
        if out is None:
            return result(None, None, [], ts, cs, reps, "pycolmap")
        rig = out["cam_from_world"]
        R = rig.rotation.matrix()
        t = rig.translation
        return result(R, t, np.flatnonzero(np.asarray(out["inlier_mask"])), ts, cs, reps, "pycolmap")

    return "pycolmap " + pycolmap.__version__, solve


def make_opencv():
    import cv2

    cv2.setNumThreads(1)

    def solve(p, x2, x3, reps):
        c = p["camera"]
        K = np.array([[c["fx"], 0, c["cx"]], [0, c["fy"], c["cy"]], [0, 0, 1]], dtype=np.float64)
        params = cv2.UsacParams()
        params.threshold = p["inlier_threshold_px"]
        params.confidence = 0.9999
        params.maxIterations = 100000

        def run():
            try:
                r = cv2.solvePnPRansac(x3, x2, K, None, params=params)
            except cv2.error:
                return (False, None, None, None)
            # The USAC overload returns (ok, cameraMatrix, rvec, tvec, inliers).
            return (r[0], r[2], r[3], r[4]) if len(r) == 5 else r

        (ok, rvec, tvec, inl), ts, cs = timed(run, reps)
        if not ok or rvec is None:
            return result(None, None, [], ts, cs, reps, "opencv-usac")
        R, _ = cv2.Rodrigues(rvec)
        inl = [] if inl is None else np.asarray(inl).ravel()
        return result(R, tvec, inl, ts, cs, reps, "opencv-usac")

    return "opencv " + cv2.__version__ + " USAC", solve


# ---------------------------------------------------------------------------------------------


def errors(res, gt):
    if not res.get("ok") or res.get("R") is None:
        return math.inf, math.inf
    Re, Rg = np.asarray(res["R"]), np.asarray(gt["R"])
    c = np.clip((np.trace(Re @ Rg.T) - 1) / 2, -1, 1)
    te, tg = np.asarray(res["t"]), np.asarray(gt["t"])
    return math.degrees(math.acos(c)), float(np.linalg.norm(te - tg) / max(np.linalg.norm(tg), 1e-12))


def regime_of(p, path):
    meta = p.get("meta") or {}
    if "regime" in meta:
        return meta["regime"]
    stem = path.stem
    return stem.rsplit("_i", 1)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("problems", type=Path, help="folder of pnp-problem/1 files")
    ap.add_argument("--out", type=Path, required=True, help="results root (one sub-folder per solver)")
    ap.add_argument("--sextant", type=Path, help="sextant binary: also run `sextant pnp` (P3P and --gravity)")
    ap.add_argument("--solvers", default="poselib,pycolmap,opencv", help="comma list of python solvers")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per problem (median)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many problems per regime (0: all)")
    ap.add_argument("--json", type=Path, help="write the table as JSON here")
    args = ap.parse_args()

    files = sorted(args.problems.glob("*.json"))
    problems = []
    per_regime_count = {}
    for f in files:
        p = json.loads(f.read_text())
        if p.get("format") != "pnp-problem/1":
            continue
        reg = regime_of(p, f)
        if args.limit and per_regime_count.get(reg, 0) >= args.limit:
            continue
        per_regime_count[reg] = per_regime_count.get(reg, 0) + 1
        problems.append((f, reg, p))
    if not problems:
        sys.exit(f"no pnp-problem/1 files in {args.problems}")

    solvers = {}
    makers = {"poselib": make_poselib, "pycolmap": make_pycolmap, "opencv": make_opencv}
    for name in [s for s in args.solvers.split(",") if s]:
        try:
            label, fn = makers[name]()
            solvers[name] = fn
            print(f"# {name}: {label}", file=sys.stderr)
        except ImportError as e:
            print(f"# {name}: unavailable ({e})", file=sys.stderr)

    columns = []
    if args.sextant:
        for grav in (False, True):
            name = "sextant-up2p" if grav else "sextant-p3p"
            outdir = args.out / name
            outdir.mkdir(parents=True, exist_ok=True)
            # Feed exactly the selected files.
            listing = [str(f) for f, _, _ in problems]
            cmd = [str(args.sextant), "pnp", *listing, "--out", str(outdir), "--reps", str(args.reps)]
            if grav:
                cmd.append("--gravity")
            print("#", " ".join(cmd[:2]), f"<{len(listing)} files>", " ".join(cmd[2 + len(listing):]), file=sys.stderr)
            subprocess.run(cmd, check=True)
            columns.append(name)

    for name, fn in solvers.items():
        outdir = args.out / name
        outdir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        for f, _, p in problems:
            x2 = np.ascontiguousarray(p["points2d"], dtype=np.float64).reshape(-1, 2)
            x3 = np.ascontiguousarray(p["points3d"], dtype=np.float64).reshape(-1, 3)
            res = fn(p, x2, x3, args.reps)
            (outdir / f.name).write_text(json.dumps(res) + "\n")
        print(f"# {name}: {len(problems)} problems in {time.time() - t0:.1f} s", file=sys.stderr)
        columns.append(name)

    # Table.
    regimes = []
    for _, reg, _ in problems:
        if reg not in regimes:
            regimes.append(reg)
    table = {}
    for col in columns:
        for reg in regimes:
            times, succ, tot = [], 0, 0
            for f, r, p in problems:
                if r != reg:
                    continue
                rf = args.out / col / f.name
                res = json.loads(rf.read_text()) if rf.exists() else {"ok": False, "time_s": math.nan}
                times.append(res.get("time_s", math.nan))
                tot += 1
                if p.get("gt"):
                    dr, dt = errors(res, p["gt"])
                    succ += int(dr < 1.0 and dt < 0.01)
            table[(col, reg)] = (statistics.median(times) * 1e3, 100.0 * succ / max(tot, 1), tot)

    head = f"{'regime':<18}" + "".join(f" | {c[:14]:>14} {'succ':>6}" for c in columns)
    print(f"median time_s (ms) and success (rot < 1 deg, rel. transl. < 1%); reps={args.reps}; single thread")
    print(head)
    print("-" * len(head))
    for reg in regimes:
        row = f"{reg:<18}"
        for c in columns:
            ms, sr, _ = table[(c, reg)]
            row += f" | {ms:>14.3f} {sr:>5.1f}%"
        print(row)
    if args.json:
        args.json.write_text(
            json.dumps(
                [{"solver": c, "regime": r, "median_ms": table[(c, r)][0], "success_pct": table[(c, r)][1], "count": table[(c, r)][2]} for c in columns for r in regimes],
                indent=1,
            )
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Run OpenCV ORB and SIFT on the homography benchmark pairs written by
`sextant eval features --write DIR` and print the same table as `sextant eval features`.

Also times OpenCV's BFMatcher (knnMatch k=2, NORM_L2, one thread) on 1000 x 50,000 float32
descriptors, the comparison for the runtime's int8 brute-force matcher.

Definitions (same as the Rust side):
  repeatability@3: SuperPoint's — keypoints of each image whose position maps inside the other
      image are "visible"; a visible keypoint is repeated when a keypoint of the other image lies
      within 3 px of its mapped position; rep = repeated (both images) / visible (both images),
      averaged over pairs.
  matches: ratio test (default 0.9, on distances) + mutual nearest-neighbour check.
  MMA@t: per pair the fraction of matches with |H a - b| <= t px (0 if no match), averaged.

Usage:
  pip install opencv-python-headless numpy
  cargo run --release -- eval features --write /tmp/hpairs
  python3 scripts/compare_features.py /tmp/hpairs [--max-keypoints 1000] [--no-timing]
"""

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np


def apply_h(h, pts):
    if len(pts) == 0:
        return np.zeros((0, 2))
    p = np.hstack([pts, np.ones((len(pts), 1))]) @ h.T
    return p[:, :2] / p[:, 2:3]


def one_way(src, dst, h, size_dst, eps):
    if len(src) == 0:
        return 0, 0
    q = apply_h(h, src)
    w, hh = size_dst
    vis = (q[:, 0] >= 0) & (q[:, 1] >= 0) & (q[:, 0] < w) & (q[:, 1] < hh)
    q = q[vis]
    if len(q) == 0 or len(dst) == 0:
        return int(vis.sum()), 0
    d2 = ((q[:, None, :] - dst[None, :, :]) ** 2).sum(-1)
    return int(vis.sum()), int((d2.min(1) <= eps * eps).sum())


def repeatability(a, b, h, size_a, size_b, eps=3.0):
    va, ra = one_way(a, b, h, size_b, eps)
    vb, rb = one_way(b, a, np.linalg.inv(h), size_a, eps)
    vis = va + vb
    return (ra + rb) / vis if vis else 0.0


def match(da, db, norm, ratio):
    if da is None or db is None or len(da) == 0 or len(db) == 0:
        return []
    bf = cv2.BFMatcher(norm)
    fwd = bf.knnMatch(da, db, k=2)
    rev = bf.match(db, da)
    back = {m.queryIdx: m.trainIdx for m in rev}
    out = []
    for ms in fwd:
        if not ms:
            continue
        m = ms[0]
        if len(ms) > 1 and ratio < 1.0 and not (m.distance < ratio * ms[1].distance):
            continue
        if back.get(m.trainIdx) != m.queryIdx:
            continue
        out.append((m.queryIdx, m.trainIdx))
    return out


def mma(pa, pb, matches, h, ths=(1, 3, 5)):
    if not matches:
        return [0.0] * len(ths)
    a = np.array([pa[i] for i, _ in matches])
    b = np.array([pb[j] for _, j in matches])
    e = np.linalg.norm(apply_h(h, a) - b, axis=1)
    return [float((e <= t).mean()) for t in ths]


def pts_of(kps):
    # OpenCV keypoint coordinates have pixel centres at integers; ours at +0.5.
    return np.array([[k.pt[0] + 0.5, k.pt[1] + 0.5] for k in kps]).reshape(-1, 2)


def run_detector(name, det, norm, pairs, root, ratio):
    rows = {}
    cache = {}
    for p in pairs:
        if p["a"] not in cache:
            img = cv2.imread(os.path.join(root, p["a"]), cv2.IMREAD_GRAYSCALE)
            cache[p["a"]] = (img, *det.detectAndCompute(img, None))
        ia, ka, da = cache[p["a"]]
        ib = cv2.imread(os.path.join(root, p["b"]), cv2.IMREAD_GRAYSCALE)
        kb, db = det.detectAndCompute(ib, None)
        h = np.array(p["h"], dtype=np.float64).reshape(3, 3)
        pa, pb = pts_of(ka), pts_of(kb)
        size_a = (ia.shape[1], ia.shape[0])
        size_b = (ib.shape[1], ib.shape[0])
        rep = repeatability(pa, pb, h, size_a, size_b)
        ms = match(da, db, norm, ratio)
        acc = mma(pa, pb, ms, h)
        r = rows.setdefault(p["slice"], [0, 0.0, 0.0, 0.0, [0.0, 0.0, 0.0]])
        r[0] += 1
        r[1] += (len(ka) + len(kb)) / 2
        r[2] += rep
        r[3] += len(ms)
        for k in range(3):
            r[4][k] += acc[k]
    print(f"\n{name}")
    print(f"{'slice':<13} {'pairs':>5} {'kp':>7} {'rep@3':>7} {'matches':>8} {'MMA@1':>7} {'MMA@3':>7} {'MMA@5':>7}")
    tot = [0, 0.0, 0.0, 0.0, [0.0, 0.0, 0.0]]
    for s, r in rows.items():
        n = r[0]
        print(f"{s:<13} {n:>5} {r[1]/n:>7.0f} {r[2]/n:>7.3f} {r[3]/n:>8.1f} {r[4][0]/n:>7.3f} {r[4][1]/n:>7.3f} {r[4][2]/n:>7.3f}")
        tot[0] += n
        tot[1] += r[1]
        tot[2] += r[2]
        tot[3] += r[3]
        for k in range(3):
            tot[4][k] += r[4][k]
    n = max(tot[0], 1)
    print(f"{'all':<13} {tot[0]:>5} {tot[1]/n:>7.0f} {tot[2]/n:>7.3f} {tot[3]/n:>8.1f} {tot[4][0]/n:>7.3f} {tot[4][1]/n:>7.3f} {tot[4][2]/n:>7.3f}")


def bf_timing(repeats=3):
    cv2.setNumThreads(1)
    rng = np.random.default_rng(1)
    for dim in (64, 128):
        q = rng.integers(-128, 128, size=(1000, dim)).astype(np.float32)
        t = rng.integers(-128, 128, size=(50000, dim)).astype(np.float32)
        bf = cv2.BFMatcher(cv2.NORM_L2)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            bf.knnMatch(q, t, k=2)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        print(f"OpenCV {cv2.__version__} BFMatcher.knnMatch(k=2, NORM_L2), float32 1000 x 50000 x {dim}, "
              f"1 thread: median {times[len(times)//2]:.1f} ms (min {times[0]:.1f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs_dir")
    ap.add_argument("--max-keypoints", type=int, default=1000)
    ap.add_argument("--ratio", type=float, default=0.9)
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    with open(os.path.join(args.pairs_dir, "pairs.json")) as f:
        pairs = json.load(f)["pairs"]
    cv2.setNumThreads(1)
    run_detector("OpenCV ORB (nfeatures=%d, Hamming)" % args.max_keypoints,
                 cv2.ORB_create(nfeatures=args.max_keypoints), cv2.NORM_HAMMING, pairs, args.pairs_dir, args.ratio)
    run_detector("OpenCV SIFT (nfeatures=%d, L2)" % args.max_keypoints,
                 cv2.SIFT_create(nfeatures=args.max_keypoints), cv2.NORM_L2, pairs, args.pairs_dir, args.ratio)
    if not args.no_timing:
        bf_timing()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""onnxruntime's single-threaded int8 run of the descriptor model: does it accept the file, and
how long do 1000 patches take?  Compare with `cargo bench -p sextant-runtime --features tract
--bench descriptor` (same model, same kind of patches, same machine).

    pip install onnxruntime numpy
    python3 scripts/bench_onnxruntime.py [models/descriptor-v1/model.onnx] [--repeats 30]

By default it reads the patches the Rust bench writes
(`$TMPDIR/sextant-descriptor-bench-patches.u8`, 1000 patches), so both engines run on the same
input; without that file it generates its own. `--patches FILE` (raw u8, N*32*32) picks another
file, `--synthetic` forces generated patches, and `--dump FILE` writes the int8 descriptors to
compare with the runtime's bit for bit.
"""

import argparse
import os
import statistics
import tempfile
import sys
import time

import numpy as np
import onnxruntime as ort


def patches(n: int, seed: int = 1) -> np.ndarray:
    """Deterministic textured patches: sums of random gratings plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    out = np.empty((n, 1, 32, 32), np.uint8)
    for i in range(n):
        v = np.zeros((32, 32))
        for _ in range(4):
            a, b = rng.uniform(-0.4, 0.4, 2)
            v += np.sin(a * x + b * y + rng.uniform(0, 6.3))
        v = 128 + 28 * v + 10 * (rng.random((32, 32)) - 0.5)
        out[i, 0] = np.clip(v, 0, 255).astype(np.uint8)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="models/descriptor-v1/model.onnx")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--patches", help="raw u8 patch file (N*1024 bytes) instead of synthetic ones")
    ap.add_argument("--synthetic", action="store_true", help="generate patches even if the bench's file exists")
    ap.add_argument("--dump", help="write the int8 descriptors here")
    args = ap.parse_args()

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    print(f"onnxruntime {ort.__version__} accepted {args.model}: {inp.name} {inp.type} {inp.shape} -> {out.name} {out.type} {out.shape}")

    bench_file = os.path.join(tempfile.gettempdir(), "sextant-descriptor-bench-patches.u8")
    if not args.patches and not args.synthetic and os.path.exists(bench_file):
        args.patches = bench_file
    if args.patches:
        x = np.fromfile(args.patches, np.uint8).reshape(-1, 1, 32, 32)
        print(f"patches: {x.shape[0]} from {args.patches}")
    else:
        x = patches(args.n)
        print(f"patches: {x.shape[0]} generated")
    y = sess.run(None, {inp.name: x})[0]
    assert y.dtype == np.int8 and y.shape[0] == x.shape[0], (y.dtype, y.shape)
    norms = np.linalg.norm(y.astype(np.float64), axis=1)
    print(f"output {y.dtype} {y.shape}; L2 norms {norms.min():.1f}..{norms.max():.1f}")
    if args.dump:
        y.tofile(args.dump)

    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    per1000 = [t * 1000.0 / x.shape[0] * 1000.0 for t in times]
    cpu1000 = [t * 1000.0 / x.shape[0] * 1000.0 for t in cpu]
    print(f"single-threaded: median {statistics.median(per1000):.2f} ms per 1000 patches "
          f"(min {min(per1000):.2f}, {args.repeats} runs of {x.shape[0]})")
    # CPU time excludes the time other processes hold the core on a shared, loaded machine;
    # compare with the `cpu-time` lines of the Rust bench.
    print(f"cpu-time onnxruntime: {statistics.mean(cpu1000):.2f} ms CPU per 1000 patches "
          f"(mean of {args.repeats} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

//! Portable scalar kernels: the correctness oracle for every SIMD variant.

/// Reference GEMM: `c[i][j] = Σ_k a[i][k] · b[k][j]`, i32 accumulation. Slices must be exactly
/// `m·k`, `k·n` and `m·n` long (checked by the caller).
pub fn gemm(m: usize, n: usize, k: usize, a: &[i8], b: &[u8], c: &mut [i32]) {
    for i in 0..m {
        let crow = &mut c[i * n..(i + 1) * n];
        crow.fill(0);
        for (kk, &w) in a[i * k..(i + 1) * k].iter().enumerate() {
            let w = i32::from(w);
            for (acc, &x) in crow.iter_mut().zip(&b[kk * n..(kk + 1) * n]) {
                *acc += w * i32::from(x);
            }
        }
    }
}

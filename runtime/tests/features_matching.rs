//! Descriptor matching: every SIMD kernel equals the scalar reference bit for bit; ratio test,
//! mutual check and guided windows do what the docs say.

use sextant_runtime::features::homography::SplitMix64;
use sextant_runtime::features::matching::{NONE, knn2_scalar};
use sextant_runtime::features::{
    Best2, DescriptorSet, FeatureError, GuidedQuery, Kernel, Match, MatchConfig, Matcher,
    squared_l2,
};

fn random_desc(n: usize, dim: usize, seed: u64) -> Vec<i8> {
    let mut rng = SplitMix64::new(seed);
    (0..n * dim).map(|_| rng.next_u64() as i8).collect()
}

/// Descriptors from a small alphabet, so many distances tie.
fn tied_desc(n: usize, dim: usize, seed: u64) -> Vec<i8> {
    let mut rng = SplitMix64::new(seed);
    (0..n * dim)
        .map(|_| [-128i8, -1, 0, 1, 127][(rng.next_u64() % 5) as usize])
        .collect()
}

fn kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| k.is_supported())
        .collect()
}

#[test]
fn every_kernel_equals_the_scalar_reference() {
    let cases = [
        (1usize, 1usize, 32usize),
        (3, 5, 32),
        (17, 1027, 64), // train crosses the 512-descriptor chunk, with a tail
        (64, 600, 128),
        (9, 70, 96),
        (5, 33, 256),
    ];
    for (seed, &(nq, nt, dim)) in cases.iter().enumerate() {
        for make in [random_desc, tied_desc] {
            let q = make(nq, dim, seed as u64 * 2 + 1);
            let mut t = make(nt, dim, seed as u64 * 2 + 2);
            // Exact duplicates of a query in the train set, at two places.
            let d = dim.min(t.len());
            t[..d].copy_from_slice(&q[..d]);
            if nt > 3 {
                t[3 * dim..3 * dim + d].copy_from_slice(&q[..d]);
            }
            let (qs, ts) = (
                DescriptorSet::new(&q, dim).unwrap(),
                DescriptorSet::new(&t, dim).unwrap(),
            );
            let mut reference = vec![Best2::default(); nq];
            knn2_scalar(&qs, &ts, &mut reference);
            for k in kernels() {
                let mut m = Matcher::with_kernel(MatchConfig::default(), k).unwrap();
                let got = m.knn2(&qs, &ts).unwrap();
                assert_eq!(
                    got,
                    &reference[..],
                    "kernel {} case {nq}x{nt}x{dim}",
                    k.name()
                );
            }
        }
    }
}

#[test]
fn extreme_values_do_not_overflow() {
    let dim = 4096;
    let q = vec![-128i8; dim];
    let t: Vec<i8> = [vec![127i8; dim], vec![-128i8; dim]].concat();
    let (qs, ts) = (
        DescriptorSet::new(&q, dim).unwrap(),
        DescriptorSet::new(&t, dim).unwrap(),
    );
    for k in kernels() {
        let mut m = Matcher::with_kernel(MatchConfig::default(), k).unwrap();
        let b = m.knn2(&qs, &ts).unwrap()[0];
        assert_eq!((b.best, b.best_distance), (1, 0), "{}", k.name());
        assert_eq!(
            (b.second, b.second_distance),
            (0, 255 * 255 * 4096),
            "{}",
            k.name()
        );
    }
}

/// Descriptors `base + e_k * step`: distances are controlled exactly.
fn offset(base: &[i8], k: usize, step: i8) -> Vec<i8> {
    let mut v = base.to_vec();
    v[k] = v[k].saturating_add(step);
    v
}

#[test]
fn ratio_test_semantics() {
    let dim = 32;
    let base = vec![0i8; dim];
    let query = base.clone();
    // Train 0 at distance 8² = 64, train 1 at 10² = 100: ratio of distances 0.8.
    let train = [offset(&base, 0, 8), offset(&base, 1, 10)].concat();
    let (qs, ts) = (
        DescriptorSet::new(&query, dim).unwrap(),
        DescriptorSet::new(&train, dim).unwrap(),
    );
    let mut out = Vec::new();
    for k in kernels() {
        for (ratio, expect) in [(0.79f32, 0usize), (0.81, 1), (1.0, 1)] {
            let cfg = MatchConfig {
                ratio,
                mutual: false,
                max_distance: None,
            };
            let mut m = Matcher::with_kernel(cfg, k).unwrap();
            m.match_sets(&qs, &ts, &mut out).unwrap();
            assert_eq!(out.len(), expect, "ratio {ratio} kernel {}", k.name());
            if expect == 1 {
                assert_eq!(
                    out[0],
                    Match {
                        query: 0,
                        train: 0,
                        distance: 64
                    }
                );
            }
        }
        // A single train descriptor always passes the ratio test; max_distance still applies.
        let one = DescriptorSet::new(&train[..dim], dim).unwrap();
        let mut m = Matcher::with_kernel(
            MatchConfig {
                ratio: 0.5,
                mutual: false,
                max_distance: None,
            },
            k,
        )
        .unwrap();
        m.match_sets(&qs, &one, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        let mut m = Matcher::with_kernel(
            MatchConfig {
                ratio: 0.5,
                mutual: false,
                max_distance: Some(63),
            },
            k,
        )
        .unwrap();
        m.match_sets(&qs, &one, &mut out).unwrap();
        assert!(out.is_empty());
    }
}

#[test]
fn mutual_check_semantics() {
    let dim = 32;
    let base = vec![0i8; dim];
    // Queries 0 and 1 both prefer train 0; train 0 prefers query 1 (closer).
    let queries = [
        offset(&base, 0, 5),
        offset(&base, 0, 2),
        offset(&base, 5, 60),
    ]
    .concat();
    let train = [base.clone(), offset(&base, 5, 61), offset(&base, 9, 100)].concat();
    let (qs, ts) = (
        DescriptorSet::new(&queries, dim).unwrap(),
        DescriptorSet::new(&train, dim).unwrap(),
    );
    let mut out = Vec::new();
    for k in kernels() {
        let mut m = Matcher::with_kernel(
            MatchConfig {
                ratio: 1.0,
                mutual: true,
                max_distance: None,
            },
            k,
        )
        .unwrap();
        m.match_sets(&qs, &ts, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Match {
                    query: 1,
                    train: 0,
                    distance: 4
                },
                Match {
                    query: 2,
                    train: 1,
                    distance: 1
                }
            ],
            "{}",
            k.name()
        );
        let mut m = Matcher::with_kernel(
            MatchConfig {
                ratio: 1.0,
                mutual: false,
                max_distance: None,
            },
            k,
        )
        .unwrap();
        m.match_sets(&qs, &ts, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0],
            Match {
                query: 0,
                train: 0,
                distance: 25
            }
        );
    }
}

#[test]
fn empty_sets_and_mismatched_inputs() {
    let mut m = Matcher::new(MatchConfig::default()).unwrap();
    let none: [i8; 0] = [];
    let some = random_desc(4, 64, 1);
    let e = DescriptorSet::new(&none, 64).unwrap();
    let s = DescriptorSet::new(&some, 64).unwrap();
    let mut out = vec![Match {
        query: 9,
        train: 9,
        distance: 9,
    }];
    m.match_sets(&e, &s, &mut out).unwrap();
    assert!(out.is_empty());
    m.match_sets(&s, &e, &mut out).unwrap();
    assert!(out.is_empty());
    assert!(m.knn2(&s, &e).unwrap().iter().all(|b| b.best == NONE));
    let s32 = DescriptorSet::new(&some, 32).unwrap();
    assert!(matches!(
        m.match_sets(&s, &s32, &mut out),
        Err(FeatureError::Mismatch(_))
    ));
    assert!(
        Matcher::new(MatchConfig {
            ratio: f32::NAN,
            ..Default::default()
        })
        .is_err()
    );
    let guide = GuidedQuery {
        query_xy: &[[0.0, 0.0]; 3],
        train_xy: &[[0.0, 0.0]; 4],
        radius: 5.0,
    };
    assert!(m.match_guided(&s, &s, &guide, &mut out).is_err());
    let guide = GuidedQuery {
        query_xy: &[[0.0, 0.0]; 4],
        train_xy: &[[0.0, 0.0]; 4],
        radius: -1.0,
    };
    assert!(m.match_guided(&s, &s, &guide, &mut out).is_err());
}

/// Brute force restricted to the window: the reference for guided matching.
fn guided_reference(
    q: &DescriptorSet<'_>,
    t: &DescriptorSet<'_>,
    g: &GuidedQuery<'_>,
    cfg: &MatchConfig,
) -> Vec<Match> {
    let near = |a: [f32; 2], b: [f32; 2]| {
        let (dx, dy) = (a[0] - b[0], a[1] - b[1]);
        dx * dx + dy * dy <= g.radius * g.radius
    };
    let mut out = Vec::new();
    for i in 0..q.len() {
        let mut b = Best2::default();
        for j in 0..t.len() {
            if near(g.query_xy[i], g.train_xy[j]) {
                b.offer(squared_l2(q.get(i), t.get(j)), j as u32);
            }
        }
        if b.best == NONE {
            continue;
        }
        let r2 = f64::from(cfg.ratio).powi(2);
        if b.second != NONE
            && cfg.ratio < 1.0
            && f64::from(b.best_distance) >= r2 * f64::from(b.second_distance)
        {
            continue;
        }
        if cfg.mutual {
            let j = b.best as usize;
            let mut r = Best2::default();
            for i2 in 0..q.len() {
                if near(g.query_xy[i2], g.train_xy[j]) {
                    r.offer(squared_l2(q.get(i2), t.get(j)), i2 as u32);
                }
            }
            if r.best != i as u32 {
                continue;
            }
        }
        out.push(Match {
            query: i as u32,
            train: b.best,
            distance: b.best_distance,
        });
    }
    out
}

#[test]
fn guided_matching_equals_brute_force_restricted_to_the_window() {
    let dim = 64;
    let (nq, nt) = (300, 2000);
    let mut rng = SplitMix64::new(77);
    let train = tied_desc(nt, dim, 5);
    let mut train_xy: Vec<[f32; 2]> = (0..nt)
        .map(|_| {
            [
                (rng.uniform() * 640.0) as f32,
                (rng.uniform() * 480.0) as f32,
            ]
        })
        .collect();
    train_xy[7] = [f32::NAN, 3.0]; // a map point behind the camera
    // Queries: noisy copies of train descriptors near their predicted positions, plus strays.
    let mut query = Vec::new();
    let mut query_xy = Vec::new();
    for i in 0..nq {
        let j = (i * 37) % nt;
        let mut d = train[j * dim..(j + 1) * dim].to_vec();
        for v in d.iter_mut().step_by(7) {
            *v = v.saturating_add((rng.next_u64() % 5) as i8 - 2);
        }
        query.extend(d);
        let p = train_xy[j];
        query_xy.push([
            p[0] + (rng.uniform() * 20.0 - 10.0) as f32,
            p[1] + (rng.uniform() * 20.0 - 10.0) as f32,
        ]);
    }
    query_xy[3] = [1e7, -1e7];
    let (qs, ts) = (
        DescriptorSet::new(&query, dim).unwrap(),
        DescriptorSet::new(&train, dim).unwrap(),
    );
    let mut out = Vec::new();
    for radius in [4.0f32, 12.0, 40.0] {
        for cfg in [
            MatchConfig::default(),
            MatchConfig {
                ratio: 1.0,
                mutual: false,
                max_distance: None,
            },
            MatchConfig {
                ratio: 0.7,
                mutual: true,
                max_distance: None,
            },
        ] {
            let g = GuidedQuery {
                query_xy: &query_xy,
                train_xy: &train_xy,
                radius,
            };
            let reference = guided_reference(&qs, &ts, &g, &cfg);
            for k in kernels() {
                let mut m = Matcher::with_kernel(cfg, k).unwrap();
                m.match_guided(&qs, &ts, &g, &mut out).unwrap();
                assert_eq!(out, reference, "radius {radius} {cfg:?} {}", k.name());
            }
            if radius == 12.0 && !cfg.mutual {
                assert!(reference.len() > nq / 2, "{}", reference.len());
            }
        }
    }
}

#[test]
fn brute_force_finds_noisy_copies() {
    let dim = 128;
    let train = random_desc(5000, dim, 3);
    let mut rng = SplitMix64::new(4);
    let mut query = Vec::new();
    for i in 0..200 {
        let j = i * 23;
        query.extend(
            train[j * dim..(j + 1) * dim]
                .iter()
                .map(|&v| v.saturating_add((rng.next_u64() % 9) as i8 - 4)),
        );
    }
    let (qs, ts) = (
        DescriptorSet::new(&query, dim).unwrap(),
        DescriptorSet::new(&train, dim).unwrap(),
    );
    let mut m = Matcher::new(MatchConfig::default()).unwrap();
    let mut out = Vec::new();
    m.match_sets(&qs, &ts, &mut out).unwrap();
    assert_eq!(out.len(), 200);
    assert!(out.iter().all(|mm| mm.train == mm.query * 23));
}

//! The map file: round trips, in-place reading, cutting, and every kind of corruption
//! (flipped bits, truncation, bad counts, random bytes) rejected with an error, never a panic.

use nalgebra::{UnitQuaternion, Vector3};
use sextant_runtime::geometry::rng::Pcg32;
use sextant_runtime::map::{
    AlignedBytes, GeoAnchor, Keyframe, Landmarks, Map, MapContents, MapError, Vocabulary, cut_map,
    encode_map, tile_of,
};
use sextant_runtime::{Camera, Distortion, Pose};

const DIM: usize = 64;

fn sample_map(n: usize, seed: u64) -> MapContents {
    let mut rng = Pcg32::new(seed);
    let mut positions: Vec<[f32; 3]> = (0..n)
        .map(|_| {
            [
                rng.uniform(-40.0, 40.0) as f32,
                rng.uniform(-40.0, 40.0) as f32,
                rng.uniform(0.0, 5.0) as f32,
            ]
        })
        .collect();
    let tile = 16.0;
    positions.sort_by_key(|p| tile_of(p, tile));
    let descriptors = (0..n * DIM)
        .map(|_| (rng.below(255) as i32 - 127) as i8)
        .collect();
    let views = (0..n).map(|_| [rng.below(255) as i8, 3, -5, 4]).collect();
    let words = 8;
    let vocabulary = Vocabulary::from_parts(
        DIM,
        (0..words * DIM).map(|i| (i % 200) as i8).collect(),
        (0..words).map(|i| i as f32 * 0.25).collect(),
    )
    .expect("vocabulary");
    let cameras = vec![
        Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).expect("camera"),
        Camera::new(
            640,
            480,
            420.0,
            420.0,
            320.0,
            240.0,
            Distortion {
                k1: -0.12,
                k2: 0.03,
                ..Distortion::default()
            },
        )
        .expect("camera"),
    ];
    let keyframes = (0..5)
        .map(|i| Keyframe {
            pose: Pose::from_parts(
                UnitQuaternion::from_euler_angles(0.1 * i as f64, -0.2, 0.3),
                Vector3::new(i as f64 * 7.0 - 14.0, 1.0, 1.5),
            ),
            camera: (i % 2) as u32,
            bow: (0..words).map(|w| (w * 30 + i) as u8).collect(),
        })
        .collect();
    MapContents {
        descriptor_dim: DIM,
        model_id: [7; 16],
        geo_anchor: Some(GeoAnchor {
            lat: 48.8584,
            lon: 2.2945,
            alt: 35.0,
        }),
        tile_size_m: tile,
        max_range_m: 30.0,
        cameras,
        keyframes,
        vocabulary,
        landmarks: Landmarks {
            positions,
            descriptors,
            views,
        },
    }
}

#[test]
fn map_round_trips_exactly_and_reads_in_place() {
    let contents = sample_map(3000, 1);
    let bytes = encode_map(&contents).expect("encode");
    let map = Map::from_bytes(&bytes).expect("parse");
    assert_eq!(map.len(), 3000);
    assert!(map.tiles().len() > 4, "{} tiles", map.tiles().len());
    // Poses go through quaternions: compare those within 1e-12, then the rest exactly.
    let back = map.to_contents();
    for (a, b) in back.keyframes.iter().zip(&contents.keyframes) {
        assert!(a.pose.rotation_error(&b.pose) < 1e-12);
        assert!(a.pose.center_error(&b.pose) < 1e-12);
    }
    let mut back = back;
    back.keyframes = contents.keyframes.clone();
    assert_eq!(back, contents);
    // Encoding is deterministic.
    assert_eq!(encode_map(&contents).expect("encode"), bytes);
    // In place over a borrowed, aligned slice (as from a memory map): same views.
    let aligned = AlignedBytes::copy_from(&bytes);
    let borrowed = Map::parse(aligned.as_ref()).expect("parse borrowed");
    assert_eq!(borrowed.positions(), map.positions());
    assert_eq!(
        borrowed.positions().as_ptr().cast::<u8>(),
        aligned.as_ref()[..].as_ptr().wrapping_add(
            borrowed.positions().as_ptr() as usize - aligned.as_ref().as_ptr() as usize
        )
    );
    assert_eq!(borrowed.descriptors(), &contents.landmarks.descriptors[..]);
    // ≤ 100 bytes per landmark with 64-d descriptors.
    assert!(bytes.len() < 3000 * 100, "{} bytes", bytes.len());
}

#[test]
fn misaligned_storage_is_an_error_not_undefined_behaviour() {
    let bytes = encode_map(&sample_map(100, 2)).expect("encode");
    let aligned = AlignedBytes::copy_from(&[&[0u8][..], &bytes].concat());
    let shifted = &aligned.as_ref()[1..];
    assert_eq!(Map::parse(shifted).unwrap_err(), MapError::Misaligned);
    // from_bytes copies into aligned storage and succeeds.
    assert!(Map::from_bytes(shifted).is_ok());
}

#[test]
fn every_truncation_is_rejected() {
    let bytes = encode_map(&sample_map(200, 3)).expect("encode");
    for len in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
        let err = Map::from_bytes(&bytes[..len]).expect_err("truncated map accepted");
        assert!(
            matches!(err, MapError::BadMagic | MapError::Truncated { .. }),
            "length {len}: {err}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        Map::from_bytes(&longer),
        Err(MapError::Truncated { .. })
    ));
}

#[test]
fn every_flipped_byte_is_detected() {
    let bytes = encode_map(&sample_map(150, 4)).expect("encode");
    let mut rng = Pcg32::new(9);
    // Every header byte, and a few hundred payload bytes.
    let positions: Vec<usize> = (0..128)
        .chain((0..400).map(|_| 128 + rng.below((bytes.len() - 128) as u32) as usize))
        .collect();
    for at in positions {
        let mut bad = bytes.clone();
        bad[at] ^= 1 << rng.below(8);
        let err = Map::from_bytes(&bad).expect_err("corrupt map accepted");
        assert!(
            matches!(
                err,
                MapError::BadMagic
                    | MapError::Checksum { .. }
                    | MapError::UnsupportedVersion { .. }
                    | MapError::Truncated { .. }
                    | MapError::Invalid(_)
            ),
            "byte {at}: {err}"
        );
    }
}

/// Recomputes both checksums so that value validation (not the CRC) must catch the damage.
fn reseal(b: &mut [u8]) {
    fn crc(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in bytes {
            c ^= u32::from(x);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let p = crc(&b[128..]);
    b[88..92].copy_from_slice(&p.to_le_bytes());
    b[92..96].fill(0);
    let h = crc(&b[..128]);
    b[92..96].copy_from_slice(&h.to_le_bytes());
}

#[test]
fn inconsistent_values_with_valid_checksums_are_rejected() {
    let bytes = encode_map(&sample_map(120, 5)).expect("encode");
    let check = |edit: &dyn Fn(&mut Vec<u8>), what: &str| {
        let mut b = bytes.clone();
        edit(&mut b);
        reseal(&mut b);
        let err = Map::from_bytes(&b).expect_err(what);
        assert!(!err.to_string().is_empty(), "{what}");
    };
    check(&|b| b[8] = 9, "future version");
    check(
        &|b| b[20..24].copy_from_slice(&0u32.to_le_bytes()),
        "dimension 0",
    );
    check(
        &|b| b[24..28].copy_from_slice(&u32::MAX.to_le_bytes()),
        "huge count",
    );
    check(
        &|b| b[24..28].copy_from_slice(&119u32.to_le_bytes()),
        "count off by one",
    );
    check(
        &|b| b[44..48].copy_from_slice(&f32::NAN.to_le_bytes()),
        "NaN tile size",
    );
    check(
        &|b| b[56..64].copy_from_slice(&123.0f64.to_le_bytes()),
        "latitude 123",
    );
    check(&|b| b[16] = 4, "unknown flag");
    // First camera's fx (section starts at 128): negative.
    check(
        &|b| b[136..144].copy_from_slice(&(-5.0f64).to_le_bytes()),
        "negative fx",
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Pcg32::new(11);
    let valid = encode_map(&sample_map(50, 6)).expect("encode");
    for i in 0..2000 {
        let len = rng.below(600) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        if i % 2 == 0 && len >= 8 {
            b[..8].copy_from_slice(&valid[..8]); // get past the magic
        }
        assert!(Map::from_bytes(&b).is_err());
    }
}

#[test]
fn cut_keeps_the_tiles_near_a_point() {
    let contents = sample_map(4000, 7);
    let map = Map::from_bytes(&encode_map(&contents).expect("encode")).expect("parse");
    let part = cut_map(&map, 0.0, 0.0, 10.0).expect("cut");
    assert!(!part.landmarks.is_empty() && part.landmarks.len() < map.len());
    // Every landmark within 10 m of the centre is kept; the cut is itself a valid map.
    let inside = map
        .positions()
        .iter()
        .filter(|p| f64::from(p[0]).hypot(f64::from(p[1])) <= 10.0)
        .count();
    let kept_inside = part
        .landmarks
        .positions
        .iter()
        .filter(|p| f64::from(p[0]).hypot(f64::from(p[1])) <= 10.0)
        .count();
    assert_eq!(kept_inside, inside);
    let again = Map::from_bytes(&encode_map(&part).expect("encode cut")).expect("parse cut");
    assert_eq!(again.len(), part.landmarks.len());
    assert!(cut_map(&map, f64::NAN, 0.0, 1.0).is_err());
}

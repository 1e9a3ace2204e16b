//! Photometric variation: exposure, gain, gamma, sensor noise, motion blur — each a parameter,
//! all deterministic from a seed.
//!
//! Model, per channel of a rendered value `c` in `[0, 1]` (display-encoded, like the textures):
//! linear radiance `L = c^2.2`; electrons `e = L · exposure · full_well`; noise
//! `e += √e·N(0,1) + read_noise·N(0,1)` (shot + read); output `(gain · e / full_well)` clamped to
//! `[0, 1]`, re-encoded with exponent `gamma / 2.2` and rounded to 8 bits. With `full_well = 0` the
//! noise is off and `e/full_well` is read as `L · exposure`. Motion blur averages sub-renders along
//! a small camera rotation (about a seeded axis perpendicular to the optical axis) and shift,
//! centred on the recorded pose, before the sensor model.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};
use crate::image::{RgbF32, RgbImage, quantize};
use crate::rng::SimRng;
use crate::spec::KeyValueSpec;

/// Camera motion during the exposure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MotionBlur {
    /// Total rotation during the exposure, degrees.
    pub angle_deg: f64,
    /// Total camera translation during the exposure, metres.
    pub shift_m: f64,
    /// Sub-renders averaged (≥ 2).
    pub samples: u32,
}

/// Photometric settings of a capture (see the module doc for the model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Photometric {
    /// Preset this started from (for reports).
    pub preset: String,
    /// Scene brightness multiplier on linear radiance (1 = nominal exposure).
    pub exposure: f64,
    /// Sensor gain: amplifies signal and noise alike.
    pub gain: f64,
    /// Extra output gamma (1 = unchanged; > 1 darkens mid-tones).
    pub gamma: f64,
    /// Electrons at full scale before gain; sets the shot noise (0 = noise off).
    pub full_well: f64,
    /// Read noise, electrons rms.
    pub read_noise: f64,
    /// Optional motion blur.
    pub motion_blur: Option<MotionBlur>,
}

impl Default for Photometric {
    fn default() -> Self {
        Photometric::ideal()
    }
}

/// Names accepted by [`Photometric::preset`].
pub const PRESETS: [&str; 5] = ["ideal", "nominal", "dusk", "night", "blur"];

impl Photometric {
    /// No change at all: the rendered colour rounded to 8 bits.
    pub fn ideal() -> Photometric {
        Photometric {
            preset: "ideal".into(),
            exposure: 1.0,
            gain: 1.0,
            gamma: 1.0,
            full_well: 0.0,
            read_noise: 0.0,
            motion_blur: None,
        }
    }

    /// A well-exposed phone camera: mild shot and read noise.
    pub fn nominal() -> Photometric {
        Photometric {
            preset: "nominal".into(),
            full_well: 10_000.0,
            read_noise: 3.0,
            ..Photometric::ideal()
        }
    }

    /// Evening: a quarter of the light, gain 2, more visible noise.
    pub fn dusk() -> Photometric {
        Photometric {
            preset: "dusk".into(),
            exposure: 0.25,
            gain: 2.0,
            read_noise: 4.0,
            ..Photometric::nominal()
        }
    }

    /// Night: 4 % of the light at gain 5 — dark and noisy.
    pub fn night() -> Photometric {
        Photometric {
            preset: "night".into(),
            exposure: 0.04,
            gain: 5.0,
            read_noise: 6.0,
            ..Photometric::nominal()
        }
    }

    /// Nominal exposure with a 1.5° camera rotation during the exposure (≈ 13 px at fx = 500).
    pub fn blur() -> Photometric {
        Photometric {
            preset: "blur".into(),
            motion_blur: Some(MotionBlur {
                angle_deg: 1.5,
                shift_m: 0.0,
                samples: 9,
            }),
            ..Photometric::nominal()
        }
    }

    /// A preset by name (`ideal`, `nominal`, `dusk`, `night`, `blur`).
    pub fn preset(name: &str) -> Result<Photometric> {
        match name {
            "ideal" => Ok(Photometric::ideal()),
            "nominal" => Ok(Photometric::nominal()),
            "dusk" => Ok(Photometric::dusk()),
            "night" => Ok(Photometric::night()),
            "blur" => Ok(Photometric::blur()),
            _ => Err(SimError::Photometric(format!(
                "unknown preset {name:?} (expected one of {})",
                PRESETS.join(", ")
            ))),
        }
    }

    /// Parses `PRESET[:key=value,…]`, e.g. `night`, `nominal:exposure=0.5,gamma=1.2`,
    /// `ideal:blur_deg=2,blur_samples=7`. Keys: exposure, gain, gamma, full_well, read_noise,
    /// blur_deg, blur_shift, blur_samples.
    pub fn parse(spec: &str) -> Result<Photometric> {
        let s = KeyValueSpec::parse(spec)
            .map_err(|m| SimError::Photometric(format!("{spec:?}: {m}")))?;
        let err = |m: String| SimError::Photometric(format!("{spec:?}: {m}"));
        s.only(&[
            "exposure",
            "gain",
            "gamma",
            "full_well",
            "read_noise",
            "blur_deg",
            "blur_shift",
            "blur_samples",
        ])
        .map_err(err)?;
        let mut p = Photometric::preset(&s.kind)?;
        let set = |slot: &mut f64, key: &str| -> Result<()> {
            if let Some(v) = s.f64(key).map_err(err)? {
                *slot = v;
            }
            Ok(())
        };
        set(&mut p.exposure, "exposure")?;
        set(&mut p.gain, "gain")?;
        set(&mut p.gamma, "gamma")?;
        set(&mut p.full_well, "full_well")?;
        set(&mut p.read_noise, "read_noise")?;
        let (deg, shift, n) = (
            s.f64("blur_deg").map_err(err)?,
            s.f64("blur_shift").map_err(err)?,
            s.u64("blur_samples").map_err(err)?,
        );
        if deg.is_some() || shift.is_some() || n.is_some() {
            let base = p.motion_blur.unwrap_or(MotionBlur {
                angle_deg: 0.0,
                shift_m: 0.0,
                samples: 9,
            });
            p.motion_blur = Some(MotionBlur {
                angle_deg: deg.unwrap_or(base.angle_deg),
                shift_m: shift.unwrap_or(base.shift_m),
                samples: n
                    .map(|n| n.min(u64::from(u32::MAX)) as u32)
                    .unwrap_or(base.samples),
            });
        }
        if s.values.is_empty() {
            p.preset = s.kind.clone();
        } else {
            p.preset = spec.trim().to_string();
        }
        p.validate()?;
        Ok(p)
    }

    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<()> {
        let pos = [
            ("exposure", self.exposure),
            ("gain", self.gain),
            ("gamma", self.gamma),
        ];
        for (k, v) in pos {
            if !(v.is_finite() && v > 0.0) {
                return Err(SimError::Photometric(format!(
                    "{k} must be finite and positive, got {v}"
                )));
            }
        }
        for (k, v) in [
            ("full_well", self.full_well),
            ("read_noise", self.read_noise),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(SimError::Photometric(format!(
                    "{k} must be finite and non-negative, got {v}"
                )));
            }
        }
        if self.full_well == 0.0 && self.read_noise > 0.0 {
            return Err(SimError::Photometric(
                "read_noise needs full_well > 0 (electrons)".into(),
            ));
        }
        if let Some(b) = self.motion_blur {
            let ok = b.angle_deg.is_finite() && b.angle_deg >= 0.0 && b.angle_deg <= 45.0;
            let ok = ok && b.shift_m.is_finite() && b.shift_m >= 0.0 && b.shift_m <= 10.0;
            if !ok || !(2..=64).contains(&b.samples) {
                return Err(SimError::Photometric(format!(
                    "motion blur needs 0 <= angle_deg <= 45, 0 <= shift_m <= 10 and 2..=64 samples, got {b:?}"
                )));
            }
        }
        Ok(())
    }

    /// Whether [`Photometric::apply`] is a plain rounding.
    pub fn is_identity(&self) -> bool {
        self.exposure == 1.0 && self.gain == 1.0 && self.gamma == 1.0 && self.full_well == 0.0
    }

    /// Applies the sensor model to `rgb` (noise drawn from `rng`).
    pub fn apply(&self, rgb: &RgbF32, rng: &mut SimRng) -> RgbImage {
        if self.is_identity() {
            return rgb.to_rgb8();
        }
        let out_exp = (self.gamma / 2.2) as f32;
        let fw = self.full_well;
        let scale = if fw > 0.0 { self.gain / fw } else { self.gain };
        let mut data = Vec::with_capacity(rgb.data.len() * 3);
        for p in &rgb.data {
            for &c in p {
                let lin = f64::from(c.max(0.0)).powf(2.2) * self.exposure;
                let mut e = if fw > 0.0 { lin * fw } else { lin };
                if fw > 0.0 {
                    e += e.sqrt() * rng.normal() + self.read_noise * rng.normal();
                }
                let v = (e * scale).clamp(0.0, 1.0) as f32;
                data.push(quantize(v.powf(out_exp)));
            }
        }
        RgbImage::from_vec(rgb.width, rgb.height, data)
            .unwrap_or_else(|_| RgbImage::new(rgb.width, rgb.height))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(v: f32) -> RgbF32 {
        RgbF32 {
            width: 64,
            height: 64,
            data: vec![[v; 3]; 64 * 64],
        }
    }

    fn stats(img: &RgbImage) -> (f64, f64) {
        let xs: Vec<f64> = img.as_slice().iter().map(|&v| f64::from(v)).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        (
            m,
            (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt(),
        )
    }

    #[test]
    fn ideal_is_rounding_and_presets_order_by_brightness() {
        let img = gray(0.5);
        let mut rng = SimRng::new(1);
        assert!(
            Photometric::ideal()
                .apply(&img, &mut rng)
                .as_slice()
                .iter()
                .all(|&v| v == 128)
        );
        let (m_nom, s_nom) = stats(&Photometric::nominal().apply(&img, &mut rng));
        let (m_dusk, _) = stats(&Photometric::dusk().apply(&img, &mut rng));
        let (m_night, s_night) = stats(&Photometric::night().apply(&img, &mut rng));
        assert!((m_nom - 127.5).abs() < 2.0, "nominal mean {m_nom}");
        assert!(
            m_nom > m_dusk && m_dusk > m_night,
            "{m_nom} {m_dusk} {m_night}"
        );
        assert!(s_night > 2.0 * s_nom, "night noise {s_night} vs {s_nom}");
    }

    #[test]
    fn parse_presets_and_overrides() {
        let p = Photometric::parse("nominal:exposure=0.5,gamma=1.2").unwrap();
        assert_eq!((p.exposure, p.gamma, p.full_well), (0.5, 1.2, 10_000.0));
        let b = Photometric::parse("ideal:blur_deg=2").unwrap();
        assert_eq!(
            b.motion_blur.map(|m| (m.angle_deg, m.samples)),
            Some((2.0, 9))
        );
        assert_eq!(Photometric::parse("night").unwrap(), Photometric::night());
        for bad in [
            "sunny",
            "nominal:exposure=-1",
            "nominal:gain=0",
            "nominal:foo=1",
            "ideal:blur_samples=1",
            "nominal:gamma=nan",
        ] {
            assert!(Photometric::parse(bad).is_err(), "{bad}");
        }
    }
}

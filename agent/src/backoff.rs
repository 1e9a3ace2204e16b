//! Retry pacing and the download-condition policy.
//!
//! [`Backoff`] is exponential backoff with *full jitter* (each delay uniform in
//! `[0, min(cap, base · 2^attempt)]`, as in AWS's "Exponential Backoff and Jitter"): a fleet
//! that lost its backend at the same instant spreads its reconnects instead of stampeding. The
//! jitter comes from a seeded SplitMix64 generator, so a test (or the sans-IO harness) replays
//! the exact delays; a device seeds it from its id and boot time.
//!
//! [`may_start_download`] decides from a plain [`DownloadConditions`] snapshot (network metering,
//! charging, battery, free space) whether a model download may start now.

use std::time::Duration;

/// Parameters of [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Largest ceiling, however many attempts failed.
    pub cap: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(15 * 60),
        }
    }
}

/// Exponential backoff with full jitter from a seeded generator.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A fresh backoff (attempt 0) whose jitter is drawn from `seed`.
    pub fn new(policy: BackoffPolicy, seed: u64) -> Self {
        Self {
            policy,
            attempt: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The ceiling for the current attempt: `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.policy
            .base
            .checked_mul(factor)
            .unwrap_or(self.policy.cap)
            .min(self.policy.cap)
    }

    /// The delay before the next attempt (uniform in `[0, ceiling]`), and counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.attempt = self.attempt.saturating_add(1);
        let r = self.rng.next_u64();
        // Multiply-shift maps r onto [0, ceiling] without modulo bias worth mentioning.
        let d = ((u128::from(r) * (u128::from(ceiling) + 1)) >> 64) as u64;
        Duration::from_nanos(d)
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Resets after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough for jitter.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// What the device's OS says about conditions right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadConditions {
    /// On an unmetered network (Wi-Fi, Ethernet).
    pub unmetered: bool,
    /// Plugged in.
    pub charging: bool,
    /// Battery level, 0–100.
    pub battery_percent: u8,
    /// Free bytes on the volume that holds the model store.
    pub free_bytes: u64,
}

/// The device's download rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadPolicy {
    /// Only download over unmetered networks.
    pub require_unmetered: bool,
    /// Only download while charging.
    pub require_charging: bool,
    /// When not charging, only download at or above this battery level.
    pub min_battery_percent: u8,
    /// Metered downloads are allowed up to this size (small patches, rollback targets).
    pub metered_allowance_bytes: u64,
    /// Free space that must remain after the download (the model store also keeps the last
    /// known good model).
    pub reserve_free_bytes: u64,
}

impl Default for DownloadPolicy {
    fn default() -> Self {
        Self {
            require_unmetered: true,
            require_charging: false,
            min_battery_percent: 30,
            metered_allowance_bytes: 2 << 20,
            reserve_free_bytes: 200 << 20,
        }
    }
}

/// The verdict of [`may_start_download`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadDecision {
    /// Start (or resume) now.
    Allow,
    /// Wait: the network is metered and the download is over the allowance.
    WaitForUnmetered,
    /// Wait: not charging and the battery is low.
    WaitForPower,
    /// Wait: not enough free space for the download plus the reserve.
    InsufficientSpace,
}

/// Whether a download of `remaining_bytes` may start now. `urgent` (a rollback target the
/// backend marked urgent) skips the network and power rules, never the space rule.
pub fn may_start_download(
    c: &DownloadConditions,
    p: &DownloadPolicy,
    remaining_bytes: u64,
    urgent: bool,
) -> DownloadDecision {
    if c.free_bytes < remaining_bytes.saturating_add(p.reserve_free_bytes) {
        return DownloadDecision::InsufficientSpace;
    }
    if urgent {
        return DownloadDecision::Allow;
    }
    if p.require_unmetered && !c.unmetered && remaining_bytes > p.metered_allowance_bytes {
        return DownloadDecision::WaitForUnmetered;
    }
    if !c.charging && (p.require_charging || c.battery_percent < p.min_battery_percent) {
        return DownloadDecision::WaitForPower;
    }
    DownloadDecision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_doubling_ceiling_and_replay_from_the_seed() {
        let p = BackoffPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        };
        let mut a = Backoff::new(p, 42);
        let mut b = Backoff::new(p, 42);
        let mut c = Backoff::new(p, 43);
        let mut differs = false;
        for k in 0..40u32 {
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1u32.checked_shl(k.min(31)).unwrap_or(u32::MAX))
                .min(Duration::from_secs(10));
            assert_eq!(a.ceiling(), ceiling);
            let (da, db, dc) = (a.next_delay(), b.next_delay(), c.next_delay());
            assert!(da <= ceiling, "attempt {k}: {da:?} > {ceiling:?}");
            assert_eq!(da, db);
            differs |= da != dc;
        }
        assert!(differs);
        a.reset();
        assert_eq!(a.attempts(), 0);
        assert_eq!(a.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_interval() {
        let p = BackoffPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(1),
        };
        let mut b = Backoff::new(p, 7);
        let xs: Vec<f64> = (0..10_000).map(|_| b.next_delay().as_secs_f64()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!(xs.iter().any(|x| *x < 0.01) && xs.iter().any(|x| *x > 0.99));
    }

    #[test]
    fn download_policy_decisions() {
        let p = DownloadPolicy::default();
        let good = DownloadConditions {
            unmetered: true,
            charging: false,
            battery_percent: 80,
            free_bytes: 1 << 30,
        };
        assert_eq!(
            may_start_download(&good, &p, 10 << 20, false),
            DownloadDecision::Allow
        );
        let metered = DownloadConditions {
            unmetered: false,
            ..good
        };
        assert_eq!(
            may_start_download(&metered, &p, 10 << 20, false),
            DownloadDecision::WaitForUnmetered
        );
        assert_eq!(
            may_start_download(&metered, &p, 1 << 20, false),
            DownloadDecision::Allow
        );
        assert_eq!(
            may_start_download(&metered, &p, 10 << 20, true),
            DownloadDecision::Allow
        );
        let low = DownloadConditions {
            battery_percent: 10,
            ..good
        };
        assert_eq!(
            may_start_download(&low, &p, 10 << 20, false),
            DownloadDecision::WaitForPower
        );
        let low_charging = DownloadConditions {
            charging: true,
            ..low
        };
        assert_eq!(
            may_start_download(&low_charging, &p, 10 << 20, false),
            DownloadDecision::Allow
        );
        let strict = DownloadPolicy {
            require_charging: true,
            ..p
        };
        assert_eq!(
            may_start_download(&good, &strict, 10 << 20, false),
            DownloadDecision::WaitForPower
        );
        let full = DownloadConditions {
            free_bytes: 100 << 20,
            ..good
        };
        assert_eq!(
            may_start_download(&full, &p, 10 << 20, true),
            DownloadDecision::InsufficientSpace
        );
    }
}

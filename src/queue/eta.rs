//! ETA from the measured admission rate, as a p50/p90 range.
//!
//! The pacer feeds one sample per refresh (admissions ever, whether anyone waited). Only spans
//! during which someone waited count: an empty queue admits slowly because nobody is there, not
//! because the room is slow. Until enough has been measured, the configured rate (bounded by
//! session turnover when the room is full) fills in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::snapshot::Rates;

/// How far back measurements count.
const WINDOW: Duration = Duration::from_secs(60);
/// Width of the buckets whose spread gives the p90.
const BUCKET: Duration = Duration::from_secs(5);
/// Measured time after which the configured rate no longer blends in.
const TRUST_AFTER: Duration = Duration::from_secs(30);

/// Rolling admission-rate estimator for one room on one node.
#[derive(Debug, Default)]
pub struct EtaEstimator {
    samples: VecDeque<(Instant, u64, bool)>,
}

impl EtaEstimator {
    /// Adds a sample and returns the rates to publish. `configured` is the rate (per second) the
    /// room would admit at from its settings alone.
    pub fn update(
        &mut self,
        at: Instant,
        admitted_total: u64,
        queue_nonempty: bool,
        configured: f64,
    ) -> Rates {
        self.samples.push_back((at, admitted_total, queue_nonempty));
        while self
            .samples
            .front()
            .is_some_and(|(t, _, _)| at.duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
        let Some(&(start, _, _)) = self.samples.front() else {
            return fallback(configured);
        };
        // Per-bucket (admissions, seconds) over spans that began with someone waiting.
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let (mut admitted, mut seconds) = (0f64, 0f64);
        for pair in self.samples.iter().collect::<Vec<_>>().windows(2) {
            let (&(t0, a0, waiting), &(t1, a1, _)) = (pair[0], pair[1]);
            if !waiting {
                continue;
            }
            let (da, dt) = (
                a1.saturating_sub(a0) as f64,
                t1.duration_since(t0).as_secs_f64(),
            );
            admitted += da;
            seconds += dt;
            let i = (t0.duration_since(start).as_secs_f64() / BUCKET.as_secs_f64()) as usize;
            if buckets.len() <= i {
                buckets.resize(i + 1, (0.0, 0.0));
            }
            buckets[i].0 += da;
            buckets[i].1 += dt;
        }
        if seconds < 2.0 || admitted == 0.0 {
            return fallback(configured);
        }
        let measured = admitted / seconds;
        let trust = (seconds / TRUST_AFTER.as_secs_f64()).min(1.0);
        let p50 = trust * measured + (1.0 - trust) * configured;
        let mut rates: Vec<f64> = buckets
            .iter()
            .filter(|(_, dt)| *dt >= BUCKET.as_secs_f64() / 2.0)
            .map(|(da, dt)| da / dt)
            .collect();
        rates.sort_by(f64::total_cmp);
        let slow = if rates.len() >= 3 {
            rates[rates.len() / 10]
        } else {
            p50 * 0.75
        };
        Rates {
            p50,
            p90: slow.clamp(p50 * 0.5, p50),
        }
    }
}

fn fallback(configured: f64) -> Rates {
    Rates {
        p50: configured,
        p90: configured * 0.75,
    }
}

/// Seconds until `position` admissions have happened at `rate` per second; `None` when nothing
/// is being admitted (paused, or no measurement and no configured rate).
pub fn seconds_for(position: u64, rate: f64) -> Option<u64> {
    (rate > 0.0).then(|| (position as f64 / rate).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_rate_until_measured() {
        let mut eta = EtaEstimator::default();
        let t = Instant::now();
        let r = eta.update(t, 0, true, 10.0);
        assert_eq!(r.p50, 10.0);
        assert!(r.p90 < r.p50);
    }

    #[test]
    fn measured_rate_takes_over_while_waiting() {
        let mut eta = EtaEstimator::default();
        let t = Instant::now();
        // 2 admissions per second measured over 40 s, configured says 10.
        for i in 0..=160u64 {
            eta.update(t + Duration::from_millis(250 * i), i / 2, true, 10.0);
        }
        let r = eta.update(t + Duration::from_millis(250 * 161), 80, true, 10.0);
        assert!((r.p50 - 2.0).abs() < 0.2, "{r:?}");
        assert!(r.p90 <= r.p50 && r.p90 >= r.p50 * 0.5, "{r:?}");
        assert_eq!(
            seconds_for(20, r.p50).map(|s| (9..=11).contains(&s)),
            Some(true)
        );
    }

    #[test]
    fn idle_queue_spans_do_not_drag_the_rate_down() {
        let mut eta = EtaEstimator::default();
        let t = Instant::now();
        for i in 0..=40u64 {
            eta.update(t + Duration::from_secs(i), 0, false, 5.0);
        }
        let r = eta.update(t + Duration::from_secs(41), 0, false, 5.0);
        assert_eq!(r.p50, 5.0);
        assert_eq!(seconds_for(10, 0.0), None);
    }
}

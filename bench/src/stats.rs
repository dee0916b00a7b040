//! Latency histograms (HdrHistogram, microseconds, 3 significant digits) and the summaries a
//! run reports: percentiles, the percentile spectrum for charts, per-second timelines.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram holds (one hour); larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static bounds are valid")
}

/// One thread's latency recorder: the whole measured phase plus the current interval, which
/// the reporting thread takes every second. Shared behind a mutex taken once per response
/// (or per fetched batch), so contention is negligible.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Recording>>);

pub struct Recording {
    pub total: Histogram<u64>,
    pub interval: Histogram<u64>,
    /// False during warm-up: values go to the interval (for the live line) only.
    pub measuring: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder(Arc::new(Mutex::new(Recording {
            total: new_histogram(),
            interval: new_histogram(),
            measuring: false,
        })))
    }
}

impl Recorder {
    /// Records each of `latencies_us`.
    pub fn record_all(&self, latencies_us: impl IntoIterator<Item = u64>) {
        let mut r = self.0.lock().expect("recorder lock");
        let measuring = r.measuring;
        for us in latencies_us {
            let v = us.clamp(1, MAX_LATENCY_US);
            r.interval.saturating_record(v);
            if measuring {
                r.total.saturating_record(v);
            }
        }
    }

    /// Starts the measured phase (drops what warm-up recorded).
    pub fn start_measuring(&self) {
        let mut r = self.0.lock().expect("recorder lock");
        r.total.reset();
        r.measuring = true;
    }

    pub fn stop_measuring(&self) {
        self.0.lock().expect("recorder lock").measuring = false;
    }

    /// Adds this interval's values to `into` and starts a new interval.
    pub fn drain_interval(&self, into: &mut Histogram<u64>) {
        let mut r = self.0.lock().expect("recorder lock");
        into.add(&r.interval).expect("same bounds");
        r.interval.reset();
    }

    pub fn add_total(&self, into: &mut Histogram<u64>) {
        into.add(&self.0.lock().expect("recorder lock").total)
            .expect("same bounds");
    }
}

/// The percentiles a report prints, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            p9999_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
        }
    }
}

/// The percentile spectrum of `h` as (quantile, milliseconds) points: ten points per decade
/// of "nines" (0, 0.2, 0.37, ..., 0.9, ..., 0.99, ...) as far as the sample count resolves,
/// then the maximum. This is the curve HdrHistogram's plotter draws.
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    if h.is_empty() {
        return points;
    }
    let n = h.len() as f64;
    for step in 0..=60 {
        let q = 1.0 - 10f64.powf(-(step as f64) / 10.0);
        // Beyond 1 - 1/n the histogram only knows its maximum.
        if 1.0 - q < 1.0 / n {
            break;
        }
        points.push((q, ms(h.value_at_quantile(q))));
    }
    points.push(((1.0 - 1.0 / n).max(0.0), ms(h.max())));
    points
}

/// One second of a run: throughput and latency in that interval.
#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    /// Seconds since the measured phase began (negative during warm-up).
    pub t: f64,
    pub produced_records: u64,
    pub produced_mb: f64,
    pub consumed_records: u64,
    pub consumed_mb: f64,
    pub produce: Percentiles,
    pub end_to_end: Percentiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let r = Recorder::default();
        r.start_measuring();
        // 1..=10000 us: p50 5 ms, p99 9.9 ms, max 10 ms (3 significant digits).
        r.record_all(1..=10_000);
        let mut h = new_histogram();
        r.add_total(&mut h);
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p90_ms - 9.0).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.01, "{p:?}");
        assert!((p.mean_ms - 5.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn warm_up_is_not_measured_but_shows_in_the_interval() {
        let r = Recorder::default();
        r.record_all([50_000, 60_000]);
        r.start_measuring();
        r.record_all([1_000]);
        let mut total = new_histogram();
        r.add_total(&mut total);
        assert_eq!(total.len(), 1);
        assert_eq!(total.max(), 1_000);
        let mut interval = new_histogram();
        r.drain_interval(&mut interval);
        assert_eq!(interval.len(), 3);
        let mut again = new_histogram();
        r.drain_interval(&mut again);
        assert!(again.is_empty(), "an interval is drained once");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let r = Recorder::default();
        r.start_measuring();
        r.record_all([0, u64::MAX]);
        let mut h = new_histogram();
        r.add_total(&mut h);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
    }

    #[test]
    fn the_spectrum_rises_and_ends_at_the_maximum() {
        let mut h = new_histogram();
        for v in 1..=100_000u64 {
            h.record(v).unwrap();
        }
        let s = spectrum(&h);
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let (q, max) = *s.last().unwrap();
        assert!((max - 100.0).abs() < 0.1);
        assert!(q > 0.9999 && q < 1.0);
        // 100,000 samples resolve 99.999% (the 1-in-100,000 value) but not 99.9999%.
        assert!(s.iter().any(|(q, _)| (*q - 0.99999).abs() < 1e-9));
        assert!(!s.iter().any(|(q, _)| (*q - 0.999999).abs() < 1e-9));
        assert!(spectrum(&new_histogram()).is_empty());
    }
}

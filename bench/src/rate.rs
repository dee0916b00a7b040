//! Open-loop rate control.
//!
//! A producer at a target rate owns a [`Schedule`]: record `i` is *intended* to be sent at
//! `start + i / rate`, whatever happened to the records before it. Latency is measured from
//! that intended time, not from when the record was actually handed to the socket, so a
//! stall (a slow ack, a full in-flight window, a descheduled thread) shows up as latency for
//! every record that should have been sent during it. Measuring from the actual send time
//! instead is coordinated omission: the load generator politely waits for the system under
//! test and the stall vanishes from the histogram.

use std::time::{Duration, Instant};

/// Intended send times of one open-loop producer.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between records; `None` = as fast as possible (closed loop: each record
    /// is intended when it is created).
    interval_ns: Option<f64>,
    next: u64,
}

impl Schedule {
    /// `rate` records per second from `start`; a rate of 0 means unlimited.
    pub fn new(start: Instant, rate: f64) -> Schedule {
        let interval_ns = (rate > 0.0).then(|| 1e9 / rate);
        Schedule {
            start,
            interval_ns,
            next: 0,
        }
    }

    pub fn is_open_loop(&self) -> bool {
        self.interval_ns.is_some()
    }

    /// The intended time of the next record (for unlimited schedules: `now`).
    pub fn next_at(&self, now: Instant) -> Instant {
        match self.interval_ns {
            Some(ns) => self.start + Duration::from_nanos((self.next as f64 * ns) as u64),
            None => now,
        }
    }

    /// The next record's intended time if it is due at `now`, and moves past it. An open-loop
    /// schedule that fell behind returns every overdue record, each with its own (past)
    /// intended time.
    pub fn take_due(&mut self, now: Instant) -> Option<Instant> {
        let at = self.next_at(now);
        if at > now {
            return None;
        }
        self.next += 1;
        Some(at)
    }
}

/// Microseconds from `intended` to `done` (0 when `done` is earlier).
pub fn latency_us(intended: Instant, done: Instant) -> u64 {
    done.saturating_duration_since(intended).as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_loop_schedule_releases_records_at_the_rate() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 1000.0);
        let mut due = 0;
        // Polled every 100 us for one second: exactly the records intended in [0, 1 s].
        for step in 0..=10_000u64 {
            let now = t0 + Duration::from_micros(step * 100);
            while s.take_due(now).is_some() {
                due += 1;
            }
        }
        assert_eq!(due, 1001);
        assert_eq!(s.next_at(t0), t0 + Duration::from_millis(1001));
    }

    #[test]
    fn a_stall_is_charged_to_every_record_it_delayed() {
        // 1000/s; the producer is stuck for 100 ms, then catches up at once.
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 1000.0);
        let resumed = t0 + Duration::from_millis(100);
        let mut latencies = Vec::new();
        while let Some(intended) = s.take_due(resumed) {
            latencies.push(latency_us(intended, resumed));
        }
        assert_eq!(latencies.len(), 101);
        // The first record waited the whole stall, the last one none of it: measured from
        // the intended time, the stall shows up for all 100 delayed records (a closed-loop
        // measurement would have recorded ~0 for each).
        assert_eq!(latencies[0], 100_000);
        assert_eq!(latencies[50], 50_000);
        assert_eq!(*latencies.last().unwrap(), 0);
        assert_eq!(latencies.iter().filter(|l| **l >= 10_000).count(), 91);
    }

    #[test]
    fn an_unlimited_schedule_is_always_due_now() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 0.0);
        assert!(!s.is_open_loop());
        let now = t0 + Duration::from_secs(3);
        assert_eq!(s.take_due(now), Some(now));
        assert_eq!(s.take_due(now), Some(now));
        assert_eq!(s.next_at(now), now);
    }

    #[test]
    fn a_schedule_does_not_run_ahead() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 10.0);
        assert!(s.take_due(t0).is_some());
        assert!(s.take_due(t0 + Duration::from_millis(99)).is_none());
        assert!(s.take_due(t0 + Duration::from_millis(100)).is_some());
        assert_eq!(latency_us(t0 + Duration::from_secs(1), t0), 0);
    }
}

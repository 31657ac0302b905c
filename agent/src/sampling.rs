//! Rates and peaks from successive counter readings. Pure: every function takes `now`, so
//! tests need no clock. Rates are bits per second over a monotonic clock (`Instant`), so a
//! wall-clock jump never distorts them.

use std::time::{Duration, Instant};

use crate::model::{Counters, Traffic};

/// Bits per second for `bytes` over `dt` (0 for an empty interval).
pub fn rate_bps(bytes: u64, dt: Duration) -> f64 {
    let secs = dt.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 * 8.0 / secs
    }
}

/// The running state of one series of readings (a target, or the aggregate).
#[derive(Debug, Clone)]
pub struct Series {
    baseline: Traffic,
    started: Instant,
    prev: Traffic,
    prev_at: Instant,
    /// Last interval's receive rate, bits/s.
    pub rate_in: f64,
    /// Last interval's send rate, bits/s.
    pub rate_out: f64,
    /// Peak per-interval receive rate, bits/s.
    pub peak_in: f64,
    /// Peak per-interval send rate, bits/s.
    pub peak_out: f64,
}

impl Series {
    /// Starts a series at reading `baseline` taken at `now`.
    pub fn new(baseline: Traffic, now: Instant) -> Self {
        Self {
            baseline,
            started: now,
            prev: baseline,
            prev_at: now,
            rate_in: 0.0,
            rate_out: 0.0,
            peak_in: 0.0,
            peak_out: 0.0,
        }
    }

    /// Takes reading `cur` at `now`: updates the interval rates and peaks.
    pub fn update_at(&mut self, now: Instant, cur: Traffic) {
        self.update_spanning(now, cur, Duration::ZERO);
    }

    /// As [`Self::update_at`], but an interval shorter than `min_peak_span` (the stub a window
    /// or a signal cuts off) does not set the peak: a rate over a few milliseconds says little.
    pub fn update_spanning(&mut self, now: Instant, cur: Traffic, min_peak_span: Duration) {
        let dt = now.saturating_duration_since(self.prev_at);
        if dt.is_zero() {
            return;
        }
        let d = cur.total().minus(self.prev.total());
        self.rate_in = rate_bps(d.bytes_in, dt);
        self.rate_out = rate_bps(d.bytes_out, dt);
        if dt >= min_peak_span {
            self.peak_in = self.peak_in.max(self.rate_in);
            self.peak_out = self.peak_out.max(self.rate_out);
        }
        self.prev = cur;
        self.prev_at = now;
    }

    /// Traffic since the series started.
    pub fn since_start(&self) -> Traffic {
        self.prev.minus(&self.baseline)
    }

    /// Average rates (in, out) since the start, bits/s.
    pub fn average(&self) -> (f64, f64) {
        let Counters {
            bytes_in,
            bytes_out,
            ..
        } = self.since_start().total();
        let dt = self.prev_at.saturating_duration_since(self.started);
        (rate_bps(bytes_in, dt), rate_bps(bytes_out, dt))
    }
}

/// Sums readings across targets (for the aggregate series, whose peak is the peak of the
/// summed per-interval rate, not the sum of peaks).
pub fn sum_traffic<'a>(items: impl IntoIterator<Item = &'a Traffic>) -> Traffic {
    items
        .into_iter()
        .fold(Traffic::default(), |acc, t| Traffic {
            tcp: acc.tcp.plus(t.tcp),
            udp: acc.udp.plus(t.udp),
            other: acc.other.plus(t.other),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(bytes_in: u64, bytes_out: u64) -> Traffic {
        Traffic {
            tcp: Counters {
                bytes_in,
                bytes_out,
                packets_in: 1,
                packets_out: 1,
            },
            ..Traffic::default()
        }
    }

    #[test]
    fn rates_peaks_and_window() {
        let t0 = Instant::now();
        let mut s = Series::new(tcp(1000, 0), t0);
        s.update_at(t0 + Duration::from_secs(1), tcp(1000 + 125_000, 0)); // 1 Mbit in 1 s
        assert!((s.rate_in - 1_000_000.0).abs() < 1e-6);
        s.update_at(t0 + Duration::from_secs(3), tcp(1000 + 125_000 + 62_500, 0)); // 0.25 Mbps
        assert!((s.rate_in - 250_000.0).abs() < 1e-6);
        assert!((s.peak_in - 1_000_000.0).abs() < 1e-6);
        assert_eq!(s.since_start().total().bytes_in, 187_500);
        let (avg_in, avg_out) = s.average();
        assert!((avg_in - 500_000.0).abs() < 1e-6);
        assert_eq!(avg_out, 0.0);
    }

    #[test]
    fn counters_going_backwards_never_underflow() {
        let t0 = Instant::now();
        let mut s = Series::new(tcp(5000, 5000), t0);
        s.update_at(t0 + Duration::from_secs(1), tcp(10, 10));
        assert_eq!(s.rate_in, 0.0);
        assert_eq!(s.since_start().total().bytes_in, 0);
    }

    #[test]
    fn zero_interval_is_ignored() {
        let t0 = Instant::now();
        let mut s = Series::new(tcp(0, 0), t0);
        s.update_at(t0, tcp(100, 100));
        assert_eq!(s.rate_in, 0.0);
        assert_eq!(rate_bps(100, Duration::ZERO), 0.0);
    }

    #[test]
    fn aggregate_sums() {
        let sum = sum_traffic([&tcp(1, 2), &tcp(10, 20)]);
        assert_eq!((sum.tcp.bytes_in, sum.tcp.bytes_out), (11, 22));
    }
}

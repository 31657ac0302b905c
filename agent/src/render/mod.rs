//! Writes reports: JSON lines (`json`) or the human table (`table`), to any `io::Write`.
//! Unit formatting lives here too. The only module that writes reports.

pub mod json;
pub mod output;
pub mod table;

use std::{fmt, time::Duration};

/// `s` with control characters (escape sequences, newlines, …) written as Rust escapes
/// (`\u{1b}`), so a hostile name can neither hide rows nor drive the terminal. The one escaping
/// function of every output a terminal shows: the table, the interactive view (`tui::view`),
/// log lines and the one-line error (`lib.rs`); JSON has its own (serde_json's `\u001b`).
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A rate in bits per second, shown with SI units (1 Kbps = 1000 bit/s).
#[derive(Debug, Clone, Copy)]
pub struct DisplayRate(pub f64);

impl fmt::Display for DisplayRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["Kbps", "Mbps", "Gbps", "Tbps"];
        let mut v = self.0.max(0.0);
        if v < 1000.0 {
            return write!(f, "{v:.0} bps");
        }
        let mut unit = UNITS[0];
        v /= 1000.0;
        for u in &UNITS[1..] {
            if v < 1000.0 {
                break;
            }
            v /= 1000.0;
            unit = u;
        }
        write!(f, "{v:.1} {unit}")
    }
}

/// A byte count shown with binary units (B, KiB, MiB, GiB, TiB).
#[derive(Debug, Clone, Copy)]
pub struct DisplayBytes(pub u64);

impl fmt::Display for DisplayBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut v = self.0 as f64 / 1024.0;
        let mut unit = UNITS[0];
        for u in &UNITS[1..] {
            if v < 1024.0 {
                break;
            }
            v /= 1024.0;
            unit = u;
        }
        write!(f, "{v:.1} {unit}")
    }
}

/// A smoothed RTT in µs, shown as `85µs`, `1.2ms` or `1.05s`; `-` without a sample.
#[derive(Debug, Clone, Copy)]
pub struct DisplayRtt(pub Option<u64>);

impl fmt::Display for DisplayRtt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.pad("-"),
            Some(us) if us < 1000 => f.pad(&format!("{us}µs")),
            Some(us) if us < 1_000_000 => f.pad(&format!("{:.1}ms", us as f64 / 1e3)),
            Some(us) => f.pad(&format!("{:.2}s", us as f64 / 1e6)),
        }
    }
}

/// A duration in the seed's compact form (Go's `Duration.String` at whole seconds):
/// `0s`, `3s`, `1m2s`, `1h2m3s`, `26h0m0s`.
pub fn compact_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("nginx"), "nginx");
        assert_eq!(printable("a\x1b]0;pwned\x07b"), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(printable("x\ny\rz"), "x\\ny\\rz");
        assert!(!printable("\x1b[2J\x1b[H").chars().any(char::is_control));
    }

    #[test]
    fn rates() {
        assert_eq!(DisplayRate(0.0).to_string(), "0 bps");
        assert_eq!(DisplayRate(999.4).to_string(), "999 bps");
        assert_eq!(DisplayRate(256_000.0).to_string(), "256.0 Kbps");
        assert_eq!(DisplayRate(1_500_000.0).to_string(), "1.5 Mbps");
        assert_eq!(DisplayRate(2.5e9).to_string(), "2.5 Gbps");
        assert_eq!(DisplayRate(-5.0).to_string(), "0 bps");
    }

    #[test]
    fn bytes() {
        assert_eq!(DisplayBytes(0).to_string(), "0 B");
        assert_eq!(DisplayBytes(1023).to_string(), "1023 B");
        assert_eq!(DisplayBytes(1536).to_string(), "1.5 KiB");
        assert_eq!(DisplayBytes(150 * 1024 * 1024).to_string(), "150.0 MiB");
        assert_eq!(DisplayBytes(1_288_490_188).to_string(), "1.2 GiB");
    }

    #[test]
    fn rtts() {
        assert_eq!(DisplayRtt(None).to_string(), "-");
        assert_eq!(DisplayRtt(Some(64)).to_string(), "64µs");
        assert_eq!(DisplayRtt(Some(1024)).to_string(), "1.0ms");
        assert_eq!(DisplayRtt(Some(262_144)).to_string(), "262.1ms");
        assert_eq!(DisplayRtt(Some(1 << 20)).to_string(), "1.05s");
        assert_eq!(format!("{:>6}", DisplayRtt(Some(64))), "  64µs");
    }

    #[test]
    fn durations() {
        assert_eq!(compact_duration(Duration::ZERO), "0s");
        assert_eq!(compact_duration(Duration::from_millis(3900)), "3s");
        assert_eq!(compact_duration(Duration::from_secs(62)), "1m2s");
        assert_eq!(compact_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(compact_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(compact_duration(Duration::from_secs(93600)), "26h0m0s");
    }
}

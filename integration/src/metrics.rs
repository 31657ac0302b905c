//! The metrics endpoint, as a scraper sees it: a real HTTP client (curl), the samples of the
//! exposition, and Prometheus' own linter.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::skip::time_scale;

/// The `Accept` header of a Prometheus scrape that asks for OpenMetrics.
pub const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";
/// The `Accept` header of a classic (text format 0.0.4) scrape.
pub const CLASSIC: &str = "text/plain";

/// A loopback port nobody listens on now (the kernel's choice), for `--metrics-addr`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `GET /metrics` on loopback `port` with `Accept: accept`, if it answers 200.
pub fn try_scrape(port: u16, accept: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("Accept: {accept}"),
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .expect("curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `GET /metrics`; the test fails if it does not answer 200.
pub fn scrape(port: u16, accept: &str) -> String {
    try_scrape(port, accept).unwrap_or_else(|| panic!("scrape of 127.0.0.1:{port} failed"))
}

/// Scrapes until `done` holds for the text (every 100 ms, at most `secs` stretched by
/// `PNM_TIME_SCALE`), and returns the last text: the caller asserts on it either way.
pub fn scrape_until(port: u16, accept: &str, secs: u64, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs * time_scale());
    loop {
        let text = try_scrape(port, accept).unwrap_or_default();
        if done(&text) || Instant::now() >= deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The samples of `name` whose line contains every one of `needles`: (line, value).
fn samples<'t>(text: &'t str, name: &str, needles: &[&str]) -> Vec<(&'t str, u64)> {
    let head = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&head) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| Some((l, l.rsplit(' ').next()?.parse::<f64>().ok()? as u64)))
        .collect()
}

/// The value of the one sample of `name` whose line contains every one of `needles` (none:
/// `None`; more than one: the test fails, the selection was not exact).
pub fn sample(text: &str, name: &str, needles: &[&str]) -> Option<u64> {
    let found = samples(text, name, needles);
    assert!(
        found.len() <= 1,
        "{} samples of {name} match {needles:?}: {found:?}",
        found.len()
    );
    found.first().map(|(_, v)| *v)
}

/// The sum of the samples of `name` whose line contains every one of `needles`.
pub fn sample_sum(text: &str, name: &str, needles: &[&str]) -> u64 {
    samples(text, name, needles).iter().map(|(_, v)| v).sum()
}

/// `promtool check metrics` accepts `text` (Prometheus' own linter; scripts/setup installs it).
pub fn promtool_accepts(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup installs Debian's prometheus)");
    std::io::Write::write_all(p.stdin.as_mut().expect("stdin"), text.as_bytes()).expect("write");
    let out = p.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET /healthz` answers 200 within 2 s.
pub fn healthz_ok(port: u16) -> bool {
    Command::new("curl")
        .args([
            "-sf",
            "-m",
            "2",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

//! `--record DIR` in a live run: the directory is checked and locked before anything is set
//! up ([`open_dir`]: a bad DIR fails first, like a taken `--metrics-addr`), the recorder
//! starts once the targets are known ([`start`]), and the loop appends one report per
//! interval, whatever the run's report schedule.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hasher as _},
};

use super::{Options, Recorder, segment::RunMeta, store::DirStorage};
use crate::{
    config::{RecordConfig, Run},
    session::{Session, Subject},
};

/// The recorder of a live run.
pub type Live = Recorder<DirStorage>;

/// Checks and locks `--record DIR` (None without the flag).
pub fn open_dir(record: Option<&RecordConfig>) -> anyhow::Result<Option<DirStorage>> {
    record.map(|r| DirStorage::open(&r.dir)).transpose()
}

/// What the run watches, for the recording's header.
fn mode(run: &Run) -> String {
    let t = &run.targets;
    let mut parts = Vec::new();
    if t.all {
        parts.push("--all".to_string());
    }
    if !t.pids.is_empty() {
        let pids: Vec<String> = t.pids.iter().map(u32::to_string).collect();
        parts.push(format!("-p {}", pids.join(",")));
    }
    parts.extend(t.cgroups.iter().map(|c| format!("--cgroup {c}")));
    parts.extend(t.containers.iter().map(|c| format!("--container {c}")));
    if !t.command.is_empty() {
        parts.push(format!("-- {}", t.command.join(" ")));
    }
    parts.join(" ")
}

/// A random run id.
fn run_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_i64(chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    format!("{:016x}", h.finish())
}

/// The recorder for a run whose counting started now (`session` as set-up left it).
pub fn start(run: &Run, store: DirStorage, session: &Session) -> Live {
    let units: HashMap<u32, String> = session
        .targets()
        .iter()
        .filter_map(|t| match &t.subject {
            Subject::Process { ident, labels } => Some((ident.pid, labels.unit.clone())),
            Subject::Cgroup { .. } => None,
        })
        .collect();
    let meta = RunMeta {
        run: run_id(),
        started_ns: chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0),
        interval_ns: u64::try_from(run.interval.as_nanos()).unwrap_or(u64::MAX),
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        version: crate::version::text().to_string(),
        mode: mode(run),
        segment: 0,
    };
    let r = run.record.as_ref();
    let opts = Options {
        retain: r.and_then(|r| r.retain),
        retain_size: r.and_then(|r| r.retain_size),
        ..Options::default()
    };
    let label = store.path().display().to_string();
    Recorder::new(store, label, meta, opts, units)
}

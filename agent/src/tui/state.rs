//! What the interactive view knows between snapshots, and what each key does to it. Pure:
//! it takes [`Report`]s and `now`, so every behaviour here is a unit test without a terminal.
//!
//! The session reports each connection while it lives and a closed one once; the view keeps
//! closed connections (and ended rows, which the report keeps anyway) until the run ends or
//! `c` clears them, so a host talked to once still shows. Remote-host figures are sums over
//! live and closed connections; when the number of closed connections of a row passes
//! [`MAX_CLOSED`], the oldest are folded into per-host totals rather than dropped, so no byte
//! the JSON would show is lost. Pausing copies what is shown and keeps counting underneath.

use std::{
    cmp::Ordering,
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use super::keys::{Action, View};
use crate::model::{ConnDetail, Report, Row};

/// Closed connections kept per row before the oldest are folded into host totals.
pub const MAX_CLOSED: usize = 500;
/// How far back the sparkline reaches.
pub const HISTORY: Duration = Duration::from_secs(60);
/// Most samples kept per row (a 60-s history at a 100-ms interval).
const MAX_SAMPLES: usize = 600;

/// A row of the processes view, across snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowKey {
    /// A process, by PID.
    Process(u32),
    /// A workload (cgroup target or `--all` group), by name.
    Workload(String),
}

/// One line of the processes / workloads view.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Which row it is.
    pub key: RowKey,
    /// PID (processes only).
    pub pid: Option<u32>,
    /// Command name or workload name.
    pub name: String,
    /// Container / pod (`namespace/pod/container`, or a container name).
    pub container: Option<String>,
    /// Pod name, for `pod:` filters.
    pub pod: Option<String>,
    /// Pod namespace, for `ns:` filters.
    pub namespace: Option<String>,
    /// Counters, rates, peaks and connection counts.
    pub row: Row,
    /// Ended: its totals are final (shown dimmed).
    pub exited: bool,
}

/// A connection as the view keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conn {
    /// The latest figures (rates zero once closed).
    pub detail: ConnDetail,
    /// Closed (reported closed, or gone from the records).
    pub closed: bool,
    /// When its byte counts last changed (or it was first seen).
    pub last_active: Instant,
}

/// A remote host (or host:port) of one or more rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Address (`10.0.0.2`, `[::1]`), with `:port` when ports are shown.
    pub addr: String,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes sent to it.
    pub bytes_out: u64,
    /// Receive rate over live connections, bits/s.
    pub rate_in: f64,
    /// Send rate over live connections, bits/s.
    pub rate_out: f64,
    /// Live connections.
    pub live: u32,
    /// Connections ever seen (live, closed and folded).
    pub connections: u32,
    /// When traffic with it was last seen.
    pub last_seen: Instant,
}

/// Totals of closed connections folded away, per remote `host:port`.
#[derive(Debug, Clone, Copy)]
struct Folded {
    bytes_in: u64,
    bytes_out: u64,
    connections: u32,
    last_seen: Instant,
}

/// Sort columns, in the order `s` cycles through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// Rate in + out (default).
    #[default]
    Rate,
    /// Receive rate.
    RateIn,
    /// Send rate.
    RateOut,
    /// Bytes received.
    TotalIn,
    /// Bytes sent.
    TotalOut,
    /// The higher of the peak rates.
    Peak,
    /// TCP connections.
    Tcp,
    /// UDP sockets.
    Udp,
    /// PID.
    Pid,
    /// Name.
    Name,
}

impl SortBy {
    const CYCLE: [Self; 10] = [
        Self::Rate,
        Self::RateIn,
        Self::RateOut,
        Self::TotalIn,
        Self::TotalOut,
        Self::Peak,
        Self::Tcp,
        Self::Udp,
        Self::Pid,
        Self::Name,
    ];

    fn next(self) -> Self {
        let i = Self::CYCLE.iter().position(|s| *s == self).unwrap_or(0);
        Self::CYCLE[(i + 1) % Self::CYCLE.len()]
    }

    /// Column title.
    pub fn label(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::RateIn => "rate in",
            Self::RateOut => "rate out",
            Self::TotalIn => "total in",
            Self::TotalOut => "total out",
            Self::Peak => "peak",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Pid => "pid",
            Self::Name => "name",
        }
    }

    /// Figures sort highest first, names and PIDs from the lowest.
    fn descending(self) -> bool {
        !matches!(self, Self::Pid | Self::Name)
    }

    fn cmp_lines(self, a: &Line, b: &Line) -> Ordering {
        let (ra, rb) = (&a.row, &b.row);
        match self {
            Self::Rate => (ra.rate_in + ra.rate_out).total_cmp(&(rb.rate_in + rb.rate_out)),
            Self::RateIn => ra.rate_in.total_cmp(&rb.rate_in),
            Self::RateOut => ra.rate_out.total_cmp(&rb.rate_out),
            Self::TotalIn => ra.counters.bytes_in.cmp(&rb.counters.bytes_in),
            Self::TotalOut => ra.counters.bytes_out.cmp(&rb.counters.bytes_out),
            Self::Peak => peak(ra).total_cmp(&peak(rb)),
            Self::Tcp => ra.tcp_connections.cmp(&rb.tcp_connections),
            Self::Udp => ra.udp_connections.cmp(&rb.udp_connections),
            Self::Pid => a.pid.cmp(&b.pid),
            Self::Name => a.name.cmp(&b.name),
        }
    }

    /// Connections and hosts sort by the figures they have; other columns keep first-seen order.
    fn cmp_flows(self, a: Flow, b: Flow) -> Ordering {
        match self {
            Self::Rate | Self::Peak => {
                (a.rate_in + a.rate_out).total_cmp(&(b.rate_in + b.rate_out))
            }
            Self::RateIn => a.rate_in.total_cmp(&b.rate_in),
            Self::RateOut => a.rate_out.total_cmp(&b.rate_out),
            Self::TotalIn => a.bytes_in.cmp(&b.bytes_in),
            Self::TotalOut => a.bytes_out.cmp(&b.bytes_out),
            _ => Ordering::Equal,
        }
    }
}

/// The figures connections and hosts are sorted by.
#[derive(Clone, Copy)]
struct Flow {
    bytes_in: u64,
    bytes_out: u64,
    rate_in: f64,
    rate_out: f64,
}

/// The higher of a row's peak rates, bits/s.
pub fn peak(r: &Row) -> f64 {
    r.peak_rate_in.max(r.peak_rate_out)
}

/// A filter term (`/`): words must all match.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    /// Name (substring, any case), PID (prefix) or container.
    Text(String),
    /// Pod name.
    Pod(String),
    /// Pod namespace.
    Ns(String),
    /// A connection's local or remote port.
    Port(Option<u16>),
    /// A connection's remote address.
    Host(String),
}

fn parse_filter(text: &str) -> Vec<Term> {
    text.split_whitespace()
        .map(|w| {
            let lw = w.to_lowercase();
            if let Some(v) = lw.strip_prefix("pod:") {
                Term::Pod(v.into())
            } else if let Some(v) = lw.strip_prefix("ns:") {
                Term::Ns(v.into())
            } else if let Some(v) = lw.strip_prefix("port:") {
                Term::Port(v.parse().ok())
            } else if let Some(v) = lw.strip_prefix("host:") {
                Term::Host(v.into())
            } else {
                Term::Text(lw)
            }
        })
        .collect()
}

/// `10.0.0.2:443` → (`10.0.0.2`, 443); `[::1]:80` → (`[::1]`, 80); `*` → None.
pub fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

fn conn_matches(t: &Term, d: &ConnDetail) -> bool {
    match t {
        Term::Port(Some(p)) => [&d.local, &d.remote]
            .iter()
            .any(|a| split_addr(a).is_some_and(|(_, port)| port == *p)),
        Term::Host(h) => split_addr(&d.remote).is_some_and(|(a, _)| a.to_lowercase().contains(h)),
        _ => true,
    }
}

/// What is shown: the latest snapshot and what the view keeps across snapshots.
#[derive(Debug, Clone, Default)]
struct Data {
    report: Option<Report>,
    /// When `report` was taken.
    at: Option<Instant>,
    /// Per row: (rate in+out bits/s, bytes in+out) per snapshot, oldest first.
    history: HashMap<RowKey, VecDeque<(f64, u64)>>,
    /// Per row: connections, live and closed, in first-seen order.
    conns: HashMap<RowKey, Vec<Conn>>,
    /// Per row: closed connections folded into per-`host:port` totals.
    folded: HashMap<RowKey, HashMap<String, Folded>>,
}

/// The view's whole state.
#[derive(Debug)]
pub struct State {
    /// The list shown.
    pub view: View,
    /// Sort column.
    pub sort: SortBy,
    /// Sort reversed.
    pub reverse: bool,
    /// Filter text.
    pub filter: String,
    /// The filter line takes keys.
    pub editing: bool,
    /// Figures frozen (counting goes on).
    pub paused: bool,
    /// Rates in bytes per second instead of bits.
    pub bytes: bool,
    /// Sparklines of running totals instead of rates.
    pub totals: bool,
    /// Remote hosts split by port.
    pub ports: bool,
    /// Remote hosts of every row instead of the selected one.
    pub all_rows: bool,
    /// The key help is open.
    pub help: bool,
    /// The run's interval.
    pub interval: Duration,
    /// When the `-t` window ends.
    pub window_end: Option<Instant>,
    /// Lines per page (set by the renderer from the terminal's height).
    pub page: usize,
    /// The rows shown, filtered and sorted.
    pub rows: Vec<Line>,
    /// The connections shown (of the selected row), with the row they belong to.
    pub conns: Vec<(RowKey, Conn)>,
    /// The remote hosts shown.
    pub hosts: Vec<Host>,
    /// The selected row.
    pub selected: Option<RowKey>,
    /// Selected line in the connections and hosts views.
    pub cursor: usize,
    /// `procnetmon2 replay`: the status line (frame time, keys), shown instead of live
    /// figures' timing.
    pub replay: Option<String>,
    live: Data,
    frozen: Option<Data>,
    /// Display order of the rows last shown: ties keep it (no flicker).
    order: HashMap<RowKey, usize>,
    /// Ended rows cleared with `c`.
    hidden: HashSet<RowKey>,
}

impl State {
    /// A view of a run reporting every `interval`, whose window (if any) ends at `window_end`.
    pub fn new(interval: Duration, window_end: Option<Instant>) -> Self {
        Self {
            view: View::Rows,
            sort: SortBy::default(),
            reverse: false,
            filter: String::new(),
            editing: false,
            paused: false,
            bytes: false,
            totals: false,
            ports: false,
            all_rows: false,
            help: false,
            interval,
            window_end,
            page: 10,
            rows: Vec::new(),
            conns: Vec::new(),
            hosts: Vec::new(),
            selected: None,
            cursor: 0,
            replay: None,
            live: Data::default(),
            frozen: None,
            order: HashMap::new(),
            hidden: HashSet::new(),
        }
    }

    /// The report shown (frozen while paused).
    pub fn report(&self) -> Option<&Report> {
        self.shown().report.as_ref()
    }

    /// When the report shown was taken.
    pub fn shown_at(&self) -> Option<Instant> {
        self.shown().at
    }

    fn shown(&self) -> &Data {
        self.frozen.as_ref().unwrap_or(&self.live)
    }

    /// The sparkline samples of `key`: rates, or running totals with `t`.
    pub fn history(&self, key: &RowKey) -> Vec<f64> {
        self.shown().history.get(key).map_or_else(Vec::new, |h| {
            h.iter()
                .map(|&(rate, total)| if self.totals { total as f64 } else { rate })
                .collect()
        })
    }

    /// Takes the snapshot `report` taken at `now`: history, connections and hosts are kept
    /// up to date even while paused.
    pub fn ingest(&mut self, report: Report, now: Instant) {
        let cap = samples(self.interval);
        let d = &mut self.live;
        for line in lines(&report) {
            let h = d.history.entry(line.key.clone()).or_default();
            let c = line.row.counters;
            h.push_back((
                line.row.rate_in + line.row.rate_out,
                c.bytes_in.saturating_add(c.bytes_out),
            ));
            while h.len() > cap {
                h.pop_front();
            }
        }
        for (key, fresh) in conn_lists(&report) {
            let list = d.conns.entry(key.clone()).or_default();
            merge_conns(list, fresh, now);
            let folded = d.folded.entry(key).or_default();
            fold_oldest_closed(list, folded, MAX_CLOSED);
        }
        // Rows whose connections vanished from the report (an ended process): close them.
        let reported: HashSet<RowKey> = conn_lists(&report).map(|(k, _)| k).collect();
        for (key, list) in &mut d.conns {
            if !reported.contains(key) {
                merge_conns(list, &[], now);
            }
        }
        d.report = Some(report);
        d.at = Some(now);
        self.refresh();
    }

    /// Replay: forgets the reports taken so far (history, connections) but keeps the view's
    /// settings (sort, filter, selection), before the reports up to another moment are
    /// taken.
    pub fn forget_reports(&mut self) {
        self.live = Data::default();
        self.frozen = None;
        self.paused = false;
    }

    /// Applies a key's action (anything but [`Action::Quit`], which ends the run).
    pub fn apply(&mut self, action: Action) {
        match action {
            // Quitting ends the run; the pane's keys are the Tui's.
            Action::Quit
            | Action::Redraw
            | Action::KeysToCommand
            | Action::KeysToView
            | Action::ToCommand(_) => {}
            Action::SortNext => {
                self.sort = self.sort.next();
                self.reverse = false;
            }
            Action::SortReverse => self.reverse = !self.reverse,
            Action::FilterStart => self.editing = true,
            Action::FilterChar(c) => self.filter.push(c),
            Action::FilterBackspace => {
                self.filter.pop();
            }
            Action::FilterDone => self.editing = false,
            Action::FilterCancel => {
                self.editing = false;
                self.filter.clear();
            }
            Action::Pause => {
                self.paused = !self.paused;
                self.frozen = self.paused.then(|| self.live.clone());
            }
            Action::Bits => self.bytes = !self.bytes,
            Action::RatesTotals => self.totals = !self.totals,
            Action::Ports => self.ports = !self.ports,
            Action::AllRows => self.all_rows = !self.all_rows,
            Action::ClearEnded => self.clear_ended(),
            Action::Show(v) => self.show(v),
            Action::Open => {
                if self.view == View::Rows {
                    self.show(View::Connections);
                }
            }
            Action::Back => self.show(View::Rows),
            Action::Move(n) => self.move_by(n as isize),
            Action::Page(n) => self.move_by(n as isize * self.page.max(1) as isize),
            Action::Home => self.move_by(isize::MIN / 2),
            Action::End => self.move_by(isize::MAX / 2),
            Action::Help => self.help = !self.help,
        }
        self.refresh();
    }

    fn show(&mut self, v: View) {
        if v != self.view {
            self.view = v;
            self.cursor = 0;
        }
    }

    fn move_by(&mut self, n: isize) {
        let len = match self.view {
            View::Rows => self.rows.len(),
            View::Connections => self.conns.len(),
            View::Hosts => self.hosts.len(),
        };
        if len == 0 {
            return;
        }
        let cur = match self.view {
            View::Rows => self.row_cursor(),
            _ => self.cursor,
        };
        let next = (cur as isize).saturating_add(n).clamp(0, len as isize - 1) as usize;
        match self.view {
            View::Rows => self.selected = Some(self.rows[next].key.clone()),
            _ => self.cursor = next,
        }
    }

    /// The selected line of the rows view.
    pub fn row_cursor(&self) -> usize {
        self.selected
            .as_ref()
            .and_then(|k| self.rows.iter().position(|l| &l.key == k))
            .unwrap_or(0)
    }

    /// The selected row's line, if any is shown.
    pub fn selected_line(&self) -> Option<&Line> {
        self.rows.get(self.row_cursor())
    }

    /// `c`: forgets ended rows and closed connections (also in a paused view).
    fn clear_ended(&mut self) {
        let ended: Vec<RowKey> = self
            .rows
            .iter()
            .filter(|l| l.exited)
            .map(|l| l.key.clone())
            .collect();
        self.hidden.extend(ended);
        for d in std::iter::once(&mut self.live).chain(self.frozen.as_mut()) {
            for list in d.conns.values_mut() {
                list.retain(|c| !c.closed);
            }
            d.folded.clear();
        }
    }

    /// Recomputes the lists shown from the data shown and the view settings.
    fn refresh(&mut self) {
        let terms = parse_filter(&self.filter);
        let data = self.frozen.as_ref().unwrap_or(&self.live);
        let mut rows: Vec<Line> = data
            .report
            .as_ref()
            .map(lines)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| !self.hidden.contains(&l.key))
            .filter(|l| {
                let conns = data.conns.get(&l.key).map_or(&[][..], Vec::as_slice);
                terms.iter().all(|t| line_matches(t, l, conns))
            })
            .collect();
        // Previous order first (new rows after, in report order), then a stable sort: rows
        // whose figures tie keep their place.
        rows.sort_by_key(|l| self.order.get(&l.key).copied().unwrap_or(usize::MAX));
        let (sort, desc) = (self.sort, self.sort.descending() != self.reverse);
        rows.sort_by(|a, b| {
            let o = sort.cmp_lines(a, b);
            if desc { o.reverse() } else { o }
        });
        self.order = rows
            .iter()
            .enumerate()
            .map(|(i, l)| (l.key.clone(), i))
            .collect();
        if self
            .selected
            .as_ref()
            .is_none_or(|k| !self.order.contains_key(k))
        {
            self.selected = rows.first().map(|l| l.key.clone());
        }
        self.rows = rows;
        let keys: Vec<RowKey> = if self.view == View::Hosts && self.all_rows {
            self.rows.iter().map(|l| l.key.clone()).collect()
        } else {
            self.selected.iter().cloned().collect()
        };
        let data = self.frozen.as_ref().unwrap_or(&self.live);
        let mut conns: Vec<(RowKey, Conn)> = keys
            .iter()
            .flat_map(|k| {
                data.conns
                    .get(k)
                    .into_iter()
                    .flatten()
                    .filter(|c| terms.iter().all(|t| conn_matches(t, &c.detail)))
                    .map(|c| (k.clone(), c.clone()))
            })
            .collect();
        conns.sort_by(|(_, a), (_, b)| {
            let o = sort.cmp_flows(flow_of(&a.detail), flow_of(&b.detail));
            if desc { o.reverse() } else { o }
        });
        let mut hosts = hosts_of(&conns, &keys, &data.folded, self.ports, &terms);
        hosts.sort_by(|a, b| {
            let fa = Flow {
                bytes_in: a.bytes_in,
                bytes_out: a.bytes_out,
                rate_in: a.rate_in,
                rate_out: a.rate_out,
            };
            let fb = Flow {
                bytes_in: b.bytes_in,
                bytes_out: b.bytes_out,
                rate_in: b.rate_in,
                rate_out: b.rate_out,
            };
            let o = sort.cmp_flows(fa, fb).then_with(|| {
                // Ties (and columns hosts lack) by total bytes, then address: a stable list.
                (a.bytes_in + a.bytes_out)
                    .cmp(&(b.bytes_in + b.bytes_out))
                    .then_with(|| b.addr.cmp(&a.addr))
            });
            if desc { o.reverse() } else { o }
        });
        self.conns = conns;
        self.hosts = hosts;
        let len = match self.view {
            View::Rows => 0,
            View::Connections => self.conns.len(),
            View::Hosts => self.hosts.len(),
        };
        self.cursor = self.cursor.min(len.saturating_sub(1));
    }
}

fn flow_of(d: &ConnDetail) -> Flow {
    Flow {
        bytes_in: d.bytes_in,
        bytes_out: d.bytes_out,
        rate_in: d.rate_in,
        rate_out: d.rate_out,
    }
}

/// Samples that cover [`HISTORY`] at `interval`.
fn samples(interval: Duration) -> usize {
    let n = HISTORY.as_secs_f64() / interval.as_secs_f64().max(1e-3);
    (n.ceil() as usize).clamp(1, MAX_SAMPLES)
}

fn line_matches(t: &Term, l: &Line, conns: &[Conn]) -> bool {
    let has =
        |v: &Option<String>, s: &str| v.as_ref().is_some_and(|v| v.to_lowercase().contains(s));
    match t {
        Term::Text(s) => {
            l.name.to_lowercase().contains(s.as_str())
                || l.pid.is_some_and(|p| p.to_string().starts_with(s.as_str()))
                || has(&l.container, s)
        }
        Term::Pod(s) => has(&l.pod, s) || (l.pod.is_none() && has(&l.container, s)),
        Term::Ns(s) => has(&l.namespace, s),
        Term::Port(None) => false,
        Term::Port(_) | Term::Host(_) => conns.iter().any(|c| conn_matches(t, &c.detail)),
    }
}

/// The lines of a report: processes, then workloads.
pub fn lines(r: &Report) -> Vec<Line> {
    let procs = r.processes.iter().map(|p| Line {
        key: RowKey::Process(p.pid),
        pid: Some(p.pid),
        name: p.name.clone(),
        container: p.container.as_ref().map(|c| c.workload()),
        pod: p.container.as_ref().and_then(|c| c.pod.clone()),
        namespace: p.container.as_ref().and_then(|c| c.namespace.clone()),
        row: p.row,
        exited: p.exited,
    });
    let works = r.workloads.iter().map(|w| Line {
        key: RowKey::Workload(w.name.clone()),
        pid: None,
        name: w.name.clone(),
        container: w.container.as_ref().map(|c| c.workload()),
        pod: w.container.as_ref().and_then(|c| c.pod.clone()),
        namespace: w.container.as_ref().and_then(|c| c.namespace.clone()),
        row: w.row,
        exited: w.exited,
    });
    procs.chain(works).collect()
}

/// Each row's connection list in a report (rows without records have none).
fn conn_lists(r: &Report) -> impl Iterator<Item = (RowKey, &[ConnDetail])> {
    let procs = r.processes.iter().filter_map(|p| {
        p.connections
            .as_deref()
            .map(|c| (RowKey::Process(p.pid), c))
    });
    let works = r.workloads.iter().filter_map(|w| {
        w.connections
            .as_deref()
            .map(|c| (RowKey::Workload(w.name.clone()), c))
    });
    procs.chain(works)
}

/// Updates `list` with this snapshot's connections of its row: new ones are appended, known
/// ones updated in place; a live one missing from `fresh`, or reported `CLOSED`, is closed.
fn merge_conns(list: &mut Vec<Conn>, fresh: &[ConnDetail], now: Instant) {
    let mut live: HashMap<(&'static str, String, String), usize> = list
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.closed)
        .map(|(i, c)| {
            let d = &c.detail;
            ((d.protocol, d.local.clone(), d.remote.clone()), i)
        })
        .collect();
    let mut seen = vec![false; list.len()];
    for d in fresh {
        let closed = d.state == "CLOSED";
        let key = (d.protocol, d.local.clone(), d.remote.clone());
        match live.remove(&key) {
            Some(i) => {
                let c = &mut list[i];
                if (c.detail.bytes_in, c.detail.bytes_out) != (d.bytes_in, d.bytes_out) {
                    c.last_active = now;
                }
                c.detail = d.clone();
                c.closed = closed;
                seen[i] = true;
            }
            None => list.push(Conn {
                detail: d.clone(),
                closed,
                last_active: now,
            }),
        }
    }
    for (i, c) in list.iter_mut().enumerate() {
        if !c.closed && !seen.get(i).copied().unwrap_or(true) {
            c.closed = true;
        }
    }
    for c in list.iter_mut().filter(|c| c.closed) {
        c.detail.state = "CLOSED";
        c.detail.rate_in = 0.0;
        c.detail.rate_out = 0.0;
    }
}

/// Keeps at most `max` closed connections in `list`: the oldest (by last activity) are
/// folded into `folded`, so their bytes still count for their remote host.
fn fold_oldest_closed(list: &mut Vec<Conn>, folded: &mut HashMap<String, Folded>, max: usize) {
    let closed = list.iter().filter(|c| c.closed).count();
    if closed <= max {
        return;
    }
    let mut ages: Vec<Instant> = list
        .iter()
        .filter(|c| c.closed)
        .map(|c| c.last_active)
        .collect();
    ages.sort();
    let cut = ages[closed - max - 1];
    let mut excess = closed - max;
    list.retain(|c| {
        if excess == 0 || !c.closed || c.last_active > cut {
            return true;
        }
        excess -= 1;
        let f = folded.entry(c.detail.remote.clone()).or_insert(Folded {
            bytes_in: 0,
            bytes_out: 0,
            connections: 0,
            last_seen: c.last_active,
        });
        f.bytes_in += c.detail.bytes_in;
        f.bytes_out += c.detail.bytes_out;
        f.connections += 1;
        f.last_seen = f.last_seen.max(c.last_active);
        false
    });
}

/// Remote hosts over `conns` plus the folded totals of rows `keys`: by address, or by
/// address and port with `ports`. Connections without a remote (`*`) are left out.
fn hosts_of(
    conns: &[(RowKey, Conn)],
    keys: &[RowKey],
    folded: &HashMap<RowKey, HashMap<String, Folded>>,
    ports: bool,
    terms: &[Term],
) -> Vec<Host> {
    let name = |remote: &str| -> Option<String> {
        let (host, port) = split_addr(remote)?;
        Some(if ports {
            remote.to_owned()
        } else {
            let _ = port;
            host.to_owned()
        })
    };
    let mut by: HashMap<String, Host> = HashMap::new();
    for (_, c) in conns {
        let Some(addr) = name(&c.detail.remote) else {
            continue;
        };
        let h = host_entry(&mut by, addr, c.last_active);
        h.bytes_in += c.detail.bytes_in;
        h.bytes_out += c.detail.bytes_out;
        h.rate_in += c.detail.rate_in;
        h.rate_out += c.detail.rate_out;
        h.connections += 1;
        h.live += u32::from(!c.closed);
    }
    for k in keys {
        for (remote, f) in folded.get(k).into_iter().flatten() {
            let Some(addr) = name(remote) else { continue };
            let probe = ConnDetail {
                remote: remote.clone(),
                ..blank_detail()
            };
            if !terms.iter().all(|t| conn_matches(t, &probe)) {
                continue;
            }
            let h = host_entry(&mut by, addr, f.last_seen);
            h.bytes_in += f.bytes_in;
            h.bytes_out += f.bytes_out;
            h.connections += f.connections;
        }
    }
    by.into_values().collect()
}

/// The host `addr` in `by` (a new one with nothing yet), last seen no earlier than `at`.
fn host_entry(by: &mut HashMap<String, Host>, addr: String, at: Instant) -> &mut Host {
    let h = by.entry(addr.clone()).or_insert(Host {
        addr,
        bytes_in: 0,
        bytes_out: 0,
        rate_in: 0.0,
        rate_out: 0.0,
        live: 0,
        connections: 0,
        last_seen: at,
    });
    h.last_seen = h.last_seen.max(at);
    h
}

fn blank_detail() -> ConnDetail {
    ConnDetail {
        protocol: "tcp",
        local: String::new(),
        remote: String::new(),
        state: "CLOSED",
        bytes_in: 0,
        bytes_out: 0,
        rate_in: 0.0,
        rate_out: 0.0,
        age: Duration::ZERO,
        rtt_us: None,
        retransmits: None,
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! Draws the interactive view from its [`State`]: a header (totals, interval, window left,
//! untracked traffic), one of three tables (rows, connections, remote hosts), a footer with
//! the filter and the sort, and the key help over them on `?`. Pure drawing: the clock is a
//! parameter, so render tests on ratatui's `TestBackend` see fixed text. Every text that comes
//! from outside (process, cgroup and container names, the filter) goes through
//! `render::printable`, the one escaping function the table uses too: a name carrying an escape
//! sequence reads the same, escaped, in both, and never reaches the terminal.

use std::time::{Duration, Instant};

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line as TextLine, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, TableState},
};

use super::{
    keys::{HELP, View},
    state::{Line, SortBy, State, peak},
};
use crate::{
    model::{ConnDetail, TcpHealth, rtt_bucket_bound_us},
    render::{DisplayBytes, DisplayRate, DisplayRtt, compact_duration, printable},
};

/// Width of the sparkline column, in cells.
const SPARK_WIDTH: usize = 20;
/// Width of the RTT histogram's bars in the drill-down, in cells.
const BAR_WIDTH: usize = 30;
/// Most RTT buckets the drill-down shows (the non-empty ones, lowest first).
const MAX_BARS: usize = 8;
const DIM: Style = Style::new().add_modifier(Modifier::DIM);
const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);
const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
/// Marks the selected line also where reverse video does not show (a text capture).
const MARK: &str = ">";

/// Lines of the table body for a frame of `height` rows (what PgUp/PgDn move by).
pub fn page_for(height: u16) -> usize {
    usize::from(height.saturating_sub(6)).max(1)
}

/// Draws the whole view at `now`.
pub fn draw(f: &mut Frame<'_>, s: &State, now: Instant) {
    draw_in(f, f.area(), s, now);
}

/// Draws the view in `area` (the frame, less the pane of a command) at `now`.
pub fn draw_in(f: &mut Frame<'_>, area: Rect, s: &State, now: Instant) {
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(header(s, now)), head);
    match s.view {
        View::Rows => rows_table(f, s, body),
        View::Connections => conns_table(f, s, body),
        View::Hosts => hosts_table(f, s, body),
    }
    f.render_widget(Paragraph::new(footer(s)), foot);
    if s.help {
        help(f, body);
    }
}

/// A rate in bits/s, or bytes/s with `b`.
fn rate(v: f64, bytes: bool) -> String {
    if bytes {
        format!("{}/s", DisplayBytes((v / 8.0).max(0.0) as u64))
    } else {
        DisplayRate(v).to_string()
    }
}

/// `samples` as block characters, scaled to their highest value, squeezed into `width`
/// cells (the highest sample of each group of neighbours), newest on the right.
pub fn spark(samples: &[f64], width: usize) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if samples.is_empty() || width == 0 {
        return String::new();
    }
    let per = samples.len().div_ceil(width);
    let cells: Vec<f64> = samples
        .rchunks(per)
        .rev()
        .map(|c| c.iter().copied().fold(0.0, f64::max))
        .collect();
    let top = cells.iter().copied().fold(0.0, f64::max);
    cells
        .iter()
        .map(|&v| {
            if top <= 0.0 || v <= 0.0 {
                BARS[0]
            } else {
                BARS[((v / top) * 8.0).ceil().clamp(1.0, 8.0) as usize]
            }
        })
        .collect()
}

fn header(s: &State, now: Instant) -> Vec<TextLine<'static>> {
    let Some(r) = s.report() else {
        return vec![TextLine::from(
            "procnetmon2: waiting for the first interval…",
        )];
    };
    let (mut bin, mut bout, mut rin, mut rout) = (0_u64, 0_u64, 0.0, 0.0);
    for l in super::state::lines(r) {
        bin += l.row.counters.bytes_in;
        bout += l.row.counters.bytes_out;
        rin += l.row.rate_in;
        rout += l.row.rate_out;
    }
    let mut first = vec![
        Span::styled("procnetmon2", BOLD),
        Span::raw(format!(
            "  rows {}  in {} {}  out {} {}  every {}",
            s.rows.len(),
            DisplayBytes(bin),
            rate(rin, s.bytes),
            DisplayBytes(bout),
            rate(rout, s.bytes),
            humantime::format_duration(s.interval),
        )),
    ];
    if let Some(end) = s.window_end {
        let left = end.saturating_duration_since(now);
        first.push(Span::raw(format!(
            "  window {} left",
            compact_duration(left + Duration::from_millis(999))
        )));
    }
    if s.paused {
        first.push(Span::styled("  PAUSED", BOLD));
    }
    if let Some(status) = &s.replay {
        first.push(Span::styled("  REPLAY ", BOLD));
        first.push(Span::raw(status.clone()));
    }
    let second = if r.untracked.bytes_in + r.untracked.bytes_out > 0
        || r.untracked_sockets > 0
        || r.untracked_processes > 0
    {
        let mut why = Vec::new();
        if r.untracked_sockets > 0 {
            why.push(format!(
                "{} sockets whose owner could not be recorded",
                r.untracked_sockets
            ));
        }
        if r.untracked_processes > 0 {
            why.push(format!(
                "{} forked processes could not join their target",
                r.untracked_processes
            ));
        }
        if why.is_empty() {
            why.push("target sockets not charged to a target".into());
        }
        TextLine::from(Span::raw(format!(
            "untracked: in {} out {} ({})",
            DisplayBytes(r.untracked.bytes_in),
            DisplayBytes(r.untracked.bytes_out),
            why.join("; ")
        )))
    } else {
        TextLine::default()
    };
    vec![TextLine::from(first), second]
}

fn footer(s: &State) -> TextLine<'static> {
    if s.editing {
        return TextLine::from(vec![
            Span::styled("filter: ", BOLD),
            Span::raw(format!("{}█", printable(&s.filter))),
            Span::styled("  (Enter keep, Esc drop)", DIM),
        ]);
    }
    let mut spans = Vec::new();
    if !s.filter.is_empty() {
        spans.push(Span::raw(format!("filter: {}  ", printable(&s.filter))));
    }
    let arrow = if (s.sort != SortBy::Pid && s.sort != SortBy::Name) != s.reverse {
        "▼"
    } else {
        "▲"
    };
    spans.push(Span::raw(format!("sort: {} {arrow}  ", s.sort.label())));
    spans.push(Span::styled(
        "1 rows 2 connections 3 hosts  ? keys  q quit",
        DIM,
    ));
    TextLine::from(spans)
}

/// A header cell, marked when it is the sort column.
fn head(title: &str, col: Option<SortBy>, s: &State) -> Cell<'static> {
    let mark = match col {
        Some(c) if c == s.sort => {
            if (c != SortBy::Pid && c != SortBy::Name) != s.reverse {
                "▼"
            } else {
                "▲"
            }
        }
        _ => "",
    };
    Cell::from(format!("{title}{mark}")).style(BOLD)
}

fn rows_table(f: &mut Frame<'_>, s: &State, area: Rect) {
    let with_container = s.rows.iter().any(|l| l.container.is_some());
    let mut titles = vec![
        head("PID", Some(SortBy::Pid), s),
        head("NAME", Some(SortBy::Name), s),
    ];
    let mut widths = vec![Constraint::Length(8), Constraint::Fill(1)];
    if with_container {
        titles.push(head("CONTAINER", None, s));
        widths.push(Constraint::Fill(1));
    }
    let spark_title = if s.totals { "TOTAL 60s" } else { "RATE 60s" };
    titles.extend([
        head("RATE IN", Some(SortBy::RateIn), s),
        head("RATE OUT", Some(SortBy::RateOut), s),
        head("TOTAL IN", Some(SortBy::TotalIn), s),
        head("TOTAL OUT", Some(SortBy::TotalOut), s),
        head("TCP", Some(SortBy::Tcp), s),
        head("UDP", Some(SortBy::Udp), s),
    ]);
    widths.extend([
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(4),
        Constraint::Length(4),
    ]);
    // TCP health once any row has some (as the container column once any row has one).
    let with_health = s.rows.iter().any(|l| !l.row.health.is_empty());
    if with_health {
        titles.push(head("FAIL/RETX/RTT", None, s));
        widths.push(Constraint::Length(14));
    }
    titles.extend([
        head("PEAK", Some(SortBy::Peak), s),
        head(spark_title, Some(SortBy::Rate), s),
    ]);
    widths.extend([
        Constraint::Length(10),
        Constraint::Length(SPARK_WIDTH as u16),
    ]);
    let body = s.rows.iter().map(|l: &Line| {
        let r = &l.row;
        let mut cells = vec![
            Cell::from(l.pid.map_or_else(|| "-".into(), |p| p.to_string())),
            Cell::from(if l.exited {
                format!("{} (ended)", printable(&l.name))
            } else {
                printable(&l.name).into_owned()
            }),
        ];
        if with_container {
            cells.push(Cell::from(
                printable(l.container.as_deref().unwrap_or_default()).into_owned(),
            ));
        }
        cells.extend([
            Cell::from(rate(r.rate_in, s.bytes)),
            Cell::from(rate(r.rate_out, s.bytes)),
            Cell::from(DisplayBytes(r.counters.bytes_in).to_string()),
            Cell::from(DisplayBytes(r.counters.bytes_out).to_string()),
            Cell::from(r.tcp_connections.to_string()),
            Cell::from(r.udp_connections.to_string()),
        ]);
        if with_health {
            cells.push(Cell::from(health_cell(&r.health)));
        }
        cells.extend([
            Cell::from(rate(peak(r), s.bytes)),
            Cell::from(spark(&s.history(&l.key), SPARK_WIDTH)),
        ]);
        let row = TableRow::new(cells);
        if l.exited { row.style(DIM) } else { row }
    });
    let title = if s.rows.is_empty() && !s.filter.is_empty() {
        " Processes and workloads: none match the filter ".to_owned()
    } else {
        " Processes and workloads ".to_owned()
    };
    let table = Table::new(body, widths)
        .header(TableRow::new(titles))
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(SELECTED)
        .highlight_symbol(MARK);
    let mut ts = TableState::default().with_selected((!s.rows.is_empty()).then(|| s.row_cursor()));
    f.render_stateful_widget(table, area, &mut ts);
}

/// The health column: connect failures / retransmitted segments / RTT p50 over the run (or
/// window) so far; `-` while nothing was counted.
pub fn health_cell(h: &TcpHealth) -> String {
    if h.is_empty() {
        return "-".into();
    }
    format!(
        "{}/{}/{}",
        h.connect_failures,
        h.retransmitted_segments,
        DisplayRtt(h.rtt.quantile_us(0.5))
    )
}

/// The drill-down's TCP health of the selected row: one summary line, then its RTT
/// histogram, one bar per non-empty log2 bucket (at most [`MAX_BARS`], lowest first).
pub fn health_panel(name: &str, h: &TcpHealth) -> Vec<TextLine<'static>> {
    if h.is_empty() {
        return vec![TextLine::from(vec![
            Span::styled(format!(" TCP health of {name}: "), BOLD),
            Span::raw("no failed connect, no retransmission, no RTT sample yet"),
        ])];
    }
    let q = |x: f64| DisplayRtt(h.rtt.quantile_us(x)).to_string();
    let mut out = vec![TextLine::from(vec![
        Span::styled(format!(" TCP health of {name}: "), BOLD),
        Span::raw(format!(
            "{} failed connects, {} retransmitted segments; RTT p50 {} p90 {} p99 {} max {} ({} samples)",
            h.connect_failures,
            h.retransmitted_segments,
            q(0.5),
            q(0.9),
            q(0.99),
            DisplayRtt(h.rtt.max_us()),
            h.rtt.count()
        )),
    ])];
    let top = h.rtt.buckets.iter().copied().max().unwrap_or(0);
    let bars: Vec<(usize, u64)> = h
        .rtt
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (i, *n))
        .collect();
    for (i, n) in bars.iter().take(MAX_BARS) {
        let len = ((*n as f64 / top as f64) * BAR_WIDTH as f64).ceil() as usize;
        out.push(TextLine::from(vec![
            Span::styled(
                format!(
                    "  ≤{:>7} ",
                    DisplayRtt(Some(rtt_bucket_bound_us(*i))).to_string()
                ),
                DIM,
            ),
            Span::raw(format!("{:<BAR_WIDTH$} {n}", "█".repeat(len.max(1)))),
        ]));
    }
    if bars.len() > MAX_BARS {
        out.push(TextLine::from(Span::styled(
            format!("  … {} more buckets", bars.len() - MAX_BARS),
            DIM,
        )));
    }
    out
}

/// "of 1234 curl" for the selected row.
fn whose(s: &State) -> String {
    match s.selected_line() {
        Some(l) => match l.pid {
            Some(p) => format!("{p} {}", printable(&l.name)),
            None => printable(&l.name).into_owned(),
        },
        None => "(no row selected)".into(),
    }
}

fn conns_table(f: &mut Frame<'_>, s: &State, area: Rect) {
    // The selected row's TCP health above its connections.
    let area = match s.selected_line() {
        Some(l) => {
            let panel = health_panel(&whose(s), &l.row.health);
            let [top, rest] =
                Layout::vertical([Constraint::Length(panel.len() as u16), Constraint::Min(3)])
                    .areas(area);
            f.render_widget(Paragraph::new(panel), top);
            rest
        }
        None => area,
    };
    let titles = vec![
        head("PROTO", None, s),
        head("LOCAL", None, s),
        head("REMOTE", None, s),
        head("STATE", None, s),
        head("IN", Some(SortBy::TotalIn), s),
        head("OUT", Some(SortBy::TotalOut), s),
        head("RATE IN", Some(SortBy::RateIn), s),
        head("RATE OUT", Some(SortBy::RateOut), s),
        head("AGE", None, s),
        head("RTT", None, s),
        head("RETX", None, s),
    ];
    // Addresses are never cut: their columns are as wide as the longest one shown.
    let width_of = |f: fn(&ConnDetail) -> &str, title: &str| {
        let w = s
            .conns
            .iter()
            .map(|(_, c)| f(&c.detail).len())
            .max()
            .unwrap_or(0);
        Constraint::Length(w.max(title.len()) as u16)
    };
    let widths = [
        Constraint::Length(5),
        width_of(|d| &d.local, "LOCAL"),
        width_of(|d| &d.remote, "REMOTE"),
        Constraint::Length(11),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(4),
    ];
    let body = s.conns.iter().map(|(_, c)| {
        let d = &c.detail;
        let row = TableRow::new(vec![
            Cell::from(d.protocol),
            Cell::from(printable(&d.local).into_owned()),
            Cell::from(printable(&d.remote).into_owned()),
            Cell::from(d.state),
            Cell::from(DisplayBytes(d.bytes_in).to_string()),
            Cell::from(DisplayBytes(d.bytes_out).to_string()),
            Cell::from(rate(d.rate_in, s.bytes)),
            Cell::from(rate(d.rate_out, s.bytes)),
            Cell::from(compact_duration(d.age)),
            Cell::from(d.rtt_us.map_or_else(
                || "-".into(),
                |us| format!("{:.1}ms", f64::from(us) / 1000.0),
            )),
            Cell::from(d.retransmits.map_or_else(|| "-".into(), |r| r.to_string())),
        ]);
        if c.closed { row.style(DIM) } else { row }
    });
    let live = s.conns.iter().filter(|(_, c)| !c.closed).count();
    let title = format!(
        " Connections of {}: {live} open, {} closed ",
        whose(s),
        s.conns.len() - live
    );
    let table = Table::new(body, widths)
        .header(TableRow::new(titles))
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(SELECTED)
        .highlight_symbol(MARK);
    let mut ts = TableState::default().with_selected((!s.conns.is_empty()).then_some(s.cursor));
    f.render_stateful_widget(table, area, &mut ts);
}

fn hosts_table(f: &mut Frame<'_>, s: &State, area: Rect) {
    let at = s.shown_at();
    let titles = vec![
        head("REMOTE", None, s),
        head("IN", Some(SortBy::TotalIn), s),
        head("OUT", Some(SortBy::TotalOut), s),
        head("RATE IN", Some(SortBy::RateIn), s),
        head("RATE OUT", Some(SortBy::RateOut), s),
        head("CONNS", None, s),
        head("LAST SEEN", None, s),
    ];
    let addr = s.hosts.iter().map(|h| h.addr.len()).max().unwrap_or(0);
    let widths = [
        Constraint::Length(addr.max(15) as u16),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(10),
    ];
    let body = s.hosts.iter().map(|h| {
        let ago = at.map_or(Duration::ZERO, |t| t.saturating_duration_since(h.last_seen));
        let row = TableRow::new(vec![
            Cell::from(printable(&h.addr).into_owned()),
            Cell::from(DisplayBytes(h.bytes_in).to_string()),
            Cell::from(DisplayBytes(h.bytes_out).to_string()),
            Cell::from(rate(h.rate_in, s.bytes)),
            Cell::from(rate(h.rate_out, s.bytes)),
            Cell::from(format!("{}/{}", h.live, h.connections)),
            Cell::from(if h.live > 0 && ago.is_zero() {
                "now".to_owned()
            } else {
                format!("{} ago", compact_duration(ago))
            }),
        ]);
        if h.live == 0 { row.style(DIM) } else { row }
    });
    let title = if s.all_rows {
        " Remote hosts of every row (a: selected row) ".to_owned()
    } else {
        format!(" Remote hosts of {} (a: every row) ", whose(s))
    };
    let table = Table::new(body, widths)
        .header(TableRow::new(titles))
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(SELECTED)
        .highlight_symbol(MARK);
    let mut ts = TableState::default().with_selected((!s.hosts.is_empty()).then_some(s.cursor));
    f.render_stateful_widget(table, area, &mut ts);
}

fn help(f: &mut Frame<'_>, area: Rect) {
    let keyw = HELP.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let textw = HELP.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
    let w = (keyw + 2 + textw + 2) as u16;
    let h = HELP.len() as u16 + 2;
    let rect = Rect {
        x: area.x + area.width.saturating_sub(w) / 2,
        y: area.y + area.height.saturating_sub(h) / 2,
        width: w.min(area.width),
        height: h.min(area.height),
    };
    let text: Vec<TextLine<'_>> = HELP
        .iter()
        .map(|(k, t)| {
            TextLine::from(vec![
                Span::styled(format!("{k:>keyw$}"), BOLD),
                Span::raw(format!("  {t}")),
            ])
        })
        .collect();
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" Keys ")),
        rect,
    );
}

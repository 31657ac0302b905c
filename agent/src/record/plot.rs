//! `replay DIR --plot FILE.svg`: the rates over time of the busiest rows, as an SVG picture
//! for a ticket or a chat. The y axis is in bit/s (the table's units), the x axis has time
//! labels, a legend names each row. Time is cut into at most [`COLUMNS`] columns, each
//! showing the highest rate inside it, so a day of one-second frames draws as quickly as a
//! minute and no peak disappears; an interval with no frame (a gap in the recording) breaks
//! the line.

use std::{collections::HashMap, fmt::Write as _};

use super::{
    codec::{Entity, Kind},
    reader::Recording,
    window::{RowKey, row_key},
};

/// Columns of the plot (its width in user units).
pub const COLUMNS: usize = 900;
const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 90.0;
const TOP: f64 = 40.0;
const PLOT_W: f64 = COLUMNS as f64;
const PLOT_H: f64 = 380.0;

/// Colours that stay apart for most eyes (Okabe–Ito), then a few more.
const COLOURS: [&str; 12] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
    "#7F7F7F", "#8C564B", "#17BECF", "#BCBD22",
];

/// One row's line: its name and, per column, the highest rate (None: no frame there).
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's text.
    pub name: String,
    /// Highest receive + send rate per column, bit/s.
    pub columns: Vec<Option<f64>>,
}

/// A row's name in the legend.
fn legend(e: &Entity) -> String {
    let name = e.strs.first().cloned().flatten().unwrap_or_default();
    match e.kind {
        Kind::Process => format!("{name} ({})", e.nums[19]),
        _ => name,
    }
}

/// The `top` busiest rows of `[from, to]` (by bytes in and out in the window) and their
/// rates per column; and the window's first and last frame times.
pub fn series(
    rec: &Recording,
    from: Option<i64>,
    to: Option<i64>,
    top: usize,
) -> Option<(Vec<Series>, (i64, i64))> {
    let summary = super::window::summarize(rec, from, to)?;
    let mut volume: Vec<(RowKey, String, u64)> = Vec::new();
    for p in &summary.processes {
        let c = p.row.counters;
        volume.push((
            RowKey::Process(p.pid, p.name.clone()),
            String::new(),
            c.bytes_in + c.bytes_out,
        ));
    }
    for w in &summary.workloads {
        let c = w.row.counters;
        volume.push((
            RowKey::Workload(w.name.clone(), w.cgroup.clone()),
            String::new(),
            c.bytes_in + c.bytes_out,
        ));
    }
    volume.sort_by_key(|v| std::cmp::Reverse(v.2));
    volume.truncate(top);
    let chosen: HashMap<RowKey, usize> = volume
        .iter()
        .enumerate()
        .map(|(i, (k, _, _))| (k.clone(), i))
        .collect();
    let (first, last) = {
        let (a, b) = rec.span();
        (from.map_or(a, |f| f.max(a)), to.map_or(b, |t| t.min(b)))
    };
    let span = (last - first).max(1);
    let column = |t: i64| {
        usize::try_from((i128::from(t - first) * (COLUMNS as i128 - 1) / i128::from(span)).max(0))
            .unwrap_or(0)
            .min(COLUMNS - 1)
    };
    let mut out: Vec<Series> = volume
        .iter()
        .map(|_| Series {
            name: String::new(),
            columns: vec![None; COLUMNS],
        })
        .collect();
    let mut ids: HashMap<u32, Option<usize>> = HashMap::new();
    rec.scan(Some(first), |_, head, dec, first_of_part| {
        if first_of_part {
            // Ids are numbered afresh in every block.
            ids.clear();
        }
        if head.time_ns < first {
            return true;
        }
        if head.time_ns > last {
            return false;
        }
        let c = column(head.time_ns);
        for (id, e) in dec.rows() {
            let ix = *ids
                .entry(id)
                .or_insert_with(|| chosen.get(&row_key(e)).copied());
            let Some(i) = ix else {
                continue;
            };
            let s = &mut out[i];
            if s.name.is_empty() {
                s.name = legend(e);
            }
            let rate = e.rates.0 + e.rates.1;
            s.columns[c] = Some(s.columns[c].map_or(rate, |r: f64| r.max(rate)));
        }
        true
    });
    fill_short_holes(&mut out, rec, span);
    Some((out, (first, last)))
}

/// Columns are narrower than an interval when the window is short: a column without a frame
/// between two that have one is not a gap unless the time between them is more than one and
/// a half intervals.
fn fill_short_holes(series: &mut [Series], rec: &Recording, span: i64) {
    let interval = rec
        .segments
        .first()
        .map_or(1_000_000_000, |s| s.meta().interval_ns);
    let per_col = span as f64 / (COLUMNS - 1) as f64;
    let max_hole = ((interval as f64 * 1.5) / per_col).floor() as usize;
    for s in series {
        let mut last: Option<(usize, f64)> = None;
        for i in 0..COLUMNS {
            if let Some(v) = s.columns[i] {
                if let Some((j, prev)) = last
                    && i - j > 1
                    && i - j <= max_hole
                {
                    for k in j + 1..i {
                        s.columns[k] = Some(prev.min(v));
                    }
                }
                last = Some((i, v));
            }
        }
    }
}

/// A round step for about `n` ticks up to `max` (1, 2 or 5 times a power of ten).
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10_f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A rate as the table prints it (bps, Kbps, Mbps, Gbps; 1 K = 1000).
pub fn bits(v: f64) -> String {
    let (div, unit) = match v {
        v if v >= 1e9 => (1e9, "Gbps"),
        v if v >= 1e6 => (1e6, "Mbps"),
        v if v >= 1e3 => (1e3, "Kbps"),
        _ => (1.0, "bps"),
    };
    let x = v / div;
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0} {unit}")
    } else {
        format!("{x:.1} {unit}")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG text for `series` over `[first, last]` (UTC offset `offset_s` for the labels).
pub fn svg(series: &[Series], (first, last): (i64, i64), offset_s: i32, title: &str) -> String {
    let max = series
        .iter()
        .flat_map(|s| s.columns.iter().flatten())
        .fold(0.0_f64, |a, b| a.max(*b));
    let step = nice_step(max.max(1.0), 5.0);
    let top = (max / step).ceil().max(1.0) * step;
    let y = |v: f64| TOP + PLOT_H - v / top * PLOT_H;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" viewBox="0 0 {WIDTH} {}" font-family="sans-serif" font-size="12">"#,
        HEIGHT + 20.0 * series.len().div_ceil(2) as f64,
        HEIGHT + 20.0 * series.len().div_ceil(2) as f64
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="24" font-size="15">{}</text>"#,
        xml(title)
    );
    // Y axis: grid lines and labels in bit/s.
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + PLOT_W,
            LEFT - 6.0,
            yy + 4.0,
            bits(v)
        );
        v += step;
    }
    let _ = writeln!(
        o,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">rate, bit/s (in + out)</text>"#,
        TOP + PLOT_H / 2.0
    );
    x_axis(&mut o, (first, last), offset_s);
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for run in runs(&s.columns) {
            let pts: Vec<String> = run
                .iter()
                .map(|(c, v)| format!("{:.1},{:.1}", LEFT + *c as f64, y(*v)))
                .collect();
            let _ = writeln!(
                o,
                r#"<polyline class="series" data-row="{}" fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                xml(&s.name),
                pts.join(" ")
            );
        }
        let (lx, ly) = (
            LEFT + (i % 2) as f64 * PLOT_W / 2.0,
            TOP + PLOT_H + 64.0 + 20.0 * (i / 2) as f64,
        );
        let _ = writeln!(
            o,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="4" fill="{colour}"/><text class="legend" x="{:.1}" y="{ly:.1}">{}</text>"#,
            ly - 6.0,
            lx + 20.0,
            xml(&s.name)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// Unbroken runs of columns that have a value.
fn runs(columns: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        match c {
            Some(v) => cur.push((i, *v)),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Time labels along the x axis, at round steps.
fn x_axis(o: &mut String, (first, last): (i64, i64), offset_s: i32) {
    let span_s = ((last - first) as f64 / 1e9).max(1.0);
    let steps = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200,
        86_400,
    ];
    let step = steps
        .iter()
        .copied()
        .find(|s| span_s / f64::from(*s) <= 8.0)
        .unwrap_or(86_400);
    let fmt = if span_s > 86_400.0 {
        "%m-%d %H:%M"
    } else if step < 60 {
        "%H:%M:%S"
    } else {
        "%H:%M"
    };
    let step_ns = i64::from(step) * 1_000_000_000;
    let local = |t: i64| t + i64::from(offset_s) * 1_000_000_000;
    let mut t =
        (local(first).div_euclid(step_ns) + 1) * step_ns - i64::from(offset_s) * 1_000_000_000;
    let base = TOP + PLOT_H;
    let _ = writeln!(
        o,
        r#"<line x1="{LEFT}" y1="{base}" x2="{:.1}" y2="{base}" stroke="black"/>"#,
        LEFT + PLOT_W
    );
    while t <= last {
        let x = LEFT + (t - first) as f64 / (last - first).max(1) as f64 * (PLOT_W - 1.0);
        let label = super::convert::timestamp(t, offset_s)
            .format(fmt)
            .to_string();
        let _ = writeln!(
            o,
            r#"<line x1="{x:.1}" y1="{base}" x2="{x:.1}" y2="{:.1}" stroke="black"/><text class="time" x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            base + 5.0,
            base + 20.0
        );
        t += step_ns;
    }
    let zone = super::convert::timestamp(first, offset_s).format("%Y-%m-%d, UTC%:z");
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time ({zone})</text>"#,
        LEFT + PLOT_W / 2.0,
        base + 38.0
    );
}

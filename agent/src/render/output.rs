//! Where reports go: stdout (a live table redraws in place on a terminal) or `-o FILE`, as
//! JSON lines or the human table.

use std::{
    fs::File,
    io::{IsTerminal as _, Write},
    path::Path,
};

use anyhow::Context as _;

use crate::model::Report;

/// The report destination and format.
pub struct Output {
    w: Box<dyn Write>,
    tty: bool,
    json: bool,
    /// Continuous output redraws the table in place on a terminal.
    continuous: bool,
    name: String,
}

impl Output {
    /// Opens `path` (stdout when None) for reports in JSON (`json`) or as a table.
    pub fn open(path: Option<&Path>, json: bool, continuous: bool) -> anyhow::Result<Self> {
        let (w, tty, name): (Box<dyn Write>, bool, String) = match path {
            Some(p) => (
                Box::new(
                    File::create(p)
                        .with_context(|| format!("-o {}: cannot create the file", p.display()))?,
                ),
                false,
                p.display().to_string(),
            ),
            None => {
                let out = std::io::stdout();
                let tty = out.is_terminal();
                (Box::new(out), tty, "standard output".into())
            }
        };
        Ok(Self {
            w,
            tty,
            json,
            continuous,
            name,
        })
    }

    /// Writes one report. A broken pipe comes back as the bare `io::Error` so the caller
    /// can tell "the reader went away" from a failure.
    pub fn write(&mut self, report: &Report) -> anyhow::Result<()> {
        let r = if self.json {
            super::json::write(&mut *self.w, report)
        } else {
            let refresh = self.tty && self.continuous && !report.is_final;
            super::table::write(&mut *self.w, report, refresh)
        };
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(e.into()),
            r => r.with_context(|| format!("write a report to {}", self.name)),
        }
    }
}

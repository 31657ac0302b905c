//! Where reports go: stdout (a live table redraws in place on a terminal), `-o FILE`, or
//! stderr while a command has the terminal, as JSON lines or the human table.

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
    /// The table's TCP health columns (`--details`).
    health: bool,
    name: String,
}

impl Output {
    /// Opens `path` (stdout when None) for reports in JSON (`json`) or as a table.
    pub fn open(path: Option<&Path>, json: bool, continuous: bool) -> anyhow::Result<Self> {
        let (w, tty, name): (Box<dyn Write>, bool, String) = match path {
            Some(p) => (Box::new(open_file(p)?), false, p.display().to_string()),
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
            health: false,
            name,
        })
    }

    /// Adds the TCP health columns to the table (`--details`; JSON always has `tcp_health`).
    #[must_use]
    pub fn with_health_columns(mut self, on: bool) -> Self {
        self.health = on;
        self
    }

    /// Reports on standard error, for the person at the terminal while a command has it
    /// (its output is on standard output): JSON (`json`) or the table, never redrawn in
    /// place (the screen is the command's).
    pub fn stderr(json: bool) -> Self {
        Self {
            w: Box::new(std::io::stderr()),
            tty: false,
            json,
            continuous: false,
            health: false,
            name: "standard error".into(),
        }
    }

    /// Writes one report. A broken pipe comes back as the bare `io::Error` so the caller
    /// can tell "the reader went away" from a failure.
    pub fn write(&mut self, report: &Report) -> anyhow::Result<()> {
        let r = if self.json {
            super::json::write(&mut *self.w, report)
        } else {
            let refresh = self.tty && self.continuous && !report.is_final;
            super::table::write(&mut *self.w, report, refresh, self.health)
        };
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(e.into()),
            r => r.with_context(|| format!("write a report to {}", self.name)),
        }
    }
}

/// Creates `-o FILE`. A FIFO is opened without blocking: with no reader, opening it would
/// wait forever (and a signal could not end the run); then it is an error naming the fix.
fn open_file(p: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let fifo = std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo());
    if !fifo {
        return File::create(p)
            .with_context(|| format!("-o {}: cannot create the file", p.display()));
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(p)
        .map_err(|e| {
            let why = if e.raw_os_error() == Some(nix::libc::ENXIO) {
                "a FIFO with no reader; start its reader first".to_string()
            } else {
                e.to_string()
            };
            crate::error::UsageError::new(format!("-o {}: {why}", p.display()))
        })?;
    // Reports are written blocking, as to any file.
    let flags = nix::fcntl::OFlag::from_bits_truncate(
        nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL).context("fcntl")?,
    );
    nix::fcntl::fcntl(
        &f,
        nix::fcntl::FcntlArg::F_SETFL(flags - nix::fcntl::OFlag::O_NONBLOCK),
    )
    .context("fcntl")?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fifo_without_reader_is_an_error_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("pnm-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        nix::unistd::mkfifo(&dir, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = super::open_file(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_file(&dir);
        assert!(e.contains("no reader"), "{e}");
    }
}

//! The interactive replay view (placeholder until written).

use std::path::PathBuf;

use super::reader::Recording;

/// Opens the view at `at` (None: the end).
pub fn run(_rec: Recording, _at: Option<i64>) -> anyhow::Result<u8> {
    anyhow::bail!("the interactive replay view is not built yet; use --json or --no-tui")
}

/// Follows the recording in the view.
pub fn follow(_dir: PathBuf, _rec: Recording) -> anyhow::Result<u8> {
    anyhow::bail!("the interactive replay view is not built yet; use --json or --no-tui")
}

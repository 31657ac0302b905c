//! The `procnetmon2` binary: everything lives in the library; see `procnetmon2::run_cli`.
use std::process::ExitCode;

fn main() -> ExitCode {
    procnetmon2::run_cli()
}

//! The flight recorder: `--record DIR` appends one frame per interval to hourly files in DIR
//! (zstd blocks, a CRC per frame and per block, block headers that index them by time,
//! retention by age and size); `procnetmon2 replay DIR` reads them back as reports, exports
//! and pictures. The format is written up in docs/recording.md.
//!
//! - `codec`: a report's entities and their delta encoding; `convert`: reports ↔ frames
//! - `segment`: the bytes of files; `store`: the directory (checks, lock, file operations)
//! - `writer`: the [`Recorder`] the run loop feeds; `reader`: segments, blocks, seeking
//! - `window`: the report of a window; `export`: OpenMetrics and CSV; `plot`: SVG
//! - `replay`: `procnetmon2 replay` ([`replay::run`]); `view`: its interactive view
//! - `synth`: reports of a made-up node, for tests and the benchmark

pub mod codec;
pub mod convert;
pub mod export;
pub mod live;
pub mod plot;
pub mod reader;
pub mod replay;
pub mod segment;
pub mod store;
pub mod synth;
pub mod view;
pub mod window;
pub mod wire;
pub mod writer;

#[cfg(test)]
mod export_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod tests;

pub use writer::{Options, Recorder};

//! The flight recorder: `--record DIR` appends one frame per interval to hourly files in DIR
//! (zstd blocks, a CRC per frame and per block, an index to seek by time, retention by age
//! and size); `procnetmon2 replay DIR` reads them back as reports, exports and pictures.
//! The format is written up in docs/recording.md.

pub mod codec;
pub mod convert;
pub mod synth;
pub mod wire;

#[cfg(test)]
mod tests;

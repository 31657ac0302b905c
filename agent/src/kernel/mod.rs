//! The kernel's BPF side seen from user space: the only place that uses `aya` and the
//! `procnetmon2_common` ABI types.

pub mod btf;
pub mod probes;

//! Harness for the privileged integration tests: real programs in the real kernel, in network
//! namespaces, veth pairs and cgroups the tests make and remove, with the kernel's own
//! interface counters and the header formulas as ground truth.
//!
//! - [`Scenario`] (`scenario.rs`): the one builder of a test's set-up: namespaces, links,
//!   cgroups and background processes, removed in a safe order on drop.
//! - [`Peer`], [`Script`] (`peer.rs`): the traffic, as typed `pnm-peer` commands and shell
//!   targets driven step by step.
//! - [`Monitor`], [`run_monitor`] (`monitor.rs`): the binary under test and its reports;
//!   [`Counts`] compares a report's counts with a link's whole.
//! - `metrics.rs`: scrapes of the metrics endpoint; `skip.rs`: run-time skips (`pnm-skip:`
//!   lines, counted as skipped by scripts/test); `probe.rs`: kernel behaviour, asked of the
//!   kernel; `bpf.rs`: hand-assembled programs for those probes and `pnm-bare`.
//! - The lower-level pieces ([`Netns`], [`Veth`], [`Cgroup`], [`Proc`]) stay public.
//!
//! Every resource is an RAII guard that removes itself on drop, also while a test panics.
//! Tests must run as root, one at a time (`--test-threads=1`): they share the kernel.

pub mod bpf;
mod cgroup;
pub mod metrics;
mod monitor;
mod net;
mod peer;
pub mod pods;
mod probe;
mod process;
mod scenario;
mod skip;

pub use cgroup::{
    Cgroup, bpftool_cgroup_tree, bpftool_cgroup_tree_under, cgroup_of, cgroup2_root,
    leftover_cgroups, pnm_programs,
};
pub use monitor::{
    Finished, Monitor, between, current, num, only_process, run_monitor, run_monitor_in,
    run_monitor_with, scaled_window_args, until_counting, workload, workload_where,
};
pub use net::{Counts, LinkStats, Netns, Veth, udp4_bytes, udp6_bytes};
pub use peer::{Peer, Script};
pub use probe::{ipv6_synack_passes_cgroup_egress, so_netns_cookie};
pub use process::{Proc, bin, pids, sh, unique};
pub use scenario::{Link, Scenario};
pub use skip::{
    env_count, kernel_version, skip, skip_for_kernel, skip_iface_without_netns_cookie,
    skip_unless_root, time_scale,
};

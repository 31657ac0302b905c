//! The host as procnetmon2 finds and changes it: `/proc` (processes, their sockets and
//! namespaces), the cgroup v2 hierarchy (targets, dedicated cgroups, run records), container
//! identity, privileges. Nothing here touches the kernel's BPF side (that is `kernel`).
//!
//! Layering inside (no cycles): `procs` and `identity` are leaves; `netns` reads `procs`;
//! `cgroup` reads `identity`; `moveback` (emptying a dedicated cgroup) builds on `cgroup`;
//! `lifecycle` on both, `workloads` on `cgroup`.

pub mod cgroup;
pub mod identity;
pub mod lifecycle;
pub mod moveback;
pub mod netns;
pub mod privileges;
pub mod procs;
pub mod sockdiag;
pub mod workloads;

//! What the plan needs from the host, read before anything changes: each `-p` process
//! (identity, cgroup, names, children, `-i` keys in its namespace) and each `--cgroup` /
//! `--container` target (directory, id, names, `-i` keys in its processes' namespaces). Bad
//! targets are usage errors here, so they leave nothing behind.

use std::collections::HashMap;

use super::Env;
use crate::{
    config::Run,
    error::UsageError,
    host::{
        cgroup, identity,
        netns::{self, Netns, NetnsLinks},
        procs::ProcFs,
        workloads,
    },
    kernel::IfaceKey,
    plan::{CgroupFacts, Ifaces, ProcessFacts, ProcessLabels, Survey},
};

/// Reads everything the plan needs; refuses bad targets with a usage error.
pub fn survey(run: &Run, env: &Env) -> anyhow::Result<Survey> {
    let (t, interfaces) = (&run.targets, &run.counting.interfaces);
    // A flag this kernel cannot do is refused before anything changes.
    if !interfaces.is_empty() {
        crate::kernel::features::check_iface_filter()?;
    }
    let kids = if t.children && !t.pids.is_empty() {
        env.proc.descendants(&t.pids)
    } else {
        Vec::new()
    };
    let mut processes = Vec::new();
    for &pid in &t.pids {
        let ident = env
            .proc
            .identify(pid)
            .map_err(|e| UsageError::new(e.to_string()))?;
        processes.push(ProcessFacts {
            cgroup_dir: env.mount.dir_of_pid(&env.proc, pid)?,
            labels: labels_of(env, pid),
            ifaces: if interfaces.is_empty() {
                Vec::new()
            } else {
                resolve_ifaces(&env.proc, pid, interfaces)?
            },
            children: kids
                .iter()
                .filter(|(root, _)| *root == pid)
                .map(|(_, kid)| *kid)
                .collect(),
            ident,
        });
    }
    let dirs = t
        .cgroups
        .iter()
        .map(|p| env.mount.resolve_target(p))
        .chain(t.containers.iter().map(|id| env.mount.find_container(id)));
    let mut cgroups = Vec::new();
    for dir in dirs {
        let dir = dir.map_err(|e| UsageError::new(format!("{e:#}")))?;
        cgroups.push(CgroupFacts {
            id: cgroup::cgroup_id(&dir)?,
            info: workloads::describe(&env.mount, &dir, &env.meta),
            ifaces: if interfaces.is_empty() {
                Vec::new()
            } else {
                resolve_cgroup_ifaces(&env.proc, &dir, interfaces)?
            },
            dir,
        });
    }
    // The agent's own cgroup, from its own /proc (not the host's: its PID differs there).
    let own_cgroup = if t.command.is_empty() {
        env.mount.mount_point.clone()
    } else {
        env.mount
            .dir_of_pid(&ProcFs::default(), std::process::id())?
    };
    let namespaces = if t.all && !interfaces.is_empty() {
        node_namespaces(&env.proc)
    } else {
        Vec::new()
    };
    Ok(Survey {
        mount_point: env.mount.mount_point.clone(),
        processes,
        cgroups,
        own_cgroup,
        agent_pid: std::process::id(),
        namespaces,
        // Read only when a whole cgroup is a target: the kernel's BTF is megabytes.
        cgroup_storage_ok: (!t.cgroups.is_empty()
            || !t.containers.is_empty()
            || !t.command.is_empty())
            && crate::kernel::btf::cgroup_storage_in_run_ctx(),
    })
}

/// `--all -i`: every network namespace a process lives in, with its interfaces. A process
/// that ends while it is read is skipped (another in its namespace, if any, stands for it).
fn node_namespaces(proc: &ProcFs) -> Vec<Netns> {
    netns::namespaces(proc)
        .into_iter()
        .filter_map(|(inode, pid)| {
            netns::links_of(proc, pid)
                .map_err(|e| log::debug!("-i: namespace of process {pid}: {e:#}"))
                .ok()
                .map(|links| Netns { inode, pid, links })
        })
        .collect()
}

/// Names of process `pid` for reports: container identity, NSpid, workload.
pub(super) fn labels_of(env: &Env, pid: u32) -> ProcessLabels {
    // Its cgroup, read once: container identity and workload name both come from it.
    let cg_path = env.proc.cgroup_path(pid).ok();
    ProcessLabels {
        container: cg_path
            .as_deref()
            .and_then(identity::parse_cgroup_path)
            .map(|mut c| {
                identity::enrich(&mut c, &env.meta);
                c
            }),
        nspid: env.proc.nspid(pid),
        unit: cg_path
            .as_deref()
            .map_or_else(String::new, identity::workload_name),
    }
}

fn keys_in(links: &NetnsLinks, names: &[String]) -> Ifaces {
    names
        .iter()
        .filter_map(|n| {
            links.index_of(n).map(|ifindex| {
                (
                    n.clone(),
                    IfaceKey {
                        netns_cookie: links.cookie,
                        ifindex,
                    },
                )
            })
        })
        .collect()
}

/// Resolves `-i` names in `pid`'s namespace; an unknown name is a usage error that lists the
/// namespace's interfaces.
fn resolve_ifaces(proc: &ProcFs, pid: u32, names: &[String]) -> anyhow::Result<Ifaces> {
    let links = netns::links_of(proc, pid)?;
    if let Some(n) = names.iter().find(|n| links.index_of(n).is_none()) {
        return Err(UsageError::new(format!(
            "-i: no interface '{n}' in the network namespace of process {pid} (it has: {}); name one of those",
            links.names()
        ))
        .into());
    }
    Ok(keys_in(&links, names))
}

/// Resolves `-i` names in the network namespaces of the processes in cgroup `dir`: each name
/// must exist in at least one of them.
fn resolve_cgroup_ifaces(
    proc: &ProcFs,
    dir: &std::path::Path,
    names: &[String],
) -> anyhow::Result<Ifaces> {
    let mut seen: HashMap<u64, NetnsLinks> = HashMap::new();
    for pid in cgroup::procs_in_subtree(dir) {
        if let Ok(l) = netns::links_of(proc, pid) {
            seen.entry(l.cookie).or_insert(l);
        }
    }
    if seen.is_empty() {
        log::warn!(
            "-i: cgroup {} has no processes to resolve interfaces in; nothing is counted for it until one appears",
            dir.display()
        );
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for n in names {
        let found: Ifaces = seen
            .values()
            .flat_map(|l| keys_in(l, std::slice::from_ref(n)))
            .collect();
        if found.is_empty() {
            let have: Vec<String> = seen.values().map(NetnsLinks::names).collect();
            return Err(UsageError::new(format!(
                "-i: no interface '{n}' in the network namespaces of cgroup {} (they have: {}); name one of those",
                dir.display(),
                have.join("; ")
            ))
            .into());
        }
        out.extend(found);
    }
    Ok(out)
}

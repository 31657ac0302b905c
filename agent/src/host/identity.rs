//! Container and Kubernetes pod identity of a process, derived from its cgroup v2 path (the
//! `0::` line of `/proc/PID/cgroup`), optionally enriched with names from the container
//! runtime's own metadata on the node (OCI bundle `config.json` annotations, docker's
//! `config.v2.json` labels).
//!
//! Parsing is pure and covers the systemd and the cgroupfs cgroup drivers of kubelet,
//! containerd, CRI-O, docker and podman. Enrichment only ever reads files and never fails: a
//! missing or unreadable file leaves the names unknown. This module deliberately does not read
//! `/proc` itself, cache anything, or talk to the Kubernetes API server.
//!
//! Decision: a runtime's *monitor* scope (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`)
//! is not a container. conmon runs outside the container's namespaces and its traffic is not
//! the workload's, so such paths yield no identity (the process is reported as a host unit).

use std::{
    fs::File,
    io::Read as _,
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::Value;

/// Runtime name for containerd (CRI plugin, nerdctl).
pub const CONTAINERD: &str = "containerd";
/// Runtime name for CRI-O.
pub const CRIO: &str = "cri-o";
/// Runtime name for docker (also cri-dockerd / dockershim under Kubernetes).
pub const DOCKER: &str = "docker";
/// Runtime name for podman.
pub const PODMAN: &str = "podman";

/// Shortest hex string accepted as a container id in a `<prefix>-<id>` component. Real ids are
/// 64 hex digits; the floor keeps unit names such as `docker-abc.scope` from matching.
const MIN_ID_LEN: usize = 12;
/// Length of a full container id: the only length accepted for a bare (unprefixed) component.
const FULL_ID_LEN: usize = 64;
/// Longest id accepted before building a metadata path.
const MAX_ID_LEN: usize = 128;
/// Upper bound on a metadata file read: OCI specs are tens of KiB; this bounds a hostile file.
const MAX_METADATA_BYTES: u64 = 8 * 1024 * 1024;

/// Scope/cgroup name prefixes and the runtime they denote; `None` marks a monitor (conmon)
/// scope, which is not a container. Longer prefixes come first so `crio-conmon-` wins over
/// `crio-`.
const PREFIXES: &[(&str, Option<&str>)] = &[
    ("cri-containerd-", Some(CONTAINERD)),
    ("crio-conmon-", None),
    ("crio-", Some(CRIO)),
    ("docker-", Some(DOCKER)),
    ("libpod-conmon-", None),
    ("libpod-", Some(PODMAN)),
    ("nerdctl-", Some(CONTAINERD)),
];

/// The middle field of containerd/runc's systemd-style `slice:prefix:id` cgroup path, which
/// shows up literally when the runtime and kubelet disagree on the cgroup driver.
const COLON_PREFIXES: &[(&str, &str)] = &[
    ("cri-containerd", CONTAINERD),
    ("crio", CRIO),
    ("docker", DOCKER),
    ("libpod", PODMAN),
];

/// Identity of the container a process runs in. Serialized as the JSON `"container"` object
/// (`null` outside containers); `None` fields serialize as `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerIdentity {
    /// `"containerd"`, `"cri-o"`, `"docker"` or `"podman"`; `None` when the path does not say
    /// (a bare id under the cgroupfs driver) and no runtime metadata matched.
    pub runtime: Option<String>,
    /// Container id as found in the path (64 hex digits in practice).
    pub id: String,
    /// Kubernetes pod UID, dashed (`8-4-4-4-12`; the systemd driver's underscores converted).
    /// Static pods carry a 32-hex-digit hash instead.
    pub pod_uid: Option<String>,
    /// Pod quality-of-service class: `"guaranteed"`, `"burstable"` or `"besteffort"`.
    pub qos: Option<String>,
    /// Pod name, from runtime metadata.
    pub pod: Option<String>,
    /// Pod namespace, from runtime metadata.
    pub namespace: Option<String>,
    /// Container name, from runtime metadata.
    pub name: Option<String>,
}

impl ContainerIdentity {
    /// A short grouping name: `namespace/pod/name` when all are known, `namespace/pod` for a
    /// nameless container (a pod sandbox), the container name alone outside pods, else the
    /// first 12 characters of the id (docker's short id).
    pub fn workload(&self) -> String {
        let Self {
            runtime: _,
            id,
            pod_uid: _,
            qos: _,
            pod,
            namespace,
            name,
        } = self;
        match (namespace, pod, name) {
            (Some(ns), Some(pod), Some(name)) => format!("{ns}/{pod}/{name}"),
            (Some(ns), Some(pod), None) => format!("{ns}/{pod}"),
            (_, _, Some(name)) => name.clone(),
            _ => id.get(..12).unwrap_or(id).to_owned(),
        }
    }
}

/// Path components, without empty, `.` and `..` ones: a process in a private cgroup namespace
/// sees its cgroup relative to the namespace root, e.g. `/../../kubepods.slice/...`.
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
}

/// What a single cgroup path component says about containers.
enum Leaf<'a> {
    /// A container cgroup; `slice` is the pod slice embedded in a `slice:prefix:id` component.
    Container {
        runtime: Option<&'static str>,
        id: &'a str,
        slice: Option<&'a str>,
    },
    /// A runtime monitor scope (conmon): not a container.
    Monitor,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Classifies one component; `parent` is the component above it.
fn classify<'a>(comp: &'a str, parent: Option<&str>) -> Option<Leaf<'a>> {
    if let Some((slice, rest)) = comp.split_once(':') {
        let (prefix, id) = rest.split_once(':')?;
        let runtime = COLON_PREFIXES
            .iter()
            .find(|(p, _)| *p == prefix)
            .map(|(_, r)| *r)?;
        return (is_hex(id) && id.len() >= MIN_ID_LEN).then_some(Leaf::Container {
            runtime: Some(runtime),
            id,
            slice: Some(slice),
        });
    }
    let name = comp.strip_suffix(".scope").unwrap_or(comp);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if !is_hex(id) || id.len() < MIN_ID_LEN {
                return None;
            }
            return Some(match runtime {
                Some(runtime) => Leaf::Container {
                    runtime: Some(runtime),
                    id,
                    slice: None,
                },
                None => Leaf::Monitor,
            });
        }
    }
    (name.len() == FULL_ID_LEN && is_hex(name)).then(|| Leaf::Container {
        // `/docker/<id>` is docker's cgroupfs layout; under kubepods the runtime is unknown.
        runtime: (parent == Some("docker")).then_some(DOCKER),
        id: name,
        slice: None,
    })
}

/// A pod UID as written in a cgroup name: hex digits with dashes (cgroupfs) or underscores
/// (systemd, which reserves `-` as the slice hierarchy separator).
fn pod_uid(raw: &str) -> Option<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw.bytes().any(|b| b.is_ascii_hexdigit())
        && raw
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| raw.replace('_', "-"))
}

/// Pod UID and `QoS` class from a systemd-driver pod slice: `kubepods-burstable-pod<uid>.slice`,
/// `kubepods-pod<uid>.slice` (guaranteed), or with a prefix such as kind's `kubelet-kubepods-`.
fn pod_from_slice(comp: &str) -> Option<(String, &'static str)> {
    let name = comp.strip_suffix(".slice")?;
    if !name.contains("kubepods") {
        return None;
    }
    let (head, last) = name.rsplit_once('-')?;
    let uid = pod_uid(last.strip_prefix("pod")?)?;
    let qos = qos_of(head.rsplit('-').next())?;
    Some((uid, qos))
}

/// `QoS` class from the level above the pod: the `QoS` level, or the kubepods root (guaranteed).
fn qos_of(parent: Option<&str>) -> Option<&'static str> {
    match parent? {
        "burstable" => Some("burstable"),
        "besteffort" => Some("besteffort"),
        p if p.ends_with("kubepods") => Some("guaranteed"),
        _ => None,
    }
}

/// Pod UID and `QoS` class from a cgroupfs-driver pod directory: `.../kubepods/burstable/pod<uid>`.
fn pod_from_dir(comp: &str, parent: Option<&str>) -> Option<(String, &'static str)> {
    let uid = pod_uid(comp.strip_prefix("pod")?)?;
    Some((uid, qos_of(parent)?))
}

/// Container identity from a cgroup v2 path (the `0::` line of `/proc/PID/cgroup`), or `None`
/// outside containers. Pure: names stay `None` until [`enrich`].
///
/// The deepest container-looking component wins, so processes in sub-cgroups of a container
/// (crun's `/container` leaf, systemd running inside a container) still resolve to it.
pub fn parse_cgroup_path(path: &str) -> Option<ContainerIdentity> {
    let comps: Vec<&str> = components(path).collect();
    let (at, runtime, id, slice) = comps.iter().enumerate().rev().find_map(|(i, comp)| {
        let parent = i.checked_sub(1).and_then(|p| comps.get(p)).copied();
        match classify(comp, parent)? {
            Leaf::Container { runtime, id, slice } => Some(Some((i, runtime, id, slice))),
            Leaf::Monitor => Some(None),
        }
    })??;
    let ancestors = comps.get(..at).unwrap_or_default();
    let under_kubepods = ancestors.iter().any(|c| c.contains("kubepods"));
    let pod = slice.and_then(pod_from_slice).or_else(|| {
        ancestors.iter().enumerate().rev().find_map(|(i, comp)| {
            pod_from_slice(comp).or_else(|| {
                let parent = i.checked_sub(1).and_then(|p| ancestors.get(p)).copied();
                under_kubepods.then(|| pod_from_dir(comp, parent)).flatten()
            })
        })
    });
    let (pod_uid, qos) = pod.map_or((None, None), |(uid, qos)| (Some(uid), Some(qos)));
    Some(ContainerIdentity {
        runtime: runtime.map(str::to_owned),
        id: id.to_owned(),
        pod_uid,
        qos: qos.map(str::to_owned),
        pod: None,
        namespace: None,
        name: None,
    })
}

/// A short group name for the process in cgroup `path`: for containers
/// [`ContainerIdentity::workload`] (call that on an enriched identity to get names); otherwise
/// the deepest systemd unit (`*.service` / `*.scope`), else the normalized path (`/` at the root).
pub fn workload_name(path: &str) -> String {
    if let Some(identity) = parse_cgroup_path(path) {
        return identity.workload();
    }
    let comps: Vec<&str> = components(path).collect();
    if let Some(unit) = comps
        .iter()
        .rev()
        .find(|c| matches!(c.rsplit_once('.'), Some((_, "service" | "scope"))))
    {
        return (*unit).to_owned();
    }
    format!("/{}", comps.join("/"))
}

/// Where container runtimes keep per-container metadata on the node. Each entry is a directory
/// holding one sub-directory per container id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRoots {
    /// containerd task bundles: `<root>/<id>/config.json` (OCI spec, CRI annotations).
    pub containerd: Vec<PathBuf>,
    /// containers/storage (CRI-O, podman): `<root>/<id>/userdata/config.json` (OCI spec).
    pub crio: Vec<PathBuf>,
    /// docker: `<root>/<id>/config.v2.json` (labels and name).
    pub docker: Vec<PathBuf>,
}

/// Default roots, relative to the host's `/`.
const CONTAINERD_ROOTS: &[&str] = &[
    "run/containerd/io.containerd.runtime.v2.task/k8s.io",
    "run/containerd/io.containerd.runtime.v2.task/default",
];
/// CRI-O writes the spec to both its run root and its graph root; the run root is tried first.
const CRIO_ROOTS: &[&str] = &[
    "run/containers/storage/overlay-containers",
    "var/lib/containers/storage/overlay-containers",
];
const DOCKER_ROOTS: &[&str] = &["var/lib/docker/containers"];

impl MetadataRoots {
    /// The default roots under `host_root`, for deployments that mount the host's filesystem
    /// elsewhere (e.g. `/host`).
    pub fn under(host_root: &Path) -> Self {
        let join = |rels: &[&str]| rels.iter().map(|r| host_root.join(r)).collect();
        Self {
            containerd: join(CONTAINERD_ROOTS),
            crio: join(CRIO_ROOTS),
            docker: join(DOCKER_ROOTS),
        }
    }
}

impl Default for MetadataRoots {
    /// The usual node paths (`/run/containerd/...`, `/run/containers/storage/...`,
    /// `/var/lib/docker/containers`).
    fn default() -> Self {
        Self::under(Path::new("/"))
    }
}

/// Names found in one runtime's metadata file.
#[derive(Debug, Default)]
struct Metadata {
    pod: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    pod_uid: Option<String>,
}

/// Reads and parses a JSON file, bounded in size; `None` on any failure.
fn read_json(path: &Path) -> Option<Value> {
    let file = File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(MAX_METADATA_BYTES).read_to_end(&mut buf).ok()?;
    match serde_json::from_slice(&buf) {
        Ok(v) => Some(v),
        Err(e) => {
            log::debug!("container metadata {}: {e}", path.display());
            None
        }
    }
}

fn string_at(map: Option<&serde_json::Map<String, Value>>, key: &str) -> Option<String> {
    map?.get(key)?.as_str().map(str::to_owned)
}

/// containerd CRI annotations from an OCI bundle's `config.json`.
fn containerd_metadata(root: &Path, id: &str) -> Option<Metadata> {
    let spec = read_json(&root.join(id).join("config.json"))?;
    let ann = spec.get("annotations").and_then(Value::as_object);
    Some(Metadata {
        pod: string_at(ann, "io.kubernetes.cri.sandbox-name"),
        namespace: string_at(ann, "io.kubernetes.cri.sandbox-namespace"),
        name: string_at(ann, "io.kubernetes.cri.container-name"),
        pod_uid: string_at(ann, "io.kubernetes.cri.sandbox-uid"),
    })
}

/// CRI-O (and podman) annotations from containers/storage's `userdata/config.json`.
fn crio_metadata(root: &Path, id: &str) -> Option<Metadata> {
    let spec = read_json(&root.join(id).join("userdata").join("config.json"))?;
    let ann = spec.get("annotations").and_then(Value::as_object);
    Some(Metadata {
        pod: string_at(ann, "io.kubernetes.pod.name"),
        namespace: string_at(ann, "io.kubernetes.pod.namespace"),
        name: string_at(ann, "io.kubernetes.container.name"),
        pod_uid: string_at(ann, "io.kubernetes.pod.uid"),
    })
}

/// docker's `config.v2.json`: kubelet labels, else the container name. dockershim names
/// containers `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`; Kubernetes names cannot
/// contain `_`, so the split is unambiguous.
fn docker_metadata(root: &Path, id: &str) -> Option<Metadata> {
    let config = read_json(&root.join(id).join("config.v2.json"))?;
    let labels = config.pointer("/Config/Labels").and_then(Value::as_object);
    let mut meta = Metadata {
        pod: string_at(labels, "io.kubernetes.pod.name"),
        namespace: string_at(labels, "io.kubernetes.pod.namespace"),
        name: string_at(labels, "io.kubernetes.container.name"),
        pod_uid: string_at(labels, "io.kubernetes.pod.uid"),
    };
    let docker_name = config
        .get("Name")
        .and_then(Value::as_str)
        .map(|n| n.trim_start_matches('/'))
        .filter(|n| !n.is_empty());
    if let Some(docker_name) = docker_name {
        let parts: Vec<&str> = docker_name.split('_').collect();
        if let ["k8s", container, pod, namespace, uid, _attempt] = parts.as_slice() {
            fill(&mut meta.name, Some((*container).to_owned()));
            fill(&mut meta.pod, Some((*pod).to_owned()));
            fill(&mut meta.namespace, Some((*namespace).to_owned()));
            fill(&mut meta.pod_uid, Some((*uid).to_owned()));
        } else {
            fill(&mut meta.name, Some(docker_name.to_owned()));
        }
    }
    Some(meta)
}

/// Sets `slot` from `value` only if it is still unknown: what the cgroup path said wins.
fn fill(slot: &mut Option<String>, value: Option<String>) {
    if slot.is_none() {
        *slot = value.filter(|v| !v.is_empty());
    }
}

/// Reads one runtime's metadata for a container id under one root.
type Reader = fn(&Path, &str) -> Option<Metadata>;

/// Fills pod, namespace, container name (and the pod UID / runtime when the path did not give
/// them) from the runtime's metadata under `roots`. Best effort: reads only, never fails, and
/// leaves `identity` untouched when nothing matches. With an unknown runtime every root is
/// tried and the runtime is set from the one that matched. The id must be hex, so it can never
/// escape a root.
pub fn enrich(identity: &mut ContainerIdentity, roots: &MetadataRoots) {
    if !is_hex(&identity.id) || identity.id.len() > MAX_ID_LEN {
        return;
    }
    let containerd: (&[PathBuf], Reader, &str) =
        (&roots.containerd, containerd_metadata, CONTAINERD);
    let crio: (&[PathBuf], Reader, &str) = (&roots.crio, crio_metadata, CRIO);
    let docker: (&[PathBuf], Reader, &str) = (&roots.docker, docker_metadata, DOCKER);
    let sources = match identity.runtime.as_deref() {
        Some(CONTAINERD) => vec![containerd],
        // podman keeps its specs in containers/storage too.
        Some(CRIO | PODMAN) => vec![crio],
        Some(DOCKER) => vec![docker],
        _ => vec![containerd, crio, docker],
    };
    let found = sources.into_iter().find_map(|(dirs, read, runtime)| {
        dirs.iter()
            .find_map(|dir| read(dir, &identity.id))
            .map(|meta| (meta, runtime))
    });
    let Some((meta, runtime)) = found else {
        return;
    };
    let Metadata {
        pod,
        namespace,
        name,
        pod_uid,
    } = meta;
    fill(&mut identity.runtime, Some(runtime.to_owned()));
    fill(&mut identity.pod, pod);
    fill(&mut identity.namespace, namespace);
    fill(&mut identity.name, name);
    fill(&mut identity.pod_uid, pod_uid);
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const ID: &str = "4f3c1a2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "7d3b0e6a-2c1f-4e59-9a8b-1c2d3e4f5a6b";
    const UID_SYSTEMD: &str = "7d3b0e6a_2c1f_4e59_9a8b_1c2d3e4f5a6b";

    fn expect(
        path: &str,
        runtime: Option<&str>,
        id: &str,
        pod_uid: Option<&str>,
        qos: Option<&str>,
    ) {
        let got = parse_cgroup_path(path).unwrap_or_else(|| panic!("no identity for {path}"));
        assert_eq!(
            got,
            ContainerIdentity {
                runtime: runtime.map(str::to_owned),
                id: id.to_owned(),
                pod_uid: pod_uid.map(str::to_owned),
                qos: qos.map(str::to_owned),
                pod: None,
                namespace: None,
                name: None,
            },
            "{path}"
        );
    }

    #[test]
    fn systemd_burstable_containerd() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            ),
            Some(CONTAINERD),
            ID,
            Some(UID),
            Some("burstable"),
        );
    }

    #[test]
    fn systemd_besteffort_crio() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"
            ),
            Some(CRIO),
            ID,
            Some(UID),
            Some("besteffort"),
        );
    }

    #[test]
    fn systemd_guaranteed_docker() {
        expect(
            &format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"),
            Some(DOCKER),
            ID,
            Some(UID),
            Some("guaranteed"),
        );
    }

    #[test]
    fn systemd_crun_container_leaf() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-{ID}.scope/container"
            ),
            Some(CRIO),
            ID,
            Some(UID),
            Some("burstable"),
        );
    }

    #[test]
    fn systemd_kind_kubelet_prefix() {
        expect(
            &format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            ),
            Some(CONTAINERD),
            ID,
            Some(UID),
            Some("besteffort"),
        );
    }

    #[test]
    fn systemd_static_pod_hash_uid() {
        let hash = "2e5bbd5a0f0b3c8f0b7a6c1b1d0d3f2a";
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"
            ),
            Some(CONTAINERD),
            ID,
            Some(hash),
            Some("burstable"),
        );
    }

    #[test]
    fn cgroupfs_burstable() {
        expect(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            None,
            ID,
            Some(UID),
            Some("burstable"),
        );
    }

    #[test]
    fn cgroupfs_guaranteed() {
        expect(
            &format!("/kubepods/pod{UID}/{ID}"),
            None,
            ID,
            Some(UID),
            Some("guaranteed"),
        );
    }

    #[test]
    fn cgroupfs_besteffort() {
        expect(
            &format!("/kubepods/besteffort/pod{UID}/{ID}"),
            None,
            ID,
            Some(UID),
            Some("besteffort"),
        );
    }

    #[test]
    fn cgroupfs_crio_prefixed_id() {
        expect(
            &format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
            Some(CRIO),
            ID,
            Some(UID),
            Some("burstable"),
        );
    }

    #[test]
    fn cgroupfs_crun_container_leaf() {
        expect(
            &format!("/kubepods/besteffort/pod{UID}/{ID}/container"),
            None,
            ID,
            Some(UID),
            Some("besteffort"),
        );
    }

    #[test]
    fn colon_cri_containerd_form() {
        expect(
            &format!("/kubepods-besteffort-pod{UID_SYSTEMD}.slice:cri-containerd:{ID}"),
            Some(CONTAINERD),
            ID,
            Some(UID),
            Some("besteffort"),
        );
    }

    #[test]
    fn colon_form_under_qos_slices() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice:cri-containerd:{ID}"
            ),
            Some(CONTAINERD),
            ID,
            Some(UID),
            Some("burstable"),
        );
        expect(
            &format!("/kubepods-pod{UID_SYSTEMD}.slice:crio:{ID}"),
            Some(CRIO),
            ID,
            Some(UID),
            Some("guaranteed"),
        );
    }

    #[test]
    fn plain_docker_cgroupfs() {
        expect(&format!("/docker/{ID}"), Some(DOCKER), ID, None, None);
    }

    #[test]
    fn plain_docker_systemd() {
        expect(
            &format!("/system.slice/docker-{ID}.scope"),
            Some(DOCKER),
            ID,
            None,
            None,
        );
    }

    #[test]
    fn nested_docker_takes_innermost() {
        expect(
            &format!("/docker/{ID}/docker/{ID2}"),
            Some(DOCKER),
            ID2,
            None,
            None,
        );
    }

    #[test]
    fn podman_machine_slice() {
        expect(
            &format!("/machine.slice/libpod-{ID}.scope"),
            Some(PODMAN),
            ID,
            None,
            None,
        );
    }

    #[test]
    fn podman_rootless_container_leaf() {
        expect(
            &format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
            ),
            Some(PODMAN),
            ID,
            None,
            None,
        );
    }

    #[test]
    fn nerdctl_scope() {
        expect(
            &format!("/system.slice/nerdctl-{ID}.scope"),
            Some(CONTAINERD),
            ID,
            None,
            None,
        );
    }

    #[test]
    fn private_cgroup_namespace_prefix() {
        expect(
            &format!(
                "/../../kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
            ),
            Some(CONTAINERD),
            ID,
            Some(UID),
            Some("burstable"),
        );
        expect(&format!("/../docker/{ID}"), Some(DOCKER), ID, None, None);
    }

    #[test]
    fn sub_cgroup_inside_container() {
        expect(
            &format!("/system.slice/docker-{ID}.scope/system.slice/nginx.service"),
            Some(DOCKER),
            ID,
            None,
            None,
        );
    }

    #[test]
    fn conmon_is_not_a_container() {
        let pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
        );
        assert_eq!(
            parse_cgroup_path(&format!("{pod}/crio-conmon-{ID}.scope")),
            None
        );
        assert_eq!(
            parse_cgroup_path(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
    }

    #[test]
    fn non_containers() {
        for path in [
            "/",
            "",
            "/init.scope",
            "/system.slice/nginx.service",
            "/system.slice/docker.service",
            "/system.slice/containerd.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope",
            "/system.slice/docker-abc.scope",
            "/kubepods.slice/kubepods-burstable.slice",
            &format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice"),
            &format!("/kubepods/burstable/pod{UID}"),
            "/system.slice/crio-notahexid.scope",
            "/foo.slice:cri-containerd:xyz",
            // Not 64 hex digits: a bare short hex name is not an id.
            "/kubepods/burstable/0123456789ab",
        ] {
            assert_eq!(parse_cgroup_path(path), None, "{path}");
        }
    }

    #[test]
    fn pod_dir_outside_kubepods_is_ignored() {
        expect(&format!("/pods/pod{UID}/{ID}"), None, ID, None, None);
    }

    #[test]
    fn workload_names() {
        assert_eq!(
            workload_name("/system.slice/nginx.service"),
            "nginx.service"
        );
        assert_eq!(
            workload_name("/user.slice/user-1000.slice/session-3.scope"),
            "session-3.scope"
        );
        assert_eq!(workload_name("/"), "/");
        assert_eq!(workload_name("/../../custom/group"), "/custom/group");
        assert_eq!(workload_name(&format!("/docker/{ID}")), "4f3c1a2b9d8e");

        let mut id = parse_cgroup_path(&format!("/docker/{ID}")).unwrap();
        id.name = Some("web".to_owned());
        assert_eq!(id.workload(), "web");
        id.pod = Some("api-7d9f".to_owned());
        id.namespace = Some("prod".to_owned());
        assert_eq!(id.workload(), "prod/api-7d9f/web");
        id.name = None;
        assert_eq!(id.workload(), "prod/api-7d9f");
    }

    #[test]
    fn serializes_all_fields() {
        let id = parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}")).unwrap();
        let json = serde_json::to_value(&id).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "runtime": null,
                "id": ID,
                "pod_uid": UID,
                "qos": "guaranteed",
                "pod": null,
                "namespace": null,
                "name": null,
            })
        );
    }

    #[test]
    fn default_roots_and_under() {
        let d = MetadataRoots::default();
        assert_eq!(
            d.containerd.first().map(PathBuf::as_path),
            Some(Path::new(
                "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
            ))
        );
        assert_eq!(d.docker, vec![PathBuf::from("/var/lib/docker/containers")]);
        let h = MetadataRoots::under(Path::new("/host"));
        assert_eq!(
            h.crio.first().map(PathBuf::as_path),
            Some(Path::new("/host/run/containers/storage/overlay-containers"))
        );
        assert_eq!(h.containerd.len(), d.containerd.len());
    }

    /// A unique scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("pnm-identity-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, rel: &str, contents: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }

        fn roots(&self) -> MetadataRoots {
            MetadataRoots::under(&self.0)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn containerd_spec() -> String {
        serde_json::json!({
            "ociVersion": "1.1.0",
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": "server",
                "io.kubernetes.cri.sandbox-name": "api-7d9f",
                "io.kubernetes.cri.sandbox-namespace": "prod",
                "io.kubernetes.cri.sandbox-uid": UID,
            }
        })
        .to_string()
    }

    #[test]
    fn enrich_containerd() {
        let s = Scratch::new("containerd");
        s.write(
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            &containerd_spec(),
        );
        let mut id = parse_cgroup_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        ))
        .unwrap();
        enrich(&mut id, &s.roots());
        assert_eq!(id.pod.as_deref(), Some("api-7d9f"));
        assert_eq!(id.namespace.as_deref(), Some("prod"));
        assert_eq!(id.name.as_deref(), Some("server"));
        assert_eq!(id.pod_uid.as_deref(), Some(UID));
        assert_eq!(id.workload(), "prod/api-7d9f/server");
    }

    #[test]
    fn enrich_unknown_runtime_sets_it() {
        let s = Scratch::new("unknown");
        s.write(
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            &containerd_spec(),
        );
        let mut id = parse_cgroup_path(&format!("/kubepods/besteffort/pod{UID}/{ID}")).unwrap();
        assert_eq!(id.runtime, None);
        enrich(&mut id, &s.roots());
        assert_eq!(id.runtime.as_deref(), Some(CONTAINERD));
        assert_eq!(id.name.as_deref(), Some("server"));
        assert_eq!(id.qos.as_deref(), Some("besteffort"));
    }

    #[test]
    fn enrich_crio() {
        let s = Scratch::new("crio");
        let spec = serde_json::json!({
            "annotations": {
                "io.kubernetes.pod.name": "dns-5c8b",
                "io.kubernetes.pod.namespace": "kube-system",
                "io.kubernetes.container.name": "coredns",
                "io.kubernetes.pod.uid": UID,
            }
        });
        s.write(
            &format!("var/lib/containers/storage/overlay-containers/{ID}/userdata/config.json"),
            &spec.to_string(),
        );
        let mut id = parse_cgroup_path(&format!("/kubepods/burstable/pod{UID}/{ID}")).unwrap();
        enrich(&mut id, &s.roots());
        assert_eq!(id.runtime.as_deref(), Some(CRIO));
        assert_eq!(id.workload(), "kube-system/dns-5c8b/coredns");
    }

    #[test]
    fn enrich_docker_labels_and_names() {
        let s = Scratch::new("docker");
        let labelled = serde_json::json!({
            "Name": "/k8s_ignored_x_y_z_0",
            "Config": { "Labels": {
                "io.kubernetes.pod.name": "web-0",
                "io.kubernetes.pod.namespace": "shop",
                "io.kubernetes.container.name": "nginx",
            }}
        });
        s.write(
            &format!("var/lib/docker/containers/{ID}/config.v2.json"),
            &labelled.to_string(),
        );
        let mut id = parse_cgroup_path(&format!("/system.slice/docker-{ID}.scope")).unwrap();
        enrich(&mut id, &s.roots());
        assert_eq!(id.workload(), "shop/web-0/nginx");
        // Labels win; the k8s_ name only fills what they left unknown.
        assert_eq!(id.pod_uid.as_deref(), Some("z"));

        let plain = serde_json::json!({ "Name": "/web", "Config": { "Labels": {} } });
        s.write(
            &format!("var/lib/docker/containers/{ID2}/config.v2.json"),
            &plain.to_string(),
        );
        let mut id = parse_cgroup_path(&format!("/docker/{ID2}")).unwrap();
        enrich(&mut id, &s.roots());
        assert_eq!(id.name.as_deref(), Some("web"));
        assert_eq!(id.pod, None);
    }

    #[test]
    fn enrich_docker_dockershim_name() {
        let s = Scratch::new("dockershim");
        let cfg = serde_json::json!({ "Name": format!("/k8s_app_api-1_prod_{UID}_3") });
        s.write(
            &format!("var/lib/docker/containers/{ID}/config.v2.json"),
            &cfg.to_string(),
        );
        let mut id = parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}")).unwrap();
        enrich(&mut id, &s.roots());
        assert_eq!(id.runtime.as_deref(), Some(DOCKER));
        assert_eq!(id.workload(), "prod/api-1/app");
    }

    #[test]
    fn enrich_missing_or_bad_metadata_is_harmless() {
        let s = Scratch::new("missing");
        s.write(
            &format!("run/containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            "{not json",
        );
        let mut id = parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}")).unwrap();
        let before = id.clone();
        enrich(&mut id, &s.roots());
        assert_eq!(id, before);
    }

    #[test]
    fn enrich_rejects_non_hex_id() {
        let s = Scratch::new("traversal");
        s.write(
            "run/containerd/io.containerd.runtime.v2.task/evil/config.json",
            &containerd_spec(),
        );
        let mut id = ContainerIdentity {
            runtime: Some(CONTAINERD.to_owned()),
            id: "../evil".to_owned(),
            pod_uid: None,
            qos: None,
            pod: None,
            namespace: None,
            name: None,
        };
        enrich(&mut id, &s.roots());
        assert_eq!(id.pod, None);
    }
}

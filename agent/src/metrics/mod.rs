//! `OpenMetrics` exposition for `--metrics-addr`, cut by responsibility:
//! [`store`] keeps the per-workload counters the sampling loop pushes (limits, grace, expiry),
//! [`collector`] encodes them at scrape time, [`respond`] turns a request into a response
//! (routing, content negotiation, gzip, reuse of an encoding), and [`server`] owns the socket:
//! HTTP/1.1 with connection limits and timeouts that hostile clients cannot get around.
//!
//! The sampling loop pushes plain values ([`Counters`](crate::model::Counters) per workload and
//! protocol, [`TcpHealth`](crate::model::TcpHealth) per workload, target identities,
//! self-statistics) into a [`MetricsRegistry`]; nothing here reads
//! eBPF maps or `/proc`, and nothing here decides what a workload is (cgroup path, or Kubernetes
//! namespace, pod and container): callers build the [`WorkloadKey`].

mod collector;
mod respond;
mod server;
mod store;

pub use collector::{CLASSIC_CONTENT_TYPE, CONTENT_TYPE, Format, to_classic_text};
pub use server::{
    DEFAULT_MAX_CONNECTIONS, LISTEN_BACKLOG, MAX_HEAD_BYTES, MetricsServer, ServerLimits,
    ServerThread,
};
pub use store::{
    DEFAULT_GRACE, DEFAULT_MAX_SERIES, HEALTH_SERIES, Limits, MapFill, MetricsRegistry, Protocol,
    RTT_LE_US, SelfStats, TargetInfo, WorkloadGauges, WorkloadKey,
};

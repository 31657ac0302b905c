//! The traffic a test makes, typed: `pnm-peer` commands (`Peer`), and shell targets that run
//! them step by step on cue (`Script`). Each is placed in a cgroup and a network namespace
//! before it executes, and started once it says it is ready.

use std::path::Path;

use crate::{Cgroup, Netns, Proc, process::bin};

/// One `pnm-peer` command (integration/src/bin/pnm-peer.rs), where it runs, and the word it
/// prints once ready.
#[derive(Clone)]
pub struct Peer<'a> {
    command: &'static str,
    args: Vec<String>,
    flags: Vec<&'static str>,
    ready: Option<&'static str>,
    cg: Option<&'a Cgroup>,
    ns: Option<&'a Netns>,
}

impl<'a> Peer<'a> {
    fn new(command: &'static str, args: Vec<String>, ready: Option<&'static str>) -> Self {
        Self {
            command,
            args,
            flags: Vec::new(),
            ready,
            cg: None,
            ns: None,
        }
    }

    /// A TCP server on `addr` (one thread per connection), ready once it listens.
    pub fn tcp_server(addr: &str) -> Self {
        Self::new("tcp-server", vec![addr.into()], Some("ready"))
    }

    /// One TCP connection to `addr` sending `up` bytes and receiving `down`; the client closes
    /// first. Prints "done" at the end.
    pub fn tcp_client(addr: &str, up: u64, down: u64) -> Self {
        let args = vec![
            addr.into(),
            up.to_string(),
            down.to_string(),
            "0".into(),
            "1".into(),
        ];
        Self::new("tcp-client", args, None)
    }

    /// The server closes first (the client's close comes after its last read).
    pub fn server_closes_first(mut self) -> Self {
        self.args[3] = "1".into();
        self
    }

    /// `n` connections in sequence instead of one.
    pub fn connections(mut self, n: u64) -> Self {
        self.args[4] = n.to_string();
        self
    }

    /// Receives `count` UDP datagrams on `addr`, then prints "done"; ready once bound.
    pub fn udp_recv(addr: &str, count: u64) -> Self {
        Self::new(
            "udp-recv",
            vec![addr.into(), count.to_string()],
            Some("ready"),
        )
    }

    /// A UDP sink on `addr` that takes whatever comes.
    pub fn udp_sink(addr: &str) -> Self {
        Self::udp_recv(addr, 1_000_000)
    }

    /// Sends `count` UDP datagrams of `size` bytes to `addr` from an unconnected socket (see
    /// [`Peer::connected`]), then prints "done".
    pub fn udp_send(addr: &str, count: u64, size: u64) -> Self {
        let args = vec![
            addr.into(),
            count.to_string(),
            size.to_string(),
            "unconnected".into(),
        ];
        Self::new("udp-send", args, None)
    }

    /// `udp-send` from a connected socket.
    pub fn connected(mut self) -> Self {
        self.args[3] = "connected".into();
        self
    }

    /// Opens its socket (and a TCP client connects) at once, then waits for a line on stdin
    /// before moving any data ("wait"): started once it says "connected" / "bound", then
    /// driven by [`Proc::go`]. The socket then predates a monitor started in between.
    pub fn on_go(mut self) -> Self {
        self.flags.push("wait");
        self.ready = match self.command {
            "tcp-client" => Some("connected"),
            "udp-send" => Some("bound"),
            other => panic!("{other} does not wait for a go"),
        };
        self
    }

    /// Stays alive after its work until stdin closes ("hold"), so it is still a live target
    /// when the report is written.
    pub fn hold(mut self) -> Self {
        self.flags.push("hold");
        self
    }

    /// Holds `tcp` connections to `addr` and `udp` bound UDP sockets; closes one of each per
    /// stdin line (printing "closed").
    pub fn hold_sockets(addr: &str, tcp: u64, udp: u64) -> Self {
        let args = vec![addr.into(), tcp.to_string(), udp.to_string()];
        Self::new("hold-sockets", args, Some("ready"))
    }

    /// One unconnected UDP socket that, per stdin line, sends `count` datagrams of `size`
    /// bytes to each `(addr, count)` in turn, then prints "done".
    pub fn udp_multi(size: u64, to: &[(String, u64)]) -> Self {
        let mut args = vec![size.to_string()];
        args.extend(to.iter().map(|(addr, n)| format!("{addr}={n}")));
        Self::new("udp-multi", args, Some("ready"))
    }

    /// A DNS server on `addr` answering every A query with `name` → `ipv4`.
    pub fn dns_server(addr: &str, name: &str, ipv4: &str) -> Self {
        let args = vec![addr.into(), name.into(), ipv4.into()];
        Self::new("dns-server", args, Some("ready"))
    }

    /// On a stdin line: asks `dns` for `name`, then sends `count` datagrams of `size` bytes to
    /// the answer's address, port `port`; prints "done".
    pub fn resolve_send(dns: &str, name: &str, port: u16, count: u64, size: u64) -> Self {
        let args = vec![
            dns.into(),
            name.into(),
            port.to_string(),
            count.to_string(),
            size.to_string(),
        ];
        Self::new("resolve-send", args, Some("ready"))
    }

    /// Runs in cgroup `cg` (placed there before it executes).
    pub fn in_cgroup(mut self, cg: &'a Cgroup) -> Self {
        self.cg = Some(cg);
        self
    }

    /// Runs in network namespace `ns`.
    pub fn in_netns(mut self, ns: &'a Netns) -> Self {
        self.ns = Some(ns);
        self
    }

    /// The command's words after the binary.
    pub fn words(&self) -> Vec<String> {
        let mut w = vec![self.command.to_owned()];
        w.extend(self.args.iter().cloned());
        w.extend(self.flags.iter().map(|f| (*f).to_owned()));
        w
    }

    /// The whole command line, binary first (for `procnetmon2 -- CMD`).
    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![bin("pnm-peer").display().to_string()];
        v.extend(self.words());
        v
    }

    /// The command as a shell line, its stdout discarded (for a [`Script`] or `sh -c`).
    pub fn shell(&self) -> String {
        format!("{} >/dev/null", self.argv().join(" "))
    }

    /// `sh -c 'exec COMMAND >/dev/null'`: the command alone, its progress words kept off the
    /// stdout it would share with `procnetmon2 --json -- COMMAND`'s reports.
    pub fn quiet_argv(&self) -> Vec<String> {
        vec!["sh".into(), "-c".into(), format!("exec {}", self.shell())]
    }

    /// Starts it and waits until it is ready (if it says so).
    pub fn start(self) -> Proc {
        let words = self.words();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let p = Proc::spawn(&bin("pnm-peer"), &words, self.cg, self.ns);
        if let Some(word) = self.ready {
            p.expect_line(word);
        }
        p
    }

    /// Starts it, waits for its "done" and for it to exit 0.
    pub fn run(self) {
        let mut p = self.start();
        p.expect_line("done");
        let status = p.wait();
        assert!(status.success(), "pnm-peer: {status}");
    }
}

/// A shell target that does its work in steps: it prints "started", then for each step
/// waits for a line on stdin, runs the step's commands in turn (each a child of the shell,
/// so they count under it) and prints the step's marker; after the last step it stays until
/// stdin closes. Driven with [`Proc::go`]`(marker)`.
pub struct Script<'a> {
    steps: Vec<(String, String)>,
    repeat: bool,
    cg: Option<&'a Cgroup>,
    ns: Option<&'a Netns>,
}

impl Default for Script<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Script<'a> {
    /// A script without steps yet.
    pub fn new() -> Self {
        Self {
            steps: Vec::new(),
            repeat: false,
            cg: None,
            ns: None,
        }
    }

    /// A step: `commands` in turn, then `marker` printed.
    pub fn step(self, marker: &str, commands: &[Peer<'_>]) -> Self {
        let line = commands
            .iter()
            .map(Peer::shell)
            .collect::<Vec<_>>()
            .join("; ");
        self.step_sh(marker, &line)
    }

    /// A step of shell commands (`line`), then `marker` printed.
    pub fn step_sh(mut self, marker: &str, line: &str) -> Self {
        self.steps.push((marker.to_owned(), line.to_owned()));
        self
    }

    /// Runs its one step again on every line, for as long as stdin stays open.
    pub fn repeating(mut self) -> Self {
        self.repeat = true;
        self
    }

    /// Runs in cgroup `cg` (placed there before it executes).
    pub fn in_cgroup(mut self, cg: &'a Cgroup) -> Self {
        self.cg = Some(cg);
        self
    }

    /// Runs in network namespace `ns`.
    pub fn in_netns(mut self, ns: &'a Netns) -> Self {
        self.ns = Some(ns);
        self
    }

    /// The shell program.
    fn program(&self) -> String {
        if self.repeat {
            assert_eq!(self.steps.len(), 1, "a repeating script has one step");
            let (marker, line) = &self.steps[0];
            return format!("echo started; while read go; do {line}; echo {marker}; done");
        }
        let mut s = String::from("echo started; ");
        for (marker, line) in &self.steps {
            s.push_str(&format!("read go; {line}; echo {marker}; "));
        }
        s.push_str("read end");
        s
    }

    /// Starts the shell and waits for "started".
    pub fn start(self) -> Proc {
        let p = Proc::spawn(Path::new("sh"), &["-c", &self.program()], self.cg, self.ns);
        p.expect_line("started");
        p
    }
}

//! Sort, filter, selection, pause, and what is kept of ended rows and closed connections.

use std::time::{Duration, Instant};

use super::{Conn, Folded, RowKey, SortBy, State, fold_oldest_closed, merge_conns, split_addr};
use crate::tui::{
    fixtures::{conn, process, report, row, scene},
    keys::{Action, View},
};

fn names(s: &State) -> Vec<String> {
    s.rows.iter().map(|l| l.name.clone()).collect()
}

fn state_with(r: crate::model::Report) -> (State, Instant) {
    let t0 = Instant::now();
    let mut s = State::new(Duration::from_secs(1), None);
    s.ingest(r, t0);
    (s, t0)
}

#[test]
fn default_sort_is_total_rate_and_s_cycles_and_reverses() {
    let (mut s, _) = state_with(scene());
    // curl 816 kbps, backup 409.6 kbps, nginx 0.
    assert_eq!(names(&s), ["curl", "/system.slice/backup.service", "nginx"]);
    s.apply(Action::SortReverse);
    assert_eq!(names(&s), ["nginx", "/system.slice/backup.service", "curl"]);
    s.apply(Action::SortNext); // rate in, highest first again
    assert_eq!(s.sort, SortBy::RateIn);
    assert_eq!(names(&s)[0], "curl");
    for _ in 0..4 {
        s.apply(Action::SortNext); // rate out, total in, total out, peak
    }
    assert_eq!(s.sort, SortBy::Peak);
    // curl peaked at 1.6 Mbps in; backup's peak is 819.2 kbps out.
    assert_eq!(names(&s), ["curl", "/system.slice/backup.service", "nginx"]);
    s.apply(Action::SortNext); // tcp: curl 2, backup 1, nginx 1 (tie: kept in place)
    assert_eq!(names(&s), ["curl", "/system.slice/backup.service", "nginx"]);
    s.apply(Action::SortReverse);
    assert_eq!(names(&s), ["/system.slice/backup.service", "nginx", "curl"]);
    s.apply(Action::SortReverse);
    for _ in 0..2 {
        s.apply(Action::SortNext); // udp, pid
    }
    assert_eq!(s.sort, SortBy::Pid);
    // PIDs ascending; the workload has none and comes first.
    assert_eq!(names(&s), ["/system.slice/backup.service", "curl", "nginx"]);
    s.apply(Action::SortNext);
    s.apply(Action::SortNext);
    assert_eq!(s.sort, SortBy::Rate);
}

#[test]
fn ties_keep_their_place_across_snapshots() {
    let quiet = |pid, name: &str| process(pid, name, row((0, 0), (0.0, 0.0), (0, 0)), vec![]);
    let (mut s, t0) = state_with(report(
        vec![quiet(3, "c"), quiet(1, "a"), quiet(2, "b")],
        vec![],
    ));
    assert_eq!(names(&s), ["c", "a", "b"]);
    // Same figures, another report order: the shown order stays.
    s.ingest(
        report(vec![quiet(1, "a"), quiet(2, "b"), quiet(3, "c")], vec![]),
        t0 + Duration::from_secs(1),
    );
    assert_eq!(names(&s), ["c", "a", "b"]);
    // b gets traffic: it moves up; the others keep their order.
    let mut busy = quiet(2, "b");
    busy.row.rate_in = 10.0;
    s.ingest(
        report(vec![quiet(1, "a"), busy, quiet(3, "c")], vec![]),
        t0 + Duration::from_secs(2),
    );
    assert_eq!(names(&s), ["b", "c", "a"]);
}

#[test]
fn filters_by_name_pid_pod_ns_port_and_host() {
    let (mut s, _) = state_with(scene());
    let filter = |s: &mut State, text: &str| {
        s.apply(Action::FilterStart);
        for c in text.chars() {
            s.apply(Action::FilterChar(c));
        }
        s.apply(Action::FilterDone);
        let n = names(s);
        s.apply(Action::FilterStart);
        s.apply(Action::FilterCancel);
        n
    };
    assert_eq!(filter(&mut s, "CUR"), ["curl"]);
    assert_eq!(filter(&mut s, "20"), ["nginx"]);
    assert_eq!(filter(&mut s, "pod:nginx-7"), ["nginx"]);
    assert_eq!(filter(&mut s, "ns:web"), ["nginx"]);
    assert_eq!(filter(&mut s, "port:443"), ["curl"]);
    assert_eq!(filter(&mut s, "port:80"), ["curl", "nginx"]);
    assert_eq!(filter(&mut s, "host:10.0.0.9"), ["nginx"]);
    assert_eq!(filter(&mut s, "backup"), ["/system.slice/backup.service"]);
    assert!(filter(&mut s, "port:x").is_empty());
    assert!(filter(&mut s, "curl ns:web").is_empty());
    assert_eq!(names(&s).len(), 3, "Esc drops the filter");
    // While editing, the connections view filters by port/host too.
    s.apply(Action::FilterStart);
    for c in "port:443".chars() {
        s.apply(Action::FilterChar(c));
    }
    s.apply(Action::FilterDone);
    s.apply(Action::Open);
    assert_eq!(s.conns.len(), 1);
    assert_eq!(s.conns[0].1.detail.remote, "10.0.0.2:443");
}

#[test]
fn selection_follows_its_row_and_moves_within_bounds() {
    let (mut s, t0) = state_with(scene());
    assert_eq!(s.selected, Some(RowKey::Process(100)));
    s.apply(Action::Move(1));
    assert_eq!(
        s.selected,
        Some(RowKey::Workload("/system.slice/backup.service".into()))
    );
    s.apply(Action::End);
    assert_eq!(s.selected, Some(RowKey::Process(200)));
    s.apply(Action::Move(5));
    assert_eq!(s.selected, Some(RowKey::Process(200)));
    s.apply(Action::Home);
    assert_eq!(s.selected, Some(RowKey::Process(100)));
    s.apply(Action::Page(1));
    assert_eq!(s.selected, Some(RowKey::Process(200)));
    // nginx becomes the busiest: it moves to the top and stays selected.
    let mut r = scene();
    r.processes[1].row.rate_in = 1e9;
    s.ingest(r, t0 + Duration::from_secs(1));
    assert_eq!(s.rows[0].name, "nginx");
    assert_eq!(
        (s.row_cursor(), s.selected_line().map(|l| l.pid)),
        (0, Some(Some(200)))
    );
}

#[test]
fn enter_shows_the_selected_rows_connections_and_esc_goes_back() {
    let (mut s, _) = state_with(scene());
    s.apply(Action::Open);
    assert_eq!(s.view, View::Connections);
    let remotes: Vec<&str> = s
        .conns
        .iter()
        .map(|(_, c)| c.detail.remote.as_str())
        .collect();
    assert_eq!(remotes, ["10.0.0.2:443", "10.0.0.3:80"]);
    s.apply(Action::Move(1));
    assert_eq!(s.cursor, 1);
    s.apply(Action::Move(9));
    assert_eq!(s.cursor, 1);
    s.apply(Action::Back);
    assert_eq!(s.view, View::Rows);
    s.apply(Action::End);
    s.apply(Action::Show(View::Connections));
    assert_eq!(s.conns[0].1.detail.remote, "10.0.0.9:51000");
}

#[test]
fn closed_connections_stay_until_cleared_and_hosts_keep_their_bytes() {
    let (mut s, t0) = state_with(scene());
    // curl's second connection is reported closed once, then no more.
    let mut r = scene();
    r.processes[0].connections.as_mut().unwrap()[1].state = "CLOSED";
    s.ingest(r, t0 + Duration::from_secs(1));
    let mut r = scene();
    r.processes[0].connections.as_mut().unwrap().truncate(1);
    s.ingest(r, t0 + Duration::from_secs(2));
    s.apply(Action::Open);
    let states: Vec<(&str, bool)> = s
        .conns
        .iter()
        .map(|(_, c)| (c.detail.state, c.closed))
        .collect();
    assert_eq!(states, [("ESTABLISHED", false), ("CLOSED", true)]);
    assert_eq!(s.conns[1].1.detail.rate_in, 0.0);
    s.apply(Action::Show(View::Hosts));
    let hosts: Vec<(&str, u64, u32, u32)> = s
        .hosts
        .iter()
        .map(|h| (h.addr.as_str(), h.bytes_in, h.live, h.connections))
        .collect();
    assert_eq!(
        hosts,
        [("10.0.0.2", 1_000_000, 1, 1), ("10.0.0.3", 48_576, 0, 1)]
    );
    // A connection that vanishes without a CLOSED report is closed too.
    let mut r = scene();
    r.processes[0].connections = Some(Vec::new());
    s.ingest(r, t0 + Duration::from_secs(3));
    assert!(s.hosts.iter().all(|h| h.live == 0));
    s.apply(Action::ClearEnded);
    assert!(s.hosts.is_empty());
}

#[test]
fn hosts_by_port_and_of_every_row() {
    let mut r = scene();
    r.processes[0].connections.as_mut().unwrap().push(conn(
        40002,
        "10.0.0.2:8443",
        (10, 20),
        (0.0, 0.0),
    ));
    let (mut s, _) = state_with(r);
    s.apply(Action::Show(View::Hosts));
    assert_eq!(s.hosts.len(), 2);
    assert_eq!(s.hosts[0].addr, "10.0.0.2");
    assert_eq!(
        (s.hosts[0].bytes_in, s.hosts[0].connections),
        (1_000_010, 2)
    );
    s.apply(Action::Ports);
    let addrs: Vec<&str> = s.hosts.iter().map(|h| h.addr.as_str()).collect();
    assert_eq!(addrs, ["10.0.0.2:443", "10.0.0.3:80", "10.0.0.2:8443"]);
    s.apply(Action::Ports);
    s.apply(Action::AllRows);
    let addrs: Vec<&str> = s.hosts.iter().map(|h| h.addr.as_str()).collect();
    assert_eq!(addrs, ["10.0.0.2", "10.0.0.3", "10.0.0.9"]);
}

#[test]
fn pause_freezes_the_figures_while_counting_goes_on() {
    let (mut s, t0) = state_with(scene());
    s.apply(Action::Pause);
    let mut r = scene();
    r.processes[0].row.counters.bytes_in = 9_999_999;
    r.processes[0].connections.as_mut().unwrap()[1].state = "CLOSED";
    s.ingest(r, t0 + Duration::from_secs(1));
    assert_eq!(s.rows[0].row.counters.bytes_in, 1_048_576, "frozen");
    assert_eq!(
        s.report().unwrap().processes[0].row.counters.bytes_in,
        1_048_576
    );
    s.apply(Action::Pause);
    assert_eq!(s.rows[0].row.counters.bytes_in, 9_999_999, "caught up");
    // The close seen while paused was kept.
    s.apply(Action::Open);
    assert!(s.conns[1].1.closed);
    assert_eq!(s.history(&RowKey::Process(100)).len(), 2);
}

#[test]
fn ended_rows_stay_until_cleared() {
    let mut r = scene();
    r.processes[1].exited = true;
    let (mut s, _) = state_with(r);
    assert_eq!(s.rows.len(), 3);
    assert!(s.rows.iter().any(|l| l.exited && l.name == "nginx"));
    s.apply(Action::ClearEnded);
    assert_eq!(names(&s), ["curl", "/system.slice/backup.service"]);
}

#[test]
fn history_covers_sixty_seconds() {
    let t0 = Instant::now();
    let mut s = State::new(Duration::from_secs(2), None);
    for i in 0..40 {
        s.ingest(scene(), t0 + Duration::from_secs(2 * i));
    }
    assert_eq!(s.history(&RowKey::Process(100)).len(), 30);
    s.apply(Action::RatesTotals);
    assert_eq!(
        s.history(&RowKey::Process(100))[0],
        (1_048_576 + 10_240) as f64
    );
}

#[test]
fn oldest_closed_fold_into_host_totals() {
    let t0 = Instant::now();
    let mut list: Vec<Conn> = Vec::new();
    let fresh: Vec<_> = (0..5)
        .map(|i| {
            let mut c = conn(1000 + i, "10.0.0.2:443", (100, 10), (0.0, 0.0));
            c.state = "CLOSED";
            c
        })
        .collect();
    for (i, c) in fresh.iter().enumerate() {
        merge_conns(
            &mut list,
            std::slice::from_ref(c),
            t0 + Duration::from_secs(i as u64),
        );
    }
    assert_eq!(list.len(), 5);
    let mut folded = std::collections::HashMap::<String, Folded>::new();
    fold_oldest_closed(&mut list, &mut folded, 2);
    let ports: Vec<&str> = list.iter().map(|c| c.detail.local.as_str()).collect();
    assert_eq!(ports, ["10.0.0.1:1003", "10.0.0.1:1004"]);
    let f = folded["10.0.0.2:443"];
    assert_eq!((f.bytes_in, f.bytes_out, f.connections), (300, 30, 3));
}

#[test]
fn addresses_split() {
    assert_eq!(split_addr("10.0.0.2:443"), Some(("10.0.0.2", 443)));
    assert_eq!(split_addr("[::1]:80"), Some(("[::1]", 80)));
    assert_eq!(split_addr("*"), None);
}

//! How a number's next increment is predicted. Both sides compute the same prediction from
//! what they both know (the last increments, and this interval's increments of what was
//! resolved before, see `rank`); only the miss is written. Counters move much as they moved
//! last interval; packets move with bytes (segments per byte, acks per segment, bytes per
//! ack: last interval's ratios); a row's traffic is the sum of its remote hosts', split among
//! protocols as last interval, and a class's the sum of its hosts of that class.

use super::{HEALTH_NUMS, Kind};

/// A prediction rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pred {
    /// No prediction (zero increment).
    Zero,
    /// The same increment as last time.
    Last,
    /// This interval's increment of field `src` (earlier in [`field_order`]), scaled by the
    /// ratio of the two fields' last increments.
    Ratio(usize),
}

/// `N` field indices: `head` first, then the rest in order.
const fn order<const N: usize>(head: &[usize]) -> [usize; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < head.len() { head[i] } else { i };
        i += 1;
    }
    out
}

/// The order a kind's numbers are predicted and written in: in each counter group bytes out,
/// packets out, packets in, bytes in (each predicted from the one before it), then the rest
/// (a row's TCP health last).
pub fn field_order(kind: Kind) -> &'static [usize] {
    const G3_HEAD: [usize; 12] = [1, 3, 2, 0, 5, 7, 6, 4, 9, 11, 10, 8];
    const PROCESS: [usize; 24 + HEALTH_NUMS] = order(&G3_HEAD);
    const WORKLOAD: [usize; 21 + HEALTH_NUMS] = order(&G3_HEAD);
    const AGGREGATE: [usize; 6 + HEALTH_NUMS] = order(&[1, 3, 2, 0]);
    match kind {
        Kind::Process => &PROCESS,
        Kind::Workload => &WORKLOAD,
        Kind::Class => &PROCESS[..12],
        Kind::Aggregate => &AGGREGATE,
        Kind::Dest | Kind::Meta => &AGGREGATE[..6],
        Kind::Conn => &[0, 1, 2, 3, 4],
        Kind::Gap => &[0, 1, 2],
    }
}

/// Counter groups (bytes in, bytes out, packets in, packets out) at the start of `kind`'s
/// numbers: one per protocol for rows and classes.
pub fn groups(kind: Kind) -> usize {
    match kind {
        Kind::Process | Kind::Workload | Kind::Class => 3,
        Kind::Dest | Kind::Aggregate | Kind::Meta => 1,
        Kind::Conn | Kind::Gap => 0,
    }
}

fn predictor(kind: Kind, i: usize) -> Pred {
    if i < groups(kind) * 4 {
        let base = i - i % 4;
        return match i % 4 {
            1 => Pred::Last,
            3 => Pred::Ratio(base + 1),
            2 => Pred::Ratio(base + 3),
            _ => Pred::Ratio(base + 2),
        };
    }
    // TCP health: failures and retransmissions come in bursts (none predicted); each live
    // connection gives an RTT sample per interval, so the sum and the buckets move as before.
    if let Some(h) = kind.health_at()
        && i >= h
    {
        return if i >= h + 2 { Pred::Last } else { Pred::Zero };
    }
    match (kind, i) {
        (Kind::Process, 15) | (Kind::Conn, 0..=2) => Pred::Last,
        _ => Pred::Zero,
    }
}

/// `a * b / c` in 128 bits (0 when `c` is 0 or the result does not fit).
fn scale(a: i64, b: i64, c: i64) -> i64 {
    if c == 0 {
        return 0;
    }
    i64::try_from(i128::from(a) * i128::from(b) / i128::from(c)).unwrap_or(0)
}

/// The prediction of field `i`'s increment. `inc`: this interval's increments of the fields
/// before `i` in [`field_order`]; `last`: the last interval's; `sums`: this interval's
/// increments of the entity's remote hosts (bytes in, bytes out, packets in, packets out),
/// when it has some.
pub fn predicted(kind: Kind, i: usize, inc: &[i64], last: &[i64], sums: Option<[i64; 4]>) -> i64 {
    if let Some(s) = sums
        && i < groups(kind) * 4
    {
        // The hosts' sum, split among the protocols as last interval (all to TCP when
        // nothing moved then).
        let k = i % 4;
        let total: i64 = (0..groups(kind))
            .map(|g| last[g * 4 + k])
            .fold(0, i64::wrapping_add);
        return if total == 0 {
            if i < 4 { s[k] } else { 0 }
        } else {
            scale(s[k], last[i], total)
        };
    }
    match predictor(kind, i) {
        Pred::Zero => 0,
        Pred::Last => last[i],
        Pred::Ratio(src) if last[src] == 0 => last[i],
        Pred::Ratio(src) => scale(inc[src], last[i], last[src]),
    }
}

/// Most numbers a kind has.
pub const MAX_NUMS: usize = 24 + HEALTH_NUMS;

/// Moves `kind`'s numbers on in place: `nums` from the previous values to the new ones,
/// `last` from the previous increments to this interval's, given `residual(i)`, the written
/// difference of field `i` from its prediction (asked in [`field_order`]).
pub fn step(
    kind: Kind,
    nums: &mut [u64],
    last: &mut [i64],
    sums: Option<[i64; 4]>,
    mut residual: impl FnMut(usize) -> Option<i64>,
) -> Option<()> {
    let n = nums.len().min(MAX_NUMS);
    let mut old = [0_i64; MAX_NUMS];
    old[..n].copy_from_slice(&last[..n]);
    let mut inc = [0_i64; MAX_NUMS];
    for &i in field_order(kind) {
        inc[i] = predicted(kind, i, &inc, &old, sums).wrapping_add(residual(i)?);
    }
    for i in 0..n {
        nums[i] = nums[i].wrapping_add(inc[i] as u64);
        last[i] = inc[i];
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_counters_cost_nothing() {
        // Dest: bytes in, bytes out, packets in, packets out; last interval 52 kB in as
        // 1000 acks, 1.5 MB out as 1000 segments.
        let last = [52_000, 1_500_000, 1000, 1000, 0, 0];
        let inc = [52_000, 1_500_000, 1000, 1000, 0, 0];
        for &i in field_order(Kind::Dest) {
            assert_eq!(
                predicted(Kind::Dest, i, &inc, &last, None),
                inc[i],
                "field {i}"
            );
        }
        // Twice the bytes out (a miss): the packets and bytes in follow by the same ratios.
        let inc = [104_000, 3_000_000, 2000, 2000, 0, 0];
        assert_eq!(predicted(Kind::Dest, 1, &inc, &last, None), 1_500_000);
        for i in [3, 2, 0] {
            assert_eq!(
                predicted(Kind::Dest, i, &inc, &last, None),
                inc[i],
                "field {i}"
            );
        }
    }

    #[test]
    fn rows_follow_their_hosts() {
        let mut last = vec![0_i64; 18];
        // Last interval: 900 bytes out over TCP, 100 over UDP.
        last[1] = 900;
        last[5] = 100;
        let sums = Some([0, 2000, 0, 0]);
        assert_eq!(predicted(Kind::Workload, 1, &[], &last, sums), 1800);
        assert_eq!(predicted(Kind::Workload, 5, &[], &last, sums), 200);
        // Nothing moved last interval: all to TCP.
        assert_eq!(
            predicted(Kind::Workload, 0, &[], &last, Some([7, 0, 0, 0])),
            7
        );
        assert_eq!(
            predicted(Kind::Workload, 4, &[], &last, Some([7, 0, 0, 0])),
            0
        );
    }

    /// Each kind's order names each of its numbers once.
    #[test]
    fn every_number_is_ordered_once() {
        for kind in Kind::ALL {
            let mut o = field_order(kind).to_vec();
            o.sort_unstable();
            assert_eq!(o, (0..kind.shape().nums).collect::<Vec<_>>(), "{kind:?}");
        }
    }

    /// A row's RTT sum and buckets move as they moved last interval; failures and
    /// retransmissions are not predicted.
    #[test]
    fn health_predictions() {
        let h = Kind::Workload.health_at().expect("a row");
        let mut last = vec![0_i64; Kind::Workload.shape().nums];
        last[h] = 2;
        last[h + 1] = 5;
        last[h + 2] = 900;
        last[h + 3 + 9] = 3;
        let p = |i| predicted(Kind::Workload, i, &[], &last, None);
        assert_eq!((p(h), p(h + 1), p(h + 2), p(h + 3 + 9)), (0, 0, 900, 3));
    }

    #[test]
    fn step_adds_residuals_to_predictions() {
        let mut inc = [10, 100, 1, 1, 0, 0];
        let mut now = [5; 6];
        step(Kind::Dest, &mut now, &mut inc, None, |i| {
            Some(if i == 1 { 50 } else { 0 })
        })
        .expect("steps");
        assert_eq!(inc[1], 150);
        assert_eq!(now[1], 155);
        // Packets out scale with bytes out.
        assert_eq!(inc[3], 1);
        assert_eq!(now[4], 5);
    }
}

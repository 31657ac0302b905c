#!/usr/bin/env python3
"""Test counts that cannot lie: what scripts/test and scripts/test-kernels report.

Rust's test harness has no run-time "skipped" outcome: a test that cannot apply here prints

    pnm-skip: BINARY::TEST: REASON

on stdout (integration/src/skip.rs) and returns, which the harness calls "ok". Here such a test
counts as skipped, not passed; one that printed it and then failed stays failed.

    results.py cargo LOG...          the output (stdout) of `cargo test --no-fail-fast`: one
                                     section per test binary ("running N tests" ... "test
                                     result:"). A binary that died (a signal, an abort) has no
                                     result line: its tests without an outcome count as failed.
                                     Prints "counts: P F S" and the names behind S and F.
    results.py kernel LOG EXPECTED   a guest log of scripts/test-kernels, one "pnm-result:"
                                     line per test (passed|failed|skipped[: why]); EXPECTED is
                                     how many tests the host's list holds. Prints
                                     "P passed, F failed, S skipped of E[, M without a result]
                                     (reasons)"; exit 1 unless every test has a result and none
                                     failed. Failed tests go to stderr.
    results.py gate MATRIX KERNEL... the kernel lines of scripts/test-kernels (file MATRIX):
                                     each KERNEL gates: its line must show every expected test
                                     run to a result, 0 failed, and the VM finished. Prints
                                     "counts: P F S" per kernel (tests without a result count
                                     as failed); exit 1 if a gating kernel fails.
    results.py summary FILE          sums the "counts:" lines of FILE (and lists the "skipped:"
                                     and "failed:" lines): "summary: N passed, N failed,
                                     N skipped"; exit 1 if anything failed.

scripts/results_test.py checks all of it against fake outputs.
"""

import re
import sys
from collections import Counter

RUNNING = re.compile(r"^running (\d+) tests?$")
RESULT = re.compile(
    r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored")
TEST_LINE = re.compile(r"^test (.+?) \.\.\. (.*)$")
OUTCOME = re.compile(r"^(ok|FAILED|ignored(?:, .*)?)$")
SKIP = re.compile(r"pnm-skip: (\S+?): (.*)$")
VERDICT = re.compile(r"^pnm-result: (\S+) (passed|failed|skipped)(?:: (.*))?$")
KERNEL = re.compile(
    r"^kernel (\S+): (\d+) passed, (\d+) failed, (\d+) skipped of (\d+)")


def test_of(qualified):
    """`BINARY::TEST` -> `TEST` (test names may hold `::` themselves; binaries do not)."""
    return qualified.split("::", 1)[1] if "::" in qualified else qualified


class Section:
    """One test binary's run, as its harness printed it."""

    def __init__(self, planned):
        self.planned = planned
        self.result = None  # (passed, failed, ignored) from "test result:"
        self.outcomes = {}  # test -> ok | FAILED | ignored
        self.skips = {}  # test -> (BINARY::TEST, reason)
        self.failures = []  # names under the last "failures:" header
        self.current = None  # the test whose outcome is still to come
        self.in_failures = False

    def feed(self, line):
        m = SKIP.search(line)
        if m:
            self.skips.setdefault(test_of(m.group(1)), (m.group(1), m.group(2)))
        m = TEST_LINE.match(line)
        if m:
            self.current = m.group(1)
            rest = m.group(2)
            line = rest if OUTCOME.match(rest) else ""
        m = OUTCOME.match(line)
        if m and self.current is not None:
            self.outcomes[self.current] = m.group(1).split(",")[0]
            self.current = None
            return
        # The harness lists the failed tests last, one per line under "failures:" (the
        # first "failures:" block holds their output): the last list wins.
        if line == "failures:":
            self.in_failures = True
            self.failures = []
        elif self.in_failures and re.match(r"^    \S+$", line):
            self.failures.append(line.strip())
        elif line:
            self.in_failures = False

    def counts(self):
        """(passed, failed, skipped, skipped names with reasons, failed names)."""
        ignored_names = [(t, "ignored") for t, o in self.outcomes.items() if o == "ignored"]
        if self.result is not None:
            passed, failed, ignored = self.result
            failed_names = set(self.failures)
            skipped = {t: s for t, s in self.skips.items() if t not in failed_names}
            return (passed - len(skipped), failed, len(skipped) + ignored,
                    sorted(skipped.values()) + ignored_names, sorted(failed_names))
        # Died before its result line: what has no outcome failed.
        ok = {t for t, o in self.outcomes.items() if o == "ok"}
        ignored = sum(1 for o in self.outcomes.values() if o == "ignored")
        failed_names = {t for t, o in self.outcomes.items() if o == "FAILED"}
        if self.current is not None:
            failed_names.add(self.current)
        skipped = {t: s for t, s in self.skips.items() if t in ok}
        failed = max(1, self.planned - len(ok) - ignored)
        return (len(ok) - len(skipped), failed, len(skipped) + ignored,
                sorted(skipped.values()) + ignored_names,
                sorted(failed_names) or ["(a test binary died)"])


def parse_cargo(lines):
    """The sections of `cargo test` output."""
    sections = []
    for raw in lines:
        line = raw.rstrip("\n")
        m = RUNNING.match(line)
        if m:
            sections.append(Section(int(m.group(1))))
            continue
        if not sections or sections[-1].result is not None:
            continue
        m = RESULT.match(line)
        if m:
            sections[-1].result = tuple(int(g) for g in m.groups())
        else:
            sections[-1].feed(line)
    return sections


def cargo_report(lines):
    """(passed, failed, skipped, lines to print) of `cargo test` output."""
    total = [0, 0, 0]
    notes = []
    for s in parse_cargo(lines):
        p, f, k, skipped, failed = s.counts()
        total = [total[0] + p, total[1] + f, total[2] + k]
        notes += [f"skipped: {name}: {why}" for name, why in skipped]
        notes += [f"failed: {name}" for name in failed]
    return total[0], total[1], total[2], notes


def kernel_report(lines, expected):
    """(text, ok, failed lines) of a guest log with `expected` tests listed."""
    verdicts = Counter()
    reasons = Counter()
    failed = []
    for raw in lines:
        m = VERDICT.match(raw.rstrip("\n"))
        if not m:
            continue
        name, verdict, why = m.group(1), m.group(2), m.group(3) or ""
        verdicts[verdict] += 1
        if verdict == "skipped":
            reasons[why or "no reason given"] += 1
        elif verdict == "failed":
            failed.append(f"failed: {name}: {why}" if why else f"failed: {name}")
    p, f, s = verdicts["passed"], verdicts["failed"], verdicts["skipped"]
    text = f"{p} passed, {f} failed, {s} skipped of {expected}"
    missing = expected - (p + f + s)
    if missing > 0:
        text += f", {missing} without a result"
    elif missing < 0:
        text += f", {-missing} more results than tests listed"
    if reasons:
        text += " (" + "; ".join(f"{r} x{n}" for r, n in sorted(reasons.items())) + ")"
    return text, f == 0 and missing == 0 and expected > 0, failed


def gate(matrix_lines, kernels):
    """(ok, counts lines, messages) for the gating `kernels` in the matrix output."""
    ok = True
    counts = []
    messages = []
    for k in kernels:
        line = next((l.rstrip("\n") for l in matrix_lines
                     if l.startswith(f"kernel {k}: ")), None)
        m = KERNEL.match(line or "")
        if not m:
            ok = False
            messages.append(f"kernel matrix: kernel {k} did not pass: {line or 'no result'}")
            continue
        p, f, s, e = (int(g) for g in m.groups()[1:])
        missing = max(0, e - (p + f + s))
        counts.append(f"counts: {p} {f + missing} {s} kernel {k}")
        if f or missing or e == 0 or p + f + s != e or "did not finish" in line:
            ok = False
            messages.append(f"kernel matrix: kernel {k} did not pass: {line}")
    return ok, counts, messages


def summary(lines):
    """(text lines, ok) summing the "counts:" lines."""
    total = [0, 0, 0]
    listed = []
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("counts: "):
            for i, n in enumerate(line.split()[1:4]):
                total[i] += int(n)
        elif line.startswith(("skipped: ", "failed: ")):
            listed.append(line)
    out = listed + [f"summary: {total[0]} passed, {total[1]} failed, {total[2]} skipped"]
    return out, total[1] == 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "cargo":
        lines = []
        for path in args:
            with open(path, errors="replace") as f:
                lines += f.readlines()
        p, f, s, notes = cargo_report(lines)
        print("\n".join(notes + [f"counts: {p} {f} {s}"]))
        return 0
    if cmd == "kernel" and len(args) == 2:
        try:
            with open(args[0], errors="replace") as f:
                lines = f.readlines()
        except OSError:
            lines = []
        text, ok, failed = kernel_report(lines, int(args[1]))
        for l in failed:
            print(l, file=sys.stderr)
        print(text)
        return 0 if ok else 1
    if cmd == "gate" and args:
        try:
            with open(args[0], errors="replace") as f:
                lines = f.readlines()
        except OSError:
            lines = []
        ok, counts, messages = gate(lines, args[1:])
        for m in messages:
            print(m, file=sys.stderr)
        print("\n".join(counts))
        return 0 if ok else 1
    if cmd == "summary" and len(args) == 1:
        with open(args[0], errors="replace") as f:
            out, ok = summary(f.readlines())
        print("\n".join(out))
        return 0 if ok else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

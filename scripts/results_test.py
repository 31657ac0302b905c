#!/usr/bin/env python3
"""scripts/results.py and the guest's test loop (scripts/test-kernels --run-list) against fake
outputs: what scripts/test prints as its summary and what makes a gating kernel fail.

    python3 scripts/results_test.py        (scripts/test runs it before the unit tests)
"""

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import results  # noqa: E402

# `cargo test --no-fail-fast -- --test-threads=1` of a crate with two test binaries (recorded
# on this toolchain): t has a test that skips, one that fails, one that skips and then fails,
# an #[ignore]d one and one that passes; u dies by SIGABRT in its second test of three.
CARGO = """
running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s


running 5 tests
test alpha_skips ... pnm-skip: t::alpha_skips: no feature
ok
test beta_fails ... FAILED
test delta_skips_then_fails ... pnm-skip: t::delta_skips_then_fails: partly
FAILED
test epsilon_ignored ... ignored
test gamma_passes ... ok

failures:

---- beta_fails stdout ----

thread 'beta_fails' (1) panicked at tests/t.rs:11:19:
boom
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

---- delta_skips_then_fails stdout ----

thread 'delta_skips_then_fails' (2) panicked at tests/t.rs:15:47:
assertion `left == right` failed
  left: 1
 right: 2


failures:
    beta_fails
    delta_skips_then_fails

test result: FAILED. 2 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s


running 3 tests
test a_passes ... ok
test b_dies ... 
running 0 tests

test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

"""


class Cargo(unittest.TestCase):
    def test_skips_are_not_passes_and_a_dead_binary_fails_what_it_did_not_run(self):
        p, f, s, notes = results.cargo_report(CARGO.splitlines())
        # t: alpha (skipped), gamma (passed), beta and delta (failed: delta's skip does not
        # count), epsilon (ignored: skipped). u: a_passes, then b_dies and c_never_runs failed.
        self.assertEqual((p, f, s), (2, 4, 2))
        self.assertIn("skipped: t::alpha_skips: no feature", notes)
        self.assertIn("skipped: epsilon_ignored: ignored", notes)
        self.assertNotIn("skipped: t::delta_skips_then_fails: partly", notes)
        for name in ("beta_fails", "delta_skips_then_fails", "b_dies"):
            self.assertIn(f"failed: {name}", notes)

    def test_all_green(self):
        log = textwrap.dedent("""\
            running 2 tests
            test a ... ok
            test b ... ok

            test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
            """)
        self.assertEqual(results.cargo_report(log.splitlines()), (2, 0, 0, []))

    def test_a_binary_that_dies_before_its_first_result(self):
        log = "running 3 tests\ntest a ... \n"
        p, f, s, notes = results.cargo_report(log.splitlines())
        self.assertEqual((p, f, s), (0, 3, 0))
        self.assertIn("failed: a", notes)

    def test_a_skip_line_may_stand_on_its_own_line(self):
        log = textwrap.dedent("""\
            running 1 test
            test m::x ... 
            pnm-skip: bin::m::x: because
            ok

            test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
            """)
        self.assertEqual(results.cargo_report(log.splitlines()),
                         (0, 0, 1, ["skipped: bin::m::x: because"]))


FAKE_TEST = r"""#!/bin/sh
# A test binary: `fake --exact NAME --test-threads=1 --nocapture`.
name=$2
echo "running 1 test"
case $name in
  passes) echo "test $name ... ok"; echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out; finished in 0.01s" ;;
  skips) echo "test $name ... pnm-skip: fake::$name: no such feature here"; echo ok
         echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out; finished in 0.01s" ;;
  fails) echo "test $name ... FAILED"; echo "test result: FAILED. 0 passed; 1 failed; 0 ignored"; exit 101 ;;
  skips_then_fails) echo "test $name ... pnm-skip: fake::$name: partly"; echo FAILED
         echo "test result: FAILED. 0 passed; 1 failed; 0 ignored"; exit 101 ;;
  segfaults) echo "test $name ... "; kill -SEGV $$ ;;
  is_killed) echo "test $name ... "; kill -KILL $$ ;;
  hangs) echo "test $name ... "; exec sleep 30 ;;
  ignored) echo "test $name ... ignored"; echo "test result: ok. 0 passed; 0 failed; 1 ignored; 0 measured; 9 filtered out; finished in 0.00s" ;;
  *) echo "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 10 filtered out; finished in 0.00s" ;;
esac
"""


class GuestLoop(unittest.TestCase):
    """The real loop of the guest (bash), fed fake test binaries."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        exe = os.path.join(cls.dir.name, "fake-0123456789abcdef")
        with open(exe, "w") as f:
            f.write(FAKE_TEST)
        os.chmod(exe, stat.S_IRWXU)
        names = ["passes", "skips", "fails", "skips_then_fails", "segfaults", "is_killed",
                 "hangs", "ignored", "renamed_meanwhile"]
        cls.list = os.path.join(cls.dir.name, "tests.list")
        with open(cls.list, "w") as f:
            f.writelines(f"{exe}\t{n}\n" for n in names)
        cls.expected = len(names)
        cls.log = os.path.join(cls.dir.name, "tests.log")
        subprocess.run([os.path.join(HERE, "test-kernels"), "--run-list", cls.list, cls.log],
                       check=True, env={**os.environ, "PNM_TEST_TIMEOUT": "1"})
        with open(cls.log) as f:
            cls.lines = f.read().splitlines()

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def verdict(self, name):
        prefix = f"pnm-result: fake::{name} "
        found = [l[len(prefix):] for l in self.lines if l.startswith(prefix)]
        self.assertEqual(len(found), 1, self.lines)
        return found[0]

    def test_one_verdict_per_test_from_its_exit(self):
        self.assertEqual(self.verdict("passes"), "passed")
        self.assertEqual(self.verdict("skips"), "skipped: no such feature here")
        self.assertEqual(self.verdict("fails"), "failed: exit status 101")
        self.assertEqual(self.verdict("skips_then_fails"), "failed: exit status 101")
        self.assertEqual(self.verdict("segfaults"), "failed: killed by signal 11")
        self.assertEqual(self.verdict("is_killed"), "failed: killed by signal 9")
        self.assertEqual(self.verdict("hangs"), "failed: no result within 1s")
        self.assertEqual(self.verdict("ignored"), "skipped: ignored")
        self.assertEqual(self.verdict("renamed_meanwhile"),
                         "failed: exit status 0 without a test result")
        self.assertTrue(any(l.startswith("pnm-time: fake::hangs ") for l in self.lines))

    def test_the_kernel_line_counts_them(self):
        text, ok, failed = results.kernel_report(self.lines, self.expected)
        self.assertEqual(
            text, "1 passed, 6 failed, 2 skipped of 9 (ignored x1; no such feature here x1)")
        self.assertFalse(ok)
        self.assertEqual(len(failed), 6)

    def test_a_vm_that_stopped_early_leaves_tests_without_a_result(self):
        verdicts = [l for l in self.lines if l.startswith("pnm-result: ")]
        green = [v for v in verdicts if v.endswith(" passed") or " skipped" in v]
        text, ok, _ = results.kernel_report(green, self.expected)
        self.assertEqual(text, "1 passed, 0 failed, 2 skipped of 9, 6 without a result"
                               " (ignored x1; no such feature here x1)")
        self.assertFalse(ok)
        text, ok, _ = results.kernel_report(green, 3)
        self.assertTrue(ok, text)
        _, ok, _ = results.kernel_report([], 0)
        self.assertFalse(ok, "a kernel that was to run nothing proves nothing")


MATRIX = """\
kernel 6.1: 41 passed, 0 failed, 1 skipped of 42 (SYN-ACK x1) [6.1.0-50-amd64, 642s]
kernel 6.12: 42 passed, 0 failed, 0 skipped of 42 [6.12.117+deb13-amd64, 677s]
kernel 5.10: 31 passed, 0 failed, 11 skipped of 42 (-i x10; SYN-ACK x1) [5.10.0-32-amd64, 852s]
kernel latest: 40 passed, 2 failed, 0 skipped of 42 [7.3.4+deb13-amd64, 641s]
"""


class Gate(unittest.TestCase):
    def gate(self, text, kernels=("6.1", "6.12", "5.10")):
        return results.gate(text.splitlines(), kernels)

    def test_green_kernels_pass_and_join_the_counts(self):
        ok, counts, messages = self.gate(MATRIX)
        self.assertTrue(ok, messages)
        self.assertEqual(counts, ["counts: 41 0 1 kernel 6.1", "counts: 42 0 0 kernel 6.12",
                                  "counts: 31 0 11 kernel 5.10"])

    def test_a_report_only_kernel_does_not_gate(self):
        ok, _, _ = self.gate(MATRIX)
        self.assertTrue(ok)
        ok, _, _ = self.gate(MATRIX, ("6.1", "latest"))
        self.assertFalse(ok)

    def test_a_failed_test_fails_the_gate(self):
        ok, counts, _ = self.gate(MATRIX.replace("42 passed, 0 failed", "41 passed, 1 failed"))
        self.assertFalse(ok)
        self.assertIn("counts: 41 1 0 kernel 6.12", counts)

    def test_fewer_results_than_tests_fail_the_gate_and_count_as_failed(self):
        # A test that died by a signal used to vanish from the counts: 41 of 42.
        short = MATRIX.replace("42 passed, 0 failed, 0 skipped of 42 [",
                               "41 passed, 0 failed, 0 skipped of 42, 1 without a result [")
        ok, counts, messages = self.gate(short)
        self.assertFalse(ok)
        self.assertIn("counts: 41 1 0 kernel 6.12", counts)
        self.assertTrue(any("kernel 6.12 did not pass" in m for m in messages), messages)

    def test_an_unfinished_vm_fails_even_with_every_result(self):
        ok, _, _ = self.gate(MATRIX.replace("677s]", "677s] — VM did not finish (timeout)"))
        self.assertFalse(ok)

    def test_a_missing_or_unrun_kernel_fails(self):
        ok, _, messages = self.gate(MATRIX, ("6.1", "6.6"))
        self.assertFalse(ok)
        self.assertTrue(any("kernel 6.6 did not pass: no result" in m for m in messages))
        unrun = MATRIX.replace(
            "kernel 5.10: 31 passed, 0 failed, 11 skipped of 42 (-i x10; SYN-ACK x1)",
            "kernel 5.10: 0 passed, 0 failed, 0 skipped of 42, 42 without a result — not run")
        ok, counts, _ = self.gate(unrun)
        self.assertFalse(ok)
        self.assertIn("counts: 0 42 0 kernel 5.10", counts)
        ok, _, _ = self.gate("kernel 6.1: 0 passed, 0 failed, 0 skipped of 0 [x, 1s]", ("6.1",))
        self.assertFalse(ok)

    def test_the_old_line_without_the_expected_number_does_not_pass(self):
        ok, _, _ = self.gate("kernel 6.1: 41 passed, 0 failed, 1 skipped (x) [r, 1s]", ("6.1",))
        self.assertFalse(ok)


class Summary(unittest.TestCase):
    def test_sums_every_source_and_fails_on_any_failure(self):
        lines = ["skipped: t::a: why", "counts: 200 0 1", "counts: 41 0 1 kernel 6.1",
                 "failed: x", "counts: 0 1 0"]
        out, ok = results.summary(lines)
        self.assertEqual(out[-1], "summary: 241 passed, 1 failed, 2 skipped")
        self.assertIn("skipped: t::a: why", out)
        self.assertIn("failed: x", out)
        self.assertFalse(ok)
        out, ok = results.summary(["counts: 3 0 0"])
        self.assertEqual(out, ["summary: 3 passed, 0 failed, 0 skipped"])
        self.assertTrue(ok)

    def test_nothing_run_is_still_a_summary(self):
        self.assertEqual(results.summary([]), (["summary: 0 passed, 0 failed, 0 skipped"], True))


if __name__ == "__main__":
    unittest.main()

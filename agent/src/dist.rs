//! Shell completions and the man page, generated from the clap definition (`cli::command`).
//! `build.rs` compiles this file as well and writes both into `OUT_DIR/dist/` at build time,
//! which `scripts/package` ships in the Debian package; `procnetmon2 completions SHELL`
//! prints the same completion script from the running binary. The man page's examples, units
//! and exit status come from `--help`'s own text, so the two cannot drift apart.
//! Uses only clap, clap_complete, clap_mangen, `crate::cli`, `crate::version` and std.

use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, italic, roman};

/// The program's name, as installed.
pub const BIN: &str = "procnetmon2";

/// Shells whose completion scripts the package installs.
pub const PACKAGED_SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> String {
    let mut cmd = crate::cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut out);
    // The generators write text; a lossy conversion can only ever touch a help string.
    String::from_utf8_lossy(&out).into_owned()
}

/// The file name `shell` loads completions for `procnetmon2` from (`procnetmon2.bash`,
/// `_procnetmon2`, `procnetmon2.fish`, ...).
pub fn completion_file_name(shell: Shell) -> String {
    use clap_complete::Generator as _;
    shell.file_name(BIN)
}

/// One section of `--help`'s closing text ("Examples:", "Units:", "Exit status:"), without
/// its heading (text on the heading's line, or the indented lines below it); empty when the
/// help has no such section.
fn help_section(after_help: &str, heading: &str) -> String {
    after_help
        .split("\n\n")
        .find_map(|para| para.strip_prefix(heading))
        .map(|rest| {
            rest.strip_prefix('\n')
                .unwrap_or(rest.trim_start())
                .to_string()
        })
        .unwrap_or_default()
}

/// Text of a paragraph as a sentence: the line breaks of `--help` turned into spaces, the
/// first letter capitalised.
fn flow(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The man page (section 1) in roff, for the version text `version`.
pub fn man_page(version: &'static str) -> String {
    let cmd = crate::cli::command().version(version);
    let after_help = cmd
        .get_after_help()
        .map(ToString::to_string)
        .unwrap_or_default();
    let man = clap_mangen::Man::new(cmd.clone())
        .manual("User Commands")
        .source(format!("{BIN} {version}"));
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    for render in [
        clap_mangen::Man::render_title,
        clap_mangen::Man::render_name_section,
        clap_mangen::Man::render_synopsis_section,
        clap_mangen::Man::render_description_section,
        clap_mangen::Man::render_options_section,
        clap_mangen::Man::render_subcommands_section,
    ] {
        render(&man, &mut out).expect("render into memory");
    }

    let mut roff = Roff::new();
    help_sections(&mut roff, &after_help);
    reference_sections(&mut roff, version);
    roff.to_writer(&mut out).expect("render into memory");
    String::from_utf8_lossy(&out).into_owned()
}

/// EXAMPLES, UNITS and EXIT STATUS: `--help`'s own closing text, and what it leaves out.
fn help_sections(roff: &mut Roff, after_help: &str) {
    roff.control("SH", ["EXAMPLES"]);
    roff.control("nf", [] as [&str; 0]);
    for line in help_section(after_help, "Examples:").lines() {
        roff.text([roman(line.strip_prefix("  ").unwrap_or(line).trim_end())]);
    }
    roff.control("fi", [] as [&str; 0]);

    roff.control("SH", ["UNITS"]);
    roff.text([roman(flow(&help_section(after_help, "Units:")))]);
    roff.control("PP", [] as [&str; 0]);
    roff.text([roman(
        "Bytes are counted once per packet buffer (skb): with GSO/GRO one skb can be many \
         wire packets, so packet counts are skb counts and a NIC's own counters (one header \
         per wire segment, plus the link layer) read somewhat higher. Retransmissions count \
         again. Totals in the table use binary units (B, KiB, MiB, GiB). In /metrics, bytes \
         and packets are counters that never go down.",
    )]);

    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(flow(&help_section(after_help, "Exit status:")))]);
    roff.control("PP", [] as [&str; 0]);
    roff.text([roman(
        "In spawn mode (-- COMMAND) the exit status is COMMAND's own, and 127 when it cannot \
         be started. Errors are one line on standard error that names the fix.",
    )]);
}

/// ENVIRONMENT, FILES, REQUIREMENTS, VERSION and SEE ALSO.
fn reference_sections(roff: &mut Roff, version: &str) {
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", [] as [&str; 0]);
    roff.text([bold("RUST_LOG")]);
    roff.text([roman(
        "Log level on standard error (error, warn, info, debug); debug also prints a \
         verifier log when a program fails to load.",
    )]);

    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/run/procnetmon2/",
            "State of running instances (moved processes, dedicated cgroups), read by \
             --cleanup after a run was killed with SIGKILL.",
        ),
        (
            "/sys/fs/cgroup",
            "The cgroup v2 mount (or /sys/fs/cgroup/unified on hybrid hosts): programs attach \
             there, and --isolate and spawn mode create procnetmon2-* cgroups under it.",
        ),
        (
            "/sys/kernel/btf/vmlinux",
            "The running kernel's BTF; required.",
        ),
        (
            "/proc",
            "Processes, their sockets and cgroups; in a container, the host's /proc given \
             with --host-proc (e.g. /host/proc).",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([italic(path)]);
        roff.text([roman(what)]);
    }

    roff.control("SH", ["REQUIREMENTS"]);
    roff.text([roman(format!(
        "Linux >= {} with BTF and cgroup v2; root, or CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN \
         and CAP_SYS_PTRACE.",
        crate::version::MIN_KERNEL
    ))]);

    roff.control("SH", ["VERSION"]);
    roff.text([roman(version)]);

    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("bpftool"),
        roman("(8), "),
        bold("ss"),
        roman(format!(
            "(8), {}",
            "https://github.com/bkohler/procnetmon2#readme"
        )),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_has_the_sections_of_help_and_readme() {
        let page = man_page(crate::version::text());
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH OPTIONS",
            ".SH EXAMPLES",
            ".SH UNITS",
            ".SH \"EXIT STATUS\"",
            ".SH FILES",
            ".SH VERSION",
        ] {
            assert!(page.contains(section), "man page lacks {section}");
        }
        // Content comes from --help: an example, the units line and the exit codes.
        assert!(page.contains("procnetmon2 \\-p 1234,5678 \\-a"), "{page}");
        assert!(page.contains("bits per second"), "{page}");
        assert!(page.contains("2 usage error"), "{page}");
        assert!(page.contains("\\-\\-metrics\\-addr"), "{page}");
        assert!(page.contains(crate::version::MIN_KERNEL), "{page}");
        assert!(page.contains("completions"), "{page}");
    }

    #[test]
    fn help_sections_split() {
        let text = "Examples:\n  a\n  b\n\nUnits: x\ny\n\nExit status: 0 ok.";
        assert_eq!(help_section(text, "Examples:"), "  a\n  b");
        assert_eq!(flow(&help_section(text, "Units:")), "X y");
        assert_eq!(help_section(text, "Exit status:"), "0 ok.");
        assert_eq!(help_section(text, "Files:"), "");
    }

    #[test]
    fn completions_for_packaged_shells() {
        for shell in PACKAGED_SHELLS {
            let script = completions(shell);
            assert!(script.contains("metrics-addr"), "{shell}: {script}");
            assert!(script.contains("completions"), "{shell}");
        }
        assert_eq!(completion_file_name(Shell::Bash), "procnetmon2.bash");
        assert_eq!(completion_file_name(Shell::Zsh), "_procnetmon2");
    }
}

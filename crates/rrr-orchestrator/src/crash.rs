//! A kernel crash report as the recording's console shows it: where it starts and ends, its
//! title (syzbot's style: `KASAN: slab-use-after-free in f`, `WARNING in f`), and its call
//! trace, for the tracer to mark ([`rrr_trace::CrashReport`]).

use rrr_trace::CrashReport;

/// The most console lines a report is taken to span.
const MAX_REPORT_LINES: usize = 200;

/// Lines that end a report (kept in it).
const REPORT_ENDS: &[&str] = &[
    "---[ end trace",
    "---[ end Kernel panic",
    "==================================================================",
];

/// The report that starts at the console line `first` (the recording's outcome) in `console`.
pub fn report(console: &str, first: &str) -> CrashReport {
    let lines: Vec<&str> = console.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == first.trim())
        .unwrap_or(0);
    let mut text = Vec::new();
    for (i, line) in lines[start..].iter().enumerate().take(MAX_REPORT_LINES) {
        text.push(*line);
        // KASAN's report opens with the line that also closes it.
        if i > 0 && REPORT_ENDS.iter().any(|e| line.contains(e)) {
            break;
        }
    }
    CrashReport {
        title: title(&text),
        frames: frames(&text),
        text: text.join("\n") + "\n",
    }
}

/// A report's title, from its lines, as syzbot writes it.
fn title(lines: &[&str]) -> String {
    let first = lines
        .iter()
        .map(|l| strip_timestamp(l))
        .find(|l| !l.starts_with("=====") && !l.is_empty())
        .unwrap_or_default();
    // `BUG: KASAN: slab-use-after-free in f+0x12/0x34`, then `Write of size 4 at addr ...`
    // -> `KASAN: slab-use-after-free Write in f`.
    if let Some(rest) = first.strip_prefix("BUG: ") {
        if let Some((what, place)) = rest.split_once(" in ") {
            let access = lines
                .iter()
                .map(|l| strip_timestamp(l))
                .find_map(|l| l.split_once(" of size ").map(|(a, _)| a))
                .filter(|a| *a == "Read" || *a == "Write")
                .filter(|_| what.starts_with("KASAN: "));
            return match access {
                Some(a) => format!("{what} {a} in {}", symbol(place)),
                None => format!("{what} in {}", symbol(place)),
            };
        }
        return rest.trim().to_owned();
    }
    // `WARNING: CPU: 0 PID: 85 at drivers/misc/lkdtm/bugs.c:91 f+0x1/0x2` -> `WARNING in f`.
    if first.starts_with("WARNING: ") {
        if let Some(place) = first.split(" at ").nth(1) {
            if let Some(func) = place.split_whitespace().nth(1) {
                return format!("WARNING in {}", symbol(func));
            }
        }
    }
    // An oops or fault: its title, in the function of the RIP line.
    let rip = lines.iter().find_map(|l| {
        let l = strip_timestamp(l);
        l.strip_prefix("RIP: 0010:").map(symbol)
    });
    let head = first
        .split(['[', ':', ','])
        .next()
        .unwrap_or(first)
        .trim()
        .to_owned();
    match (rip, first.starts_with("Kernel panic")) {
        (_, true) => first.trim().to_owned(),
        (Some(f), false) if !f.is_empty() => format!("{head} in {f}"),
        _ => first.trim().to_owned(),
    }
}

/// `f+0x12/0x34` (or `f.isra.0+0x..`) -> `f` (or `f.isra.0`).
fn symbol(s: &str) -> String {
    s.split('+').next().unwrap_or(s).trim().to_owned()
}

/// A console line without the kernel's `[   12.345678]` timestamp.
fn strip_timestamp(line: &str) -> &str {
    let l = line.trim();
    match l.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest.trim(),
        _ => l,
    }
}

/// The first call trace's reliable frames, innermost first.
fn frames(lines: &[&str]) -> Vec<String> {
    let mut frames = Vec::new();
    let mut inside = false;
    for line in lines.iter().map(|l| strip_timestamp(l)) {
        if line.starts_with("Call Trace:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with('<') {
            // `<TASK>`, `</TASK>`, `<IRQ>`: context markers.
            if line.starts_with("</TASK>") {
                break;
            }
            continue;
        }
        let Some(frame) = line.split_whitespace().next() else {
            break;
        };
        if frame == "?" {
            continue;
        }
        if !frame.contains("+0x") {
            break;
        }
        frames.push(symbol(frame));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    const KASAN: &str = "\
rrr crash test
==================================================================
BUG: KASAN: slab-use-after-free in lkdtm_WRITE_AFTER_FREE+0x9a/0xc0
Write of size 4 at addr ffff888005a4c5d0 by task stimulus/85

CPU: 0 UID: 0 PID: 85 Comm: stimulus Not tainted 6.1.0 #1
Call Trace:
 <TASK>
 dump_stack_lvl+0x1c/0x30
 print_report+0xc4/0x5f0
 ? lkdtm_WRITE_AFTER_FREE+0x9a/0xc0
 kasan_report+0xb0/0xe0
 lkdtm_WRITE_AFTER_FREE+0x9a/0xc0
 lkdtm_do_action+0x1b/0x30
 direct_entry+0x150/0x170
 full_proxy_write+0x98/0xd0
 vfs_write+0x17d/0x6c0
 ksys_write+0xc2/0x150
 do_syscall_64+0x3d/0x90
 entry_SYSCALL_64_after_hwframe+0x72/0xdc
 </TASK>

Allocated by task 85:
==================================================================
after
";

    #[test]
    fn a_kasan_report_is_titled_as_syzbot_does_with_its_reliable_frames() {
        let r = report(
            KASAN,
            "BUG: KASAN: slab-use-after-free in lkdtm_WRITE_AFTER_FREE+0x9a/0xc0",
        );
        assert_eq!(
            r.title,
            "KASAN: slab-use-after-free Write in lkdtm_WRITE_AFTER_FREE"
        );
        assert_eq!(
            r.frames,
            [
                "dump_stack_lvl",
                "print_report",
                "kasan_report",
                "lkdtm_WRITE_AFTER_FREE",
                "lkdtm_do_action",
                "direct_entry",
                "full_proxy_write",
                "vfs_write",
                "ksys_write",
                "do_syscall_64",
                "entry_SYSCALL_64_after_hwframe"
            ]
        );
        assert!(r.text.starts_with("BUG: KASAN") && r.text.ends_with("=====\n"));
        assert!(!r.text.contains("after\n"));
    }

    #[test]
    fn warnings_and_oopses_are_titled_by_their_function() {
        let warning = "[    1.5] WARNING: CPU: 0 PID: 85 at drivers/misc/lkdtm/bugs.c:91 \
                       lkdtm_WARNING+0x1a/0x30\n[    1.5] ---[ end trace 0000000000000000 ]---\n";
        let first = "[    1.5] WARNING: CPU: 0 PID: 85 at drivers/misc/lkdtm/bugs.c:91 \
                     lkdtm_WARNING+0x1a/0x30";
        assert_eq!(report(warning, first).title, "WARNING in lkdtm_WARNING");
        let oops = "Oops: invalid opcode: 0000 [#1] SMP KASAN\nCPU: 0 PID: 85\n\
                    RIP: 0010:lkdtm_BUG+0x5/0x10\n";
        assert_eq!(
            report(oops, "Oops: invalid opcode: 0000 [#1] SMP KASAN").title,
            "Oops in lkdtm_BUG"
        );
        let gpf =
            "general protection fault, probably for non-canonical address 0xdead: 0000 [#1]\n\
                   RIP: 0010:f.isra.0+0x5/0x10\n";
        assert_eq!(
            report(
                gpf,
                "general protection fault, probably for non-canonical address 0xdead: 0000 [#1]"
            )
            .title,
            "general protection fault in f.isra.0"
        );
    }
}

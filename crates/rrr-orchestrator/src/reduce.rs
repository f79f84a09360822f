//! Config reduction: from a bug's kernel config, what rrr turns on (what the tracer needs) and
//! off (what the bug does not need but slows an emulated kernel down), each with its reason.
//!
//! A sanitizer or debug option stays only when the crash needs it, judged from the crash's
//! title and the report's stack frames, never from words elsewhere in the report.

use std::fmt;

use crate::engine::Engine;

/// One change to the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The option, without `CONFIG_`.
    pub option: &'static str,
    /// Turned on (`y`) or off.
    pub on: bool,
    /// Why.
    pub why: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.on { "y" } else { "n" };
        write!(f, "CONFIG_{}={value}  # {}", self.option, self.why)
    }
}

/// A stack frame of a crash report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The function.
    pub func: String,
    /// Its source file, if the report gives it (`net/socket.c`).
    pub file: Option<String>,
}

/// What reduction reads of a crash: its title and the report's frames and markers.
#[derive(Clone, Debug, Default)]
pub struct Crash {
    /// syzbot's title (`KASAN: slab-use-after-free Read in hci_send_acl`).
    pub title: String,
    /// Every stack frame in the report (crash, allocation and free stacks).
    pub frames: Vec<Frame>,
    /// The report says a fault was injected (`FAULT_INJECTION: forcing a failure`).
    pub fault_injected: bool,
}

impl Crash {
    /// Reads a report: frames are lines like ` func+0x1/0x2 path/file.c:12` or
    /// ` func path/file.h:3 [inline]`, and the `RIP:` line.
    pub fn from_report(title: &str, report: &str) -> Crash {
        let mut frames = Vec::new();
        let mut fault_injected = false;
        for line in report.lines() {
            let line = line.trim();
            if line.starts_with("FAULT_INJECTION: forcing a failure") {
                fault_injected = true;
            }
            let line = line
                .strip_prefix("RIP: 0010:")
                .or_else(|| line.strip_prefix("RIP: "))
                .unwrap_or(line);
            let mut words = line.split_whitespace();
            let Some(first) = words.next() else {
                continue;
            };
            let file = words
                .next()
                .filter(|w| w.contains(".c:") || w.contains(".h:") || w.contains(".S:"))
                .map(|w| w.split(':').next().unwrap_or(w).to_owned());
            let func = match first.split_once("+0x") {
                Some((func, _)) => func,
                None if file.is_some() && line.ends_with("[inline]") => first,
                None => continue,
            };
            let is_ident = !func.is_empty()
                && func
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
            if is_ident {
                frames.push(Frame {
                    func: func.to_owned(),
                    file,
                });
            }
        }
        Crash {
            title: title.trim().to_owned(),
            frames,
            fault_injected,
        }
    }

    /// The title, if a report's first significant line is all there is (no syzbot title).
    pub fn title_from_report(report: &str) -> String {
        const HEADS: [&str; 9] = [
            "BUG:",
            "WARNING:",
            "KASAN:",
            "KMSAN:",
            "KCSAN:",
            "UBSAN:",
            "INFO:",
            "kernel BUG",
            "general protection fault",
        ];
        report
            .lines()
            .map(str::trim)
            .find(|l| HEADS.iter().any(|h| l.starts_with(h)) || l.contains(" corruption"))
            .unwrap_or("")
            .to_owned()
    }

    fn title_has(&self, words: &[&str]) -> bool {
        words.iter().any(|w| self.title.contains(w))
    }

    fn frame_in(&self, dirs: &[&str], prefixes: &[&str]) -> Option<&Frame> {
        self.frames.iter().find(|f| {
            f.file
                .as_deref()
                .is_some_and(|file| dirs.iter().any(|d| file.starts_with(d)))
                || prefixes.iter().any(|p| f.func.starts_with(p))
        })
    }
}

/// What the build machine offers that the rules depend on.
#[derive(Clone, Debug)]
pub struct Toolchain {
    /// The compiler can emit DWARF 5 (gcc 11+, clang 14+).
    pub dwarf5: bool,
    /// pahole is recent enough for BTF (1.22+).
    pub pahole_for_btf: bool,
}

/// Whether `config` has `CONFIG_<option>=y` (or `=m`).
fn is_on(config: &str, option: &str) -> bool {
    let prefix = format!("CONFIG_{option}=");
    config.lines().any(|l| {
        l.strip_prefix(&prefix)
            .is_some_and(|v| v == "y" || v == "m")
    })
}

/// A sanitizer or debug option, kept only when the crash needs it.
struct Keep {
    /// Options switched off together (the first names the rule).
    options: &'static [&'static str],
    /// What it costs when kept for nothing.
    cost: &'static str,
    /// Why this crash needs it, if it does.
    needed: fn(&Crash) -> Option<String>,
}

fn title_rule(c: &Crash, words: &[&str], what: &str) -> Option<String> {
    c.title_has(words)
        .then(|| format!("kept: the crash is a {what} report (`{}`)", c.title))
}

fn frame_rule(c: &Crash, dirs: &[&str], prefixes: &[&str]) -> Option<String> {
    c.frame_in(dirs, prefixes).map(|f| {
        format!(
            "kept: the crash's stack runs through {}{}",
            f.func,
            f.file
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        )
    })
}

const KEEPS: &[Keep] = &[
    Keep {
        options: &["KASAN"],
        cost: "KASAN checks every memory access (2-3x slower, more memory)",
        needed: |c| title_rule(c, &["KASAN:"], "KASAN"),
    },
    Keep {
        options: &["KMSAN"],
        cost: "KMSAN tracks every byte's initialisation (3x slower)",
        needed: |c| title_rule(c, &["KMSAN:"], "KMSAN"),
    },
    Keep {
        options: &["KCSAN"],
        cost: "KCSAN watches memory accesses for data races",
        needed: |c| title_rule(c, &["KCSAN:"], "KCSAN"),
    },
    Keep {
        options: &["UBSAN"],
        cost: "UBSAN checks arithmetic and bounds everywhere",
        needed: |c| title_rule(c, &["UBSAN:"], "UBSAN"),
    },
    Keep {
        options: &["KFENCE"],
        cost: "KFENCE samples allocations into guarded pages",
        needed: |c| title_rule(c, &["KFENCE:"], "KFENCE"),
    },
    Keep {
        options: &["DEBUG_KMEMLEAK"],
        cost: "kmemleak tracks every allocation and scans memory",
        needed: |c| title_rule(c, &["memory leak in"], "kmemleak"),
    },
    Keep {
        options: &[
            "PROVE_LOCKING",
            "DEBUG_LOCK_ALLOC",
            "LOCK_STAT",
            "PROVE_RCU",
        ],
        cost: "lockdep validates every lock acquisition",
        needed: |c| {
            title_rule(
                c,
                &[
                    "possible deadlock",
                    "inconsistent lock state",
                    "circular locking",
                    "suspicious RCU usage",
                    "held lock freed",
                    "bad unlock balance",
                    "lock held when returning",
                    "BUG: MAX_LOCKDEP",
                    "locking bug",
                ],
                "lockdep",
            )
            .or_else(|| {
                c.frames
                    .iter()
                    .find(|f| {
                        f.file.as_deref() == Some("kernel/locking/lockdep.c")
                            && (f.func.starts_with("print_") || f.func.starts_with("check_"))
                    })
                    .map(|f| format!("kept: lockdep reported the crash ({})", f.func))
            })
        },
    },
    Keep {
        options: &["DEBUG_ATOMIC_SLEEP"],
        cost: "might_sleep checks on every sleeping call",
        needed: |c| {
            title_rule(
                c,
                &["sleeping function called", "scheduling while atomic"],
                "might_sleep",
            )
        },
    },
    Keep {
        options: &["DEBUG_LIST"],
        cost: "list debugging checks every list operation",
        needed: |c| {
            title_rule(
                c,
                &["list_add corruption", "list_del corruption"],
                "list debugging",
            )
            .or_else(|| {
                frame_rule(
                    c,
                    &["lib/list_debug.c"],
                    &["__list_add_valid", "__list_del_entry_valid"],
                )
            })
        },
    },
    Keep {
        options: &["DEBUG_OBJECTS"],
        cost: "debugobjects tracks object lifetimes",
        needed: |c| {
            title_rule(c, &["ODEBUG"], "debugobjects")
                .or_else(|| frame_rule(c, &["lib/debugobjects.c"], &[]))
        },
    },
    Keep {
        options: &["DEBUG_VM"],
        cost: "VM debugging checks page and mapping state",
        needed: |c| {
            title_rule(c, &["VM_BUG_ON", "Bad page"], "VM debugging")
                .or_else(|| frame_rule(c, &["mm/debug.c"], &["dump_page"]))
        },
    },
    Keep {
        options: &[
            "FAULT_INJECTION",
            "FAILSLAB",
            "FAIL_PAGE_ALLOC",
            "FAULT_INJECTION_USERCOPY",
        ],
        cost: "fault injection hooks",
        needed: |c| {
            c.fault_injected
                .then(|| "kept: the report shows an injected fault".to_owned())
        },
    },
    Keep {
        options: &["USB_SUPPORT", "USB"],
        cost: "USB drivers and their probing at boot",
        needed: |c| frame_rule(c, &["drivers/usb/"], &["usb_"]),
    },
    Keep {
        options: &["SOUND", "SND"],
        cost: "sound drivers",
        needed: |c| frame_rule(c, &["sound/"], &["snd_"]),
    },
    Keep {
        options: &["DRM"],
        cost: "graphics drivers",
        needed: |c| frame_rule(c, &["drivers/gpu/drm/"], &["drm_"]),
    },
];

/// What rrr's machines need of any kernel, whatever its config was made for: the console on
/// the first serial port, the root disk's file system, and the `/dev` that `/init` mounts;
/// then each engine's own devices ([`crate::engine::Emulator::drivers`]: virtio on QEMU, IDE
/// on PANDA, whose record/replay does not cover virtio).
const CONSOLE: &[(&str, &str)] = &[
    (
        "SERIAL_8250",
        "the console is the machine's first serial port",
    ),
    (
        "SERIAL_8250_CONSOLE",
        "the console is the machine's first serial port",
    ),
];

/// See [`CONSOLE`]: what the root file system needs, after the engines' devices.
const ROOT: &[(&str, &str)] = &[
    ("EXT4_FS", "the root file system is ext4"),
    ("DEVTMPFS", "/init mounts devtmpfs on /dev"),
];

/// The changes rrr makes to `config` for `crash` (`None`: no crash, e.g. a developer's own
/// reproducer: every sanitizer and costly debug option goes).
pub fn reduce(config: &str, crash: Option<&Crash>, tools: &Toolchain) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut set = |option: &'static str, on: bool, why: &str| {
        if is_on(config, option) != on {
            changes.push(Change {
                option,
                on,
                why: why.to_owned(),
            });
        }
    };
    set(
        "DEBUG_INFO",
        true,
        "the tracer reads functions, parameters and types from DWARF",
    );
    set(
        "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT",
        false,
        "rrr picks the DWARF version itself",
    );
    if tools.dwarf5 {
        set(
            "DEBUG_INFO_DWARF5",
            true,
            "DWARF 5: the compiler supports it",
        );
        set("DEBUG_INFO_DWARF4", false, "DWARF 5 is used instead");
    } else {
        set(
            "DEBUG_INFO_DWARF4",
            true,
            "DWARF 4: the compiler is too old for DWARF 5",
        );
    }
    set(
        "DEBUG_INFO_REDUCED",
        false,
        "reduced DWARF drops the parameter types the tracer decodes",
    );
    set(
        "DEBUG_INFO_SPLIT",
        false,
        "the tracer reads DWARF from vmlinux itself",
    );
    if !tools.pahole_for_btf {
        set(
            "DEBUG_INFO_BTF",
            false,
            "BTF needs pahole 1.22+, which is not installed",
        );
    }
    let drivers = Engine::ALL.iter().flat_map(|e| e.emulator().drivers());
    for (option, why) in CONSOLE.iter().chain(drivers).chain(ROOT) {
        set(option, true, why);
    }
    set(
        "RANDOMIZE_BASE",
        false,
        "KASLR would move the kernel away from vmlinux's addresses",
    );
    set(
        "RANDOMIZE_MEMORY",
        false,
        "fixed memory layout, so addresses read the same in every replay",
    );
    set(
        "KCOV",
        false,
        "coverage callbacks in every basic block only serve fuzzing",
    );
    set(
        "BOOTPARAM_HUNG_TASK_PANIC",
        false,
        "an emulated kernel runs slower than its hung-task timer assumes",
    );
    set(
        "BOOTPARAM_SOFTLOCKUP_PANIC",
        false,
        "an emulated kernel runs slower than its soft-lockup timer assumes",
    );
    for keep in KEEPS {
        let needed = crash.and_then(|c| (keep.needed)(c));
        if needed.is_some() {
            continue;
        }
        let why = match crash {
            Some(_) => format!("{}; the crash does not involve it", keep.cost),
            None => format!("{}; no crash report asks for it", keep.cost),
        };
        for option in keep.options {
            set(option, false, &why);
        }
    }
    changes
}

/// What a kept option's rule says, for `--explain`.
pub fn kept(config: &str, crash: &Crash) -> Vec<String> {
    KEEPS
        .iter()
        .filter(|k| is_on(config, k.options[0]))
        .filter_map(|k| (k.needed)(crash).map(|why| format!("CONFIG_{}  # {why}", k.options[0])))
        .collect()
}

/// The changes as a config fragment for `merge_config.sh`.
pub fn fragment(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|c| match c.on {
            true => format!("CONFIG_{}=y\n", c.option),
            false => format!("# CONFIG_{} is not set\n", c.option),
        })
        .collect()
}

/// The compiler a config was made with, from `CONFIG_CC_VERSION_TEXT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compiler {
    /// gcc, with its major version.
    Gcc(u32),
    /// clang, with its major version.
    Clang(u32),
}

impl Compiler {
    /// Reads `CONFIG_CC_VERSION_TEXT` (`None`: the config does not say).
    pub fn of_config(config: &str) -> Option<Compiler> {
        let text = config
            .lines()
            .find_map(|l| l.strip_prefix("CONFIG_CC_VERSION_TEXT="))?
            .trim_matches('"');
        Self::from_version_text(text)
    }

    /// Parses a `--version` first line (`gcc (Debian 12.2.0-14) 12.2.0`,
    /// `Debian clang version 15.0.6`).
    pub fn from_version_text(text: &str) -> Option<Compiler> {
        let major = |after: &str| -> u32 {
            after
                .split_whitespace()
                .find_map(|w| {
                    let head = w.split('.').next()?;
                    (w.contains('.') && head.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| head.parse().ok())?
                })
                .unwrap_or(0)
        };
        if let Some(i) = text.find("clang version") {
            return Some(Compiler::Clang(major(&text[i + "clang version".len()..])));
        }
        if text.contains("gcc") || text.contains("GCC") {
            // The version follows the parenthesised package description, if any.
            let after = text.rsplit(')').next().unwrap_or(text);
            return Some(Compiler::Gcc(major(after)));
        }
        None
    }

    /// The compiler emits DWARF 5.
    pub fn dwarf5(&self) -> bool {
        match self {
            Compiler::Gcc(v) => *v >= 11,
            Compiler::Clang(v) => *v >= 14,
        }
    }
}

impl fmt::Display for Compiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compiler::Gcc(v) => write!(f, "gcc {v}"),
            Compiler::Clang(v) => write!(f, "clang {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/syzbot");
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    const TOOLS: Toolchain = Toolchain {
        dwarf5: true,
        pahole_for_btf: false,
    };

    fn off(changes: &[Change]) -> Vec<&'static str> {
        changes.iter().filter(|c| !c.on).map(|c| c.option).collect()
    }

    #[test]
    fn frames_are_read_from_real_report_lines() {
        let crash = Crash::from_report("t", &fixture("kasan-uaf.report"));
        assert_eq!(
            crash.frames[0],
            Frame {
                func: "__dump_stack".into(),
                file: Some("lib/dump_stack.c".into())
            }
        );
        assert!(crash.frames.contains(&Frame {
            func: "hci_send_acl".into(),
            file: Some("net/bluetooth/hci_core.c".into())
        }));
        // Allocation and free stacks count too.
        assert!(crash.frames.iter().any(|f| f.func == "hci_conn_del"));
        assert!(crash.frames.iter().all(|f| !f.func.contains(' ')));
        let usb = Crash::from_report("t", &fixture("usb-warning.report"));
        assert_eq!(usb.frames[0].func, "usb_submit_urb", "the RIP line");
        assert_eq!(
            Crash::title_from_report(&fixture("kasan-uaf.report")),
            "BUG: KASAN: slab-use-after-free in hci_send_acl+0x4e/0x2f0 net/bluetooth/hci_core.c:3213"
        );
    }

    #[test]
    fn a_kasan_crash_keeps_kasan_only() {
        let config = fixture("syzbot.config");
        let crash = Crash::from_report(
            "KASAN: slab-use-after-free Read in hci_send_acl",
            &fixture("kasan-uaf.report"),
        );
        let changes = reduce(&config, Some(&crash), &TOOLS);
        let off = off(&changes);
        assert!(!off.contains(&"KASAN"));
        for gone in [
            "KCOV",
            "RANDOMIZE_BASE",
            "BOOTPARAM_HUNG_TASK_PANIC",
            "DEBUG_INFO_BTF",
            "UBSAN",
            "KFENCE",
            "PROVE_LOCKING",
            "DEBUG_LIST",
            "DEBUG_OBJECTS",
            "DEBUG_VM",
            "DEBUG_KMEMLEAK",
            "FAULT_INJECTION",
            "USB",
            "SOUND",
            "DRM",
        ] {
            assert!(off.contains(&gone), "{gone} should go: {changes:#?}");
        }
        // Options the config does not have are not touched.
        assert!(!off.contains(&"KMSAN") && !off.contains(&"LOCK_STAT"));
        let on: Vec<_> = changes.iter().filter(|c| c.on).map(|c| c.option).collect();
        assert_eq!(on, ["DEBUG_INFO_DWARF5"]);
        assert!(off.contains(&"DEBUG_INFO_DWARF4"), "one DWARF version");
        let kept = kept(&config, &crash);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].starts_with("CONFIG_KASAN") && kept[0].contains("KASAN report"));
        let frag = fragment(&changes);
        assert!(frag.contains("# CONFIG_KCOV is not set\n"));
        assert!(frag.contains("CONFIG_DEBUG_INFO_DWARF5=y\n"));
    }

    #[test]
    fn lockdep_and_list_and_subsystem_crashes_keep_what_they_need() {
        let config = fixture("syzbot.config");
        let deadlock = Crash::from_report(
            "possible deadlock in ext4_file_write_iter",
            &fixture("lockdep-deadlock.report"),
        );
        let off_d = off(&reduce(&config, Some(&deadlock), &TOOLS)).join(" ");
        assert!(
            !off_d.contains("PROVE_LOCKING") && off_d.contains("KASAN"),
            "{off_d}"
        );

        let usb = Crash::from_report("WARNING in usb_submit_urb", &fixture("usb-warning.report"));
        let off_u = off(&reduce(&config, Some(&usb), &TOOLS));
        assert!(
            !off_u.contains(&"USB") && !off_u.contains(&"USB_SUPPORT"),
            "{off_u:?}"
        );
        assert!(off_u.contains(&"SOUND") && off_u.contains(&"PROVE_LOCKING"));
        // The word "KASAN" in the Oops line does not keep KASAN: the title decides.
        let list = Crash::from_report(
            "kernel BUG in snd_timer_close_locked",
            &fixture("list-corruption.report"),
        );
        let changes = reduce(&config, Some(&list), &TOOLS);
        let off_l = off(&changes);
        assert!(off_l.contains(&"KASAN"), "{off_l:?}");
        assert!(
            !off_l.contains(&"DEBUG_LIST") && !off_l.contains(&"SOUND"),
            "{off_l:?}"
        );
        let kept = kept(&config, &list).join("\n");
        assert!(
            kept.contains("CONFIG_DEBUG_LIST") && kept.contains("__list_del_entry_valid"),
            "{kept}"
        );
        assert!(
            kept.contains("CONFIG_SOUND") && kept.contains("sound/core/timer.c"),
            "{kept}"
        );
    }

    #[test]
    fn without_a_crash_every_costly_option_goes_and_old_compilers_get_dwarf4() {
        let config = fixture("syzbot.config");
        let old = Toolchain {
            dwarf5: false,
            pahole_for_btf: true,
        };
        let changes = reduce(&config, None, &old);
        let off = off(&changes);
        assert!(off.contains(&"KASAN") && off.contains(&"PROVE_LOCKING"));
        assert!(
            !off.contains(&"DEBUG_INFO_BTF"),
            "pahole is recent: BTF stays"
        );
        // The config already has DWARF 4 and the machine's drivers: nothing to turn on.
        assert!(changes.iter().all(|c| !c.on), "{changes:#?}");
    }

    #[test]
    fn the_machines_drivers_are_turned_on() {
        let config = fixture("syzbot.config").replace("CONFIG_ATA_PIIX=y\n", "");
        let changes = reduce(&config, None, &TOOLS);
        let on: Vec<_> = changes.iter().filter(|c| c.on).map(|c| c.option).collect();
        assert_eq!(on, ["DEBUG_INFO_DWARF5", "ATA_PIIX"]);
        let piix = changes.iter().find(|c| c.option == "ATA_PIIX").unwrap();
        assert!(piix.why.contains("PANDA"), "{piix:?}");
        assert!(fragment(&changes).contains("CONFIG_ATA_PIIX=y\n"));
    }

    #[test]
    fn compilers_from_config_text() {
        let config = fixture("syzbot.config");
        assert_eq!(Compiler::of_config(&config), Some(Compiler::Gcc(12)));
        assert_eq!(
            Compiler::from_version_text("Debian clang version 15.0.6"),
            Some(Compiler::Clang(15))
        );
        assert_eq!(
            Compiler::from_version_text("gcc (GCC) 10.2.1 20210110"),
            Some(Compiler::Gcc(10))
        );
        assert!(!Compiler::Gcc(10).dwarf5() && Compiler::Clang(15).dwarf5());
        assert_eq!(Compiler::of_config("CONFIG_X=y\n"), None);
    }
}

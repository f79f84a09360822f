//! Stock QEMU 10.x: icount record/replay on the q35 machine, the tracer as a TCG plugin
//! (`librrr_qemu.so`), reverse debugging through the recording's start snapshot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use rrr_trace::locate::Located;

use super::{Boot, Emulator, GdbTo, Mode, RunEnd, Verdict};
use crate::idle;
use crate::machine::{AtEnd, Vm, READY_SNAPSHOT, START_SNAPSHOT};
use crate::tools;

/// The QEMU system emulator rrr drives.
const QEMU: &str = "qemu-system-x86_64";

/// How long a replay may take to seek to its first instruction (it loads the start snapshot
/// and runs one instruction).
const SEEK_TIMEOUT: Duration = Duration::from_secs(120);

/// The instruction count of snapshot `tag` in the monitor's `info snapshots` table (`ID TAG
/// VM_SIZE DATE VM_CLOCK ICOUNT`).
fn snapshot_icount(table: &str, tag: &str) -> Option<u64> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&tag))
        .and_then(|f| f.last()?.parse().ok())
}

/// Preloads the pacing library (`librrr_skip_idle.so`, crate `rrr-skip-idle`) into QEMU, so
/// that its run does not wait out the guest's idle time: a recording (or the boot that takes
/// the ready snapshot) moves QEMU's clock on to the guest's next timer, a replay replays the
/// warps its log holds without sleeping. Its vCPU thread gets its name (`-name
/// ...,debug-threads=on`), by which the library knows it. `RRR_SKIP_IDLE=off` in rrr's
/// environment waits as QEMU does; without the library, rrr warns and waits too.
fn skip_idle(c: &mut Command, mode: &Mode, monitor: &Path) {
    if std::env::var_os("RRR_SKIP_IDLE").is_some_and(|v| v == "off") {
        return;
    }
    let lib = match tools::built_library("librrr_skip_idle.so", "RRR_SKIP_IDLE_LIB") {
        Ok(lib) => lib,
        Err(e) => {
            tracing::warn!("{e:#}: this run waits out the guest's idle time");
            return;
        }
    };
    let how = match mode {
        Mode::Boot { .. } | Mode::Record { .. } => "record",
        Mode::Replay { .. } => "replay",
    };
    let mut preload = lib.into_os_string();
    if let Some(more) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
        preload.push(":");
        preload.push(more);
    }
    c.args(["-name", "rrr,debug-threads=on"])
        .env("LD_PRELOAD", preload)
        .env("RRR_SKIP_IDLE", how)
        .env("RRR_SKIP_IDLE_REPORT", idle::report_path(monitor));
}

/// The QEMU engine.
pub struct Qemu;

impl Emulator for Qemu {
    fn binary(&self) -> &'static str {
        QEMU
    }

    /// Checks that QEMU is new enough for record/replay with TCG plugins (plugin API v4: QEMU
    /// 9.2 or later) and returns its version. Checked once per process: `rrr run` needs it
    /// for its cache key, the recording and the replay.
    fn require(&self) -> anyhow::Result<String> {
        static CHECKED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        if let Some(version) = CHECKED.get() {
            return Ok(version.clone());
        }
        let version = check_qemu()?;
        Ok(CHECKED.get_or_init(|| version).clone())
    }

    fn plugin(&self) -> anyhow::Result<PathBuf> {
        tools::built_library("librrr_qemu.so", "RRR_QEMU_PLUGIN")
    }

    fn root_device(&self) -> &'static str {
        "/dev/vda"
    }

    fn chipset(&self) -> &'static str {
        "q35"
    }

    /// icount record/replay from the ready snapshot, the start snapshot (`rrsnapshot`) that
    /// reverse debugging goes back to, the disk through `blkreplay`. No `kvmvapic` (a Windows
    /// TPR-patching aid that Linux does not use): loading its state asks the vCPU thread for
    /// work while the replay lock is held, which deadlocked every reverse step.
    fn machine_args(
        &self,
        c: &mut Command,
        _boot: &Boot,
        disk: &Path,
        mode: &Mode,
        monitor: &Path,
    ) {
        c.args(["-nic", "none", "-global", "apic-common.vapic=off"])
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()));
        let drive = format!("file={},if=none,id=img-direct", disk.display());
        let icount = match mode {
            Mode::Boot { scratch_log } => {
                format!("shift=auto,rr=record,rrfile={}", scratch_log.display())
            }
            Mode::Record { rrfile } => {
                c.args(["-loadvm", READY_SNAPSHOT]);
                format!(
                    "shift=auto,rr=record,rrfile={},rrsnapshot={START_SNAPSHOT}",
                    rrfile.display()
                )
            }
            Mode::Replay {
                rrfile,
                plugin,
                gdb,
            } => {
                if let Some((path, args)) = plugin {
                    c.arg("-plugin").arg(format!("{},{args}", path.display()));
                }
                if let Some(port) = gdb {
                    // Not paused (`-S`): see `hold_for_gdb`.
                    c.args(["-gdb", &format!("tcp:127.0.0.1:{port}")]);
                }
                format!(
                    "shift=auto,rr=replay,rrfile={},rrsnapshot={START_SNAPSHOT}",
                    rrfile.display()
                )
            }
        };
        if self.at_end(mode) == AtEnd::Pauses {
            c.args(["-action", "shutdown=pause"]);
        }
        skip_idle(c, mode, monitor);
        c.args(["-icount", &icount])
            .args(["-drive", &drive])
            .args(["-drive", "driver=blkreplay,if=none,image=img-direct,id=img"])
            .args(["-device", "virtio-blk-pci,drive=img"]);
    }

    /// A recording, and a replay without gdb, pause at their end (the guest's power-off or
    /// reboot, or in a replay the recorded one), for rrr to read the instruction count: a
    /// replay proves it is the recording by ending where the recording ended. Under gdb the
    /// replay exits at its end, and gdb sees the connection close.
    fn at_end(&self, mode: &Mode) -> AtEnd {
        match mode {
            Mode::Record { .. } | Mode::Replay { gdb: None, .. } => AtEnd::Pauses,
            Mode::Boot { .. } | Mode::Replay { gdb: Some(_), .. } => AtEnd::Exits,
        }
    }

    /// A panicked kernel stays in `panic()` (interrupts off) until rrr stops the machine: a
    /// reboot would be the guest's own end (see [`Emulator::at_end`]).
    fn panic_timeout(&self) -> i32 {
        0
    }

    fn replay_log(&self) -> &'static str {
        "replay.bin"
    }

    /// Removes the ready snapshot from the recording's disk. It was taken under record/replay,
    /// so it carries an instruction count, the same as the recording's start snapshot's; a
    /// reverse step loads the first snapshot at or before its target, which would be the
    /// ready one, whose replay state points into the boot's log ("error reading the replay
    /// data"). The disk keeps only `rrsnapshot`.
    fn finish_recording(&self, disk: &Path) -> anyhow::Result<()> {
        let qemu_img = tools::require("qemu-img", "qemu-utils")?;
        // blkreplay passes the snapshot to its image, which then holds it under two ids.
        for _ in 0..8 {
            let out = Command::new(&qemu_img)
                .args(["snapshot", "-d", READY_SNAPSHOT])
                .arg(disk)
                .output()?;
            if !out.status.success() {
                break;
            }
        }
        let out = Command::new(&qemu_img)
            .args(["snapshot", "-l"])
            .arg(disk)
            .output()?;
        let listed = String::from_utf8_lossy(&out.stdout);
        if listed
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(READY_SNAPSHOT))
        {
            bail!(
                "could not remove the ready snapshot from {}: {}",
                disk.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `-plugin` takes the library's path: nothing to prepare.
    fn load_plugin(&self, _: &mut Command, _: &Path, _: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    /// QEMU replays the console: a replay must print what the recorded run printed. And it
    /// must end where the recording ended: at the recorded shutdown, the last event of the
    /// log, at the same instruction count, which a silent run proves as well as a talkative
    /// one (recordings made before rrr kept the count are checked by their console alone).
    fn verdict(&self, replayed: &RunEnd, recorded: &RunEnd) -> Verdict {
        if replayed.console != recorded.console {
            return Verdict::Diverged(
                "its console output differs from the recorded one".to_owned(),
            );
        }
        match (recorded.instructions, replayed.instructions) {
            (Some(want), Some(got)) if got != want => Verdict::Diverged(format!(
                "it ended at instruction {got}, the recording at {want}"
            )),
            (Some(_), None) => Verdict::Short,
            _ => Verdict::Complete,
        }
    }

    fn replay_check(&self, replayed: &RunEnd) -> String {
        match replayed.instructions {
            Some(n) => format!(
                "ended at the recording's end, instruction {n}, with identical console output"
            ),
            None => "identical console output".to_owned(),
        }
    }

    /// Stops the replay at once and seeks it to its first instruction (the start snapshot's
    /// count plus one). QEMU 10 started paused (`-S`) replays some recordings not at all: the
    /// vCPU stays in the start snapshot's `hlt` while the main loop kicks it forever, the count
    /// never moving (about half of the recordings of one stimulus, each every time). A replay
    /// that started running, then seeks, replays every one, and so do gdb's reverse steps (they
    /// seek too). The first instruction is an interrupt's entry (the snapshot's vCPU is
    /// halted), never a traced function's, so `gdb_to` misses no call.
    fn hold_for_gdb(&self, vm: &mut Vm) -> anyhow::Result<String> {
        let ended = |e: anyhow::Error| {
            e.context("the replay ended before rrr could stop it for gdb (is the recording empty?)")
        };
        vm.monitor("stop").map_err(ended)?;
        let snapshots = vm.monitor("info snapshots").map_err(ended)?;
        let Some(start) = snapshot_icount(&snapshots, START_SNAPSHOT) else {
            bail!(
                "the recording's disk has no start snapshot `{START_SNAPSHOT}` with an \
                 instruction count, so its replay cannot go back for gdb; QEMU's monitor \
                 said:\n{snapshots}"
            );
        };
        let first = start + 1;
        let said = vm.monitor(&format!("replay_seek {first}"))?;
        if !said.is_empty() {
            bail!("QEMU could not seek the replay to instruction {first}: {said}");
        }
        let deadline = Instant::now() + SEEK_TIMEOUT;
        loop {
            let at = vm.instructions();
            if at == Some(first) && vm.monitor("info status")?.contains("paused") {
                return Ok(format!("its first instruction (instruction {first})"));
            }
            if Instant::now() > deadline {
                bail!(
                    "the replay did not reach its first instruction ({first}) in {}s (it is \
                     at {at:?})",
                    SEEK_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A TCG plugin cannot read QEMU's instruction counter, and the plugin's clock runs
    /// slightly ahead of it (it counts whole blocks, also those cut short), so a replay under
    /// the locating tracer first finds which execution of which instruction the trace shows
    /// at `at`; gdb stops there with a breakpoint that ignores the executions before it.
    fn gdb_to(
        &self,
        at: u64,
        locate: &mut dyn FnMut(u64) -> anyhow::Result<Located>,
    ) -> anyhow::Result<GdbTo> {
        let l = locate(at)?;
        let moved = if l.ts == at {
            String::new()
        } else {
            format!(" (the first call or return at or after {at})")
        };
        Ok(GdbTo {
            commands: vec![
                format!("tbreak *{:#x}", l.pc),
                format!("ignore $bpnum {}", l.hit - 1),
                "continue".to_owned(),
            ],
            place: format!(
                "trace time {}{moved}, execution {} of {:#x} (gdb passes the {} before it, \
                 a few ms each)",
                l.ts,
                l.hit,
                l.pc,
                l.hit - 1
            ),
        })
    }

    fn drivers(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("VIRTIO_MENU", "the QEMU machine's root disk is virtio-blk"),
            ("VIRTIO_PCI", "the QEMU machine's root disk is virtio-blk"),
            ("VIRTIO_BLK", "the QEMU machine's root disk is virtio-blk"),
        ]
    }
}

fn check_qemu() -> anyhow::Result<String> {
    let fix =
        "install qemu-system-x86 10.x (Debian 12: from bookworm-backports; scripts/setup does it)";
    let qemu = tools::require(QEMU, "qemu-system-x86")?;
    let text = tools::version_output(&qemu, "--version")?;
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or("")
        .to_owned();
    if tools::major_minor(&version) < (9, 2) {
        crate::fail!(
            MissingTool,
            "{QEMU} {version} is too old for rrr's tracer plugin (needs 9.2+): {fix}"
        );
    }
    let help = Command::new(&qemu).arg("--help").output()?;
    if !String::from_utf8_lossy(&help.stdout).contains("-plugin") {
        crate::fail!(
            MissingTool,
            "{QEMU} {version} was built without TCG plugin support: {fix}"
        );
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(console: &str, instructions: Option<u64>) -> RunEnd<'_> {
        RunEnd {
            console,
            instructions,
        }
    }

    #[test]
    fn the_start_snapshots_count_is_read_from_the_monitors_table() {
        let table = "List of snapshots present on all disks:\n\
            ID      TAG               VM_SIZE                DATE        VM_CLOCK     ICOUNT\n\
            --      rrr-ready        21.2 MiB 2026-11-30 06:46:37  0000:00:12.511 1211961000\n\
            --      rrr-start        21.2 MiB 2026-11-30 06:46:37  0000:00:12.511 1211961843\n";
        assert_eq!(snapshot_icount(table, "rrr-start"), Some(1_211_961_843));
        assert_eq!(snapshot_icount(table, "other"), None);
    }

    #[test]
    fn a_replay_is_the_recording_when_it_ends_at_the_recordings_count() {
        let recorded = end("", Some(1_230_745_260));
        assert!(matches!(
            Qemu.verdict(&end("", Some(1_230_745_260)), &recorded),
            Verdict::Complete
        ));
        let Verdict::Diverged(why) = Qemu.verdict(&end("", Some(1_230_745_259)), &recorded) else {
            panic!("a replay that ends early diverged");
        };
        assert_eq!(
            why,
            "it ended at instruction 1230745259, the recording at 1230745260"
        );
        assert!(matches!(
            Qemu.verdict(&end("", None), &recorded),
            Verdict::Short
        ));
        assert!(matches!(
            Qemu.verdict(&end("x", Some(1_230_745_260)), &recorded),
            Verdict::Diverged(_)
        ));
    }

    #[test]
    fn recordings_without_a_count_are_checked_by_their_console() {
        let recorded = end("RRR-END status=0\n", None);
        assert!(matches!(
            Qemu.verdict(&end("RRR-END status=0\n", Some(5)), &recorded),
            Verdict::Complete
        ));
        assert!(matches!(
            Qemu.verdict(&end("RRR-END status=1\n", Some(5)), &recorded),
            Verdict::Diverged(_)
        ));
    }
}

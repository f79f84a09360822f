//! When a wait is skipped, and by how much the clock moves: the library's logic, apart from
//! the libc calls it interposes.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// How long the main loop still waits, the first time in a vCPU's wait, before it skips: a
/// vCPU woken within this time was not idle (a replay of a busy guest waits briefly tens of
/// thousands of times a second), and skipping there only makes the main loop take QEMU's big
/// lock from it. Measured on the fork loop's replay: 5.84 s as QEMU paces it, 6.20 s skipping
/// at once, 5.88 s with this grace (four runs each, alternated).
pub const GRACE_NS: i64 = 20_000;

/// At most this many of the main loop's waits are skipped at full speed in one wait of the
/// vCPU: a vCPU that waits for longer is stopped (a replay paused for gdb, or at its end) or
/// starved of the host's CPU, and the main loop then no longer spins. Idle waits take 0 to 10
/// skips (the sleepy example's recording: 4,511 waits without a skip, 1,107 with 1 to 10, 3
/// with more). Beyond it a recording sleeps as QEMU does, and a replay polls for at most
/// [`SLOW_POLL_NS`].
pub const SKIPS_PER_WAIT: u32 = 4096;

/// How long a replay's main loop polls, at most, once its vCPU waited past [`SKIPS_PER_WAIT`]
/// skips. It must not sleep as QEMU does: a replay waits for the warp timers its log holds,
/// each as long as the recorded guest idled (seconds to minutes). A vCPU starved of the host's
/// CPU reaches the cap too: with two replays and a kernel build on 2 cores, a replay under gdb
/// slept past the test's 600 s. At one poll a millisecond, a paused replay costs little.
pub const SLOW_POLL_NS: i64 = 1_000_000;

/// In a recording, the guest's clock runs at most this many times as fast as the host's
/// while the guest idles, beyond [`BURST_NS`]: a disk read QEMU takes 10 ms for is then 10 s
/// for the guest at most (plus the burst), where the kernel's hung-task detector waits 120 s.
/// A guest that sleeps one second still waits only a millisecond for it.
pub const IDLE_RATE: i64 = 1000;

/// How much guest idle time a recording skips at once before [`IDLE_RATE`] holds it back.
pub const BURST_NS: i64 = 10_000_000_000;

/// How a run is paced (`RRR_SKIP_IDLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every call passes through.
    Off = 0,
    /// A recording (or the boot that takes the ready snapshot): a skipped wait moves the
    /// monotonic clock on by its length, so the timer waited for is due.
    Record = 1,
    /// A replay: its clocks come from the log, a skipped wait only does not sleep.
    Replay = 2,
}

impl Mode {
    /// The mode `RRR_SKIP_IDLE`'s value names (`record`, `replay`); anything else is
    /// [`Mode::Off`].
    pub fn from_env(value: Option<&str>) -> Mode {
        match value {
            Some("record") => Mode::Record,
            Some("replay") => Mode::Replay,
            _ => Mode::Off,
        }
    }
}

/// Whether a thread's name (`pthread_getname_np`) is a TCG vCPU thread's: `ALL CPUs/TCG`
/// (one thread runs every vCPU in turn, as icount does), or `CPU n/TCG` (one per vCPU).
pub fn is_vcpu_thread(name: &[u8]) -> bool {
    name.ends_with(b"/TCG")
}

/// The pacing state the interposed calls share.
#[derive(Debug)]
pub struct Pacer {
    mode: AtomicU8,
    vcpu_waiting: AtomicBool,
    skips_this_wait: AtomicU32,
    offset_ns: AtomicI64,
    skipped_this_wait_ns: AtomicI64,
    waits: AtomicU64,
    skips: AtomicU64,
    skipped_ns: AtomicI64,
    /// A recording's guest idle time that may still be skipped ([`BURST_NS`] at most).
    allowance_ns: AtomicI64,
    /// The host's clock when the allowance was last topped up (0: never).
    topped_up_at_ns: AtomicI64,
}

impl Pacer {
    /// A pacer that passes everything through until [`Pacer::set_mode`].
    pub const fn new() -> Pacer {
        Pacer {
            mode: AtomicU8::new(Mode::Off as u8),
            vcpu_waiting: AtomicBool::new(false),
            skips_this_wait: AtomicU32::new(0),
            offset_ns: AtomicI64::new(0),
            skipped_this_wait_ns: AtomicI64::new(0),
            waits: AtomicU64::new(0),
            skips: AtomicU64::new(0),
            skipped_ns: AtomicI64::new(0),
            allowance_ns: AtomicI64::new(BURST_NS),
            topped_up_at_ns: AtomicI64::new(0),
        }
    }

    /// Sets how the run is paced.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            1 => Mode::Record,
            2 => Mode::Replay,
            _ => Mode::Off,
        }
    }

    /// The vCPU thread starts waiting (halted, or stopped).
    pub fn vcpu_waits(&self) {
        self.skips_this_wait.store(0, Ordering::Relaxed);
        self.skipped_this_wait_ns.store(0, Ordering::Relaxed);
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.vcpu_waiting.store(true, Ordering::Release);
    }

    /// The vCPU thread stopped waiting: the time skipped in its wait was the guest's idle
    /// time (the skips of a wait that never ends, a machine paused at its end, are not).
    pub fn vcpu_runs(&self) {
        self.vcpu_waiting.store(false, Ordering::Release);
        let ns = self.skipped_this_wait_ns.swap(0, Ordering::Relaxed);
        self.skipped_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Whether the vCPU waits.
    pub fn vcpu_waiting(&self) -> bool {
        self.vcpu_waiting.load(Ordering::Acquire)
    }

    /// How long the main loop polls instead of its wait of `timeout_ns` (`None`: no timeout),
    /// `now_ns` reading the host's clock (only in a recording), or `None` if it waits as usual: only a wait for a timer
    /// is skipped, while the vCPU waits too, and in a recording not beyond [`SKIPS_PER_WAIT`].
    /// The first skip in a wait polls for [`GRACE_NS`], the others do not wait (a replay's past
    /// the cap poll for [`SLOW_POLL_NS`]), but a recording's poll lasts as long as
    /// [`IDLE_RATE`] needs. If nothing is ready after that poll and the vCPU still
    /// waits, the caller calls [`Pacer::skipped`].
    pub fn skip_poll_ns(
        &self,
        timeout_ns: Option<i64>,
        now_ns: impl FnOnce() -> i64,
    ) -> Option<i64> {
        let timeout = timeout_ns.filter(|&t| t > 0)?;
        let mode = self.mode();
        if mode == Mode::Off || !self.vcpu_waiting() {
            return None;
        }
        let poll = match self.skips_this_wait.load(Ordering::Relaxed) {
            0 => GRACE_NS.min(timeout),
            n if n < SKIPS_PER_WAIT => 0,
            _ if mode == Mode::Replay => return Some(SLOW_POLL_NS.min(timeout)),
            _ => return None,
        };
        if mode != Mode::Record {
            return Some(poll);
        }
        // Only the main loop's thread polls: its loads and stores need no more order.
        let now_ns = now_ns();
        let last = self.topped_up_at_ns.swap(now_ns, Ordering::Relaxed);
        let earned = if last == 0 {
            0
        } else {
            (now_ns - last).max(0).saturating_mul(IDLE_RATE)
        };
        let allowance = self
            .allowance_ns
            .load(Ordering::Relaxed)
            .saturating_add(earned)
            .min(BURST_NS);
        self.allowance_ns.store(allowance, Ordering::Relaxed);
        let short = (timeout - allowance).max(0);
        Some(poll.max((short + IDLE_RATE - 1) / IDLE_RATE))
    }

    /// A wait of `timeout_ns` was skipped: in a recording, the monotonic clock moves on by it.
    pub fn skipped(&self, timeout_ns: i64) {
        self.skips_this_wait.fetch_add(1, Ordering::Relaxed);
        self.skips.fetch_add(1, Ordering::Relaxed);
        if self.mode() == Mode::Record {
            self.allowance_ns.fetch_sub(timeout_ns, Ordering::Relaxed);
            self.offset_ns.fetch_add(timeout_ns, Ordering::Relaxed);
            self.skipped_this_wait_ns
                .fetch_add(timeout_ns, Ordering::Relaxed);
        }
    }

    /// How far `CLOCK_MONOTONIC` runs ahead of the host's, in nanoseconds.
    pub fn monotonic_offset_ns(&self) -> i64 {
        self.offset_ns.load(Ordering::Relaxed)
    }

    /// The totals so far.
    pub fn report(&self) -> Report {
        Report {
            waits: self.waits.load(Ordering::Relaxed),
            skips: self.skips.load(Ordering::Relaxed),
            skipped_ns: self.skipped_ns.load(Ordering::Relaxed),
        }
    }
}

impl Default for Pacer {
    fn default() -> Pacer {
        Pacer::new()
    }
}

/// What a run skipped: the report file's one line, `waits=W skips=N skipped_ns=S`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The vCPU's waits.
    pub waits: u64,
    /// The main loop's waits skipped.
    pub skips: u64,
    /// In a recording, the guest's idle time not waited out, in nanoseconds (0 in a replay,
    /// whose skipped waits are for timers its log had already moved past).
    pub skipped_ns: i64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "waits={} skips={} skipped_ns={}",
            self.waits, self.skips, self.skipped_ns
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_comes_from_its_name() {
        assert_eq!(Mode::from_env(Some("record")), Mode::Record);
        assert_eq!(Mode::from_env(Some("replay")), Mode::Replay);
        assert_eq!(Mode::from_env(Some("1")), Mode::Off);
        assert_eq!(Mode::from_env(None), Mode::Off);
    }

    #[test]
    fn only_tcg_vcpu_threads_are_vcpus() {
        assert!(is_vcpu_thread(b"ALL CPUs/TCG"));
        assert!(is_vcpu_thread(b"CPU 0/TCG"));
        assert!(is_vcpu_thread(b"CPU 12/TCG"));
        assert!(!is_vcpu_thread(b"qemu-system-x86"));
        assert!(!is_vcpu_thread(b"worker"));
        assert!(!is_vcpu_thread(b"CPU 0/KVM"));
    }

    #[test]
    fn only_a_timer_wait_while_the_vcpu_waits_is_skipped() {
        let p = Pacer::new();
        p.vcpu_waits();
        assert_eq!(
            p.skip_poll_ns(Some(1_000), || 1),
            None,
            "off: every call passes through"
        );
        p.set_mode(Mode::Replay);
        assert_eq!(
            p.skip_poll_ns(Some(1_000), || 1),
            Some(1_000),
            "no longer than asked"
        );
        assert_eq!(
            p.skip_poll_ns(Some(1_000_000), || 1),
            Some(GRACE_NS),
            "a grace first"
        );
        p.skipped(1_000_000);
        assert_eq!(
            p.skip_poll_ns(Some(1_000_000), || 1),
            Some(0),
            "then no wait"
        );
        assert_eq!(
            p.skip_poll_ns(None, || 1),
            None,
            "no timeout: waits for a descriptor"
        );
        assert_eq!(
            p.skip_poll_ns(Some(0), || 1),
            None,
            "a poll that does not wait"
        );
        p.vcpu_runs();
        assert_eq!(
            p.skip_poll_ns(Some(1_000), || 1),
            None,
            "a running vCPU: the loop sleeps as usual"
        );
    }

    #[test]
    fn a_recording_moves_its_clock_on_by_each_skipped_wait_and_a_replay_does_not() {
        let rec = Pacer::new();
        rec.set_mode(Mode::Record);
        rec.vcpu_waits();
        rec.skipped(4_000_000);
        rec.skipped(1_000_000_000);
        assert_eq!(rec.monotonic_offset_ns(), 1_004_000_000);
        assert_eq!(rec.report().skipped_ns, 0, "counted when the vCPU runs");
        rec.vcpu_runs();
        assert_eq!(
            rec.report(),
            Report {
                waits: 1,
                skips: 2,
                skipped_ns: 1_004_000_000
            }
        );
        assert_eq!(
            rec.report().to_string(),
            "waits=1 skips=2 skipped_ns=1004000000\n"
        );

        let replay = Pacer::new();
        replay.set_mode(Mode::Replay);
        replay.vcpu_waits();
        replay.skipped(4_000_000);
        assert_eq!(replay.monotonic_offset_ns(), 0);
        assert_eq!(replay.report().skips, 1);

        let paused = Pacer::new();
        paused.set_mode(Mode::Record);
        paused.vcpu_waits();
        paused.skipped(1_000_000_000);
        assert_eq!(paused.monotonic_offset_ns(), 1_000_000_000);
        assert_eq!(
            paused.report().skipped_ns,
            0,
            "a wait that does not end is no idle time"
        );
    }

    #[test]
    fn a_recordings_guest_clock_runs_at_most_idle_rate_times_as_fast_beyond_a_burst() {
        let p = Pacer::new();
        p.set_mode(Mode::Record);
        p.vcpu_waits();
        let second = 1_000_000_000;
        // The burst: ten one-second waits skipped without waiting (after the first's grace).
        assert_eq!(p.skip_poll_ns(Some(second), || 1), Some(GRACE_NS));
        p.skipped(second);
        for _ in 1..10 {
            assert_eq!(p.skip_poll_ns(Some(second), || 1), Some(0));
            p.skipped(second);
        }
        // Then a second of the guest's costs a millisecond of the host's.
        assert_eq!(p.skip_poll_ns(Some(second), || 1), Some(second / IDLE_RATE));
        p.skipped(second);
        // Time the host spent (here 4 ms) earns the guest IDLE_RATE times as much.
        let later = 1 + 4 * 1_000_000;
        assert_eq!(p.skip_poll_ns(Some(second), || later), Some(0));
        p.skipped(second);
        assert_eq!(p.monotonic_offset_ns(), 12 * second);

        let replay = Pacer::new();
        replay.set_mode(Mode::Replay);
        replay.vcpu_waits();
        replay.skipped(second);
        for _ in 0..20 {
            assert_eq!(
                replay.skip_poll_ns(Some(second), || unreachable!("a replay reads no clock")),
                Some(0),
                "no limit"
            );
            replay.skipped(second);
        }
    }

    #[test]
    fn a_vcpu_stopped_for_long_slows_the_loop_down_until_it_runs_again() {
        let minute = 60_000_000_000;
        for mode in [Mode::Replay, Mode::Record] {
            let p = Pacer::new();
            p.set_mode(mode);
            p.vcpu_waits();
            for _ in 0..SKIPS_PER_WAIT {
                assert!(p.skip_poll_ns(Some(1_000), || 1).is_some());
                p.skipped(1_000);
            }
            // Past the cap: a recording sleeps as QEMU does; a replay, whose timers last as
            // long as the recorded guest idled, polls a millisecond at most.
            let past = p.skip_poll_ns(Some(minute), || 1);
            match mode {
                Mode::Replay => assert_eq!(past, Some(SLOW_POLL_NS)),
                _ => assert_eq!(past, None),
            }
            p.vcpu_runs();
            p.vcpu_waits();
            assert!(
                p.skip_poll_ns(Some(1_000), || 1).is_some(),
                "a new wait skips again"
            );
        }
    }
}

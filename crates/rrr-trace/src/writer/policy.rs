//! The policy: which of the call model's events are written. The window (the part of the
//! replay written), the thread filter and the depth limit. A call the policy leaves out still
//! runs on its track's shadow stack (marked hidden there), so the calls written nest as they ran.

use std::collections::HashSet;

use crate::focus::Threads;
use crate::options::TraceOptions;
use crate::record::{ThreadIdent, TrackKey};
use crate::window::Window;

/// Where the records being written are, relative to the [`Window`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Before,
    In,
    After,
}

/// The window opens or closes: every call open then begins or ends at this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The window opens at this time.
    Open(u64),
    /// The window closes at this time.
    Close(u64),
}

/// The window, the thread filter and the depth limit, and where the replay is in them.
pub(crate) struct Policy {
    window: Window,
    phase: Phase,
    threads: Threads,
    /// The processes kept by a `Threads::Comm` filter.
    kept_pids: HashSet<i32>,
    /// Per track (by index): whether its thread passes the thread filter.
    shown: Vec<bool>,
    /// Per CPU: whether the thread running there is written (its interrupts are).
    cpu_shown: Vec<bool>,
    /// Kernel calls deeper than this are not written.
    max_depth: Option<u32>,
    /// A thread filter or a depth limit is set.
    focused: bool,
}

impl Policy {
    /// Everything is written.
    pub fn new() -> Policy {
        Policy {
            window: Window::ALL,
            phase: Phase::In,
            threads: Threads::All,
            kept_pids: HashSet::new(),
            shown: Vec::new(),
            cpu_shown: Vec::new(),
            max_depth: None,
            focused: false,
        }
    }

    /// The policy `options` ask for: their window, threads and depth.
    pub fn from_options(options: &TraceOptions) -> Policy {
        let mut policy = Policy::new();
        policy.set_window(options.window);
        policy.set_focus(options.threads.clone(), options.max_depth);
        policy
    }

    /// Only the calls of `threads` (and the interrupts taken while they run), and of the
    /// kernel no deeper than `max_depth` calls below its entry.
    pub fn set_focus(&mut self, threads: Threads, max_depth: Option<u32>) {
        self.focused = threads != Threads::All || max_depth.is_some();
        self.threads = threads;
        self.max_depth = max_depth;
    }

    /// Only the part of the replay in `window`.
    pub fn set_window(&mut self, window: Window) {
        self.window = window;
        self.phase = if window.from > 0 {
            Phase::Before
        } else {
            Phase::In
        };
    }

    /// The depth limit.
    pub fn max_depth(&self) -> Option<u32> {
        self.max_depth
    }

    /// Whether records are being written (the replay is in the window).
    #[inline(always)]
    pub fn writing(&self) -> bool {
        self.phase == Phase::In
    }

    /// Whether something at `ts` is in the written part.
    pub fn writes_at(&self, ts: u64) -> bool {
        self.writing() && ts >= self.window.from && ts <= self.window.to
    }

    /// A record at `ts` (the trace's clock at `now`): whether the window opens or closes
    /// before it.
    #[inline(always)]
    pub fn turn(&mut self, ts: u64, now: u64) -> Option<Turn> {
        if self.phase == Phase::In && ts <= self.window.to {
            return None;
        }
        self.turn_slow(ts, now)
    }

    #[inline(never)]
    fn turn_slow(&mut self, ts: u64, now: u64) -> Option<Turn> {
        match self.phase {
            Phase::Before if ts >= self.window.from && ts <= self.window.to => {
                self.phase = Phase::In;
                Some(Turn::Open(self.window.from.max(now)))
            }
            Phase::In => {
                self.phase = Phase::After;
                Some(Turn::Close(self.window.to.max(now)))
            }
            _ => None,
        }
    }

    /// Whether a new call on track `i` (`key`; a user-space call if `user`, with
    /// `kernel_depth` kernel calls open below it) is left out: its thread is filtered out,
    /// or it is a kernel call deeper than the depth limit.
    #[inline(always)]
    pub fn hides(
        &self,
        i: usize,
        key: TrackKey,
        user: bool,
        kernel_depth: impl FnOnce() -> usize,
    ) -> bool {
        if !self.focused {
            return false;
        }
        let too_deep = |max: u32| !user && kernel_depth() > max as usize;
        !self.track_shown(i, key) || self.max_depth.is_some_and(too_deep)
    }

    /// Whether track `i`'s calls pass the thread filter (an interrupt's, if the thread it
    /// interrupted does).
    fn track_shown(&self, i: usize, key: TrackKey) -> bool {
        match key {
            TrackKey::Thread(_) => self.shown(i),
            TrackKey::Irq(cpu) => self.threads == Threads::All || self.cpu_shown(cpu),
        }
    }

    /// Whether a switch from track `from` to track `to` is written.
    pub fn shows_switch(&self, from: usize, to: usize) -> bool {
        !self.focused || (self.shown(from) && self.shown(to))
    }

    /// Whether track `i`'s thread passes the thread filter.
    fn shown(&self, i: usize) -> bool {
        self.shown
            .get(i)
            .copied()
            .unwrap_or(self.threads == Threads::All)
    }

    /// Whether the thread running on `cpu` is written.
    fn cpu_shown(&self, cpu: u32) -> bool {
        self.cpu_shown.get(cpu as usize).copied().unwrap_or(false)
    }

    /// Thread `ident` runs on track `i`.
    pub fn thread(&mut self, i: usize, ident: &ThreadIdent) {
        let shown = match &self.threads {
            Threads::All => return,
            Threads::Comm(name) => {
                if ident.comm_str() == *name {
                    self.kept_pids.insert(ident.pid);
                }
                self.kept_pids.contains(&ident.pid)
            }
            Threads::Pids(pids) => pids.contains(&ident.pid) || pids.contains(&ident.tid),
        };
        if self.shown.len() <= i {
            self.shown.resize(i + 1, false);
        }
        self.shown[i] = shown;
    }

    /// Track `to` (by index, if it has one) runs on `cpu` from now on.
    pub fn running(&mut self, cpu: u32, to: Option<usize>) {
        if self.threads == Threads::All {
            return;
        }
        let shown = to.is_some_and(|i| self.shown(i));
        let cpu = cpu as usize;
        if self.cpu_shown.len() <= cpu {
            self.cpu_shown.resize(cpu + 1, false);
        }
        self.cpu_shown[cpu] = shown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ident;

    /// The turns a policy with `window` takes over records at `times`.
    fn turns(window: &str, times: &[u64]) -> Vec<(u64, Option<Turn>, bool)> {
        let mut p = Policy::from_options(&TraceOptions {
            window: window.parse().unwrap(),
            ..TraceOptions::default()
        });
        let mut now = 0;
        times
            .iter()
            .map(|&ts| {
                let t = p.turn(ts, now);
                now = ts;
                (ts, t, p.writing())
            })
            .collect()
    }

    #[test]
    fn the_window_opens_and_closes_once() {
        let got = turns("100..200", &[50, 99, 100, 150, 200, 201, 300]);
        let want = [
            (50, None, false),
            (99, None, false),
            (100, Some(Turn::Open(100)), true),
            (150, None, true),
            (200, None, true),
            (201, Some(Turn::Close(200)), false),
            (300, None, false),
        ];
        assert_eq!(got, want);
        // A window entered by a record after its start opens at the clock, not before it.
        let got = turns("100..200", &[50, 120]);
        assert_eq!(got[1].1, Some(Turn::Open(100)));
        let got = turns("100..200", &[150]);
        assert_eq!(got[0].1, Some(Turn::Open(100)));
    }

    #[test]
    fn a_window_from_zero_writes_from_the_start() {
        let got = turns("0..10", &[0, 10, 11]);
        assert_eq!(got[0], (0, None, true));
        assert_eq!(got[2], (11, Some(Turn::Close(10)), false));
    }

    #[test]
    fn the_thread_filter_hides_other_threads_and_their_interrupts() {
        let mut p = Policy::from_options(&TraceOptions {
            threads: Threads::Comm("repro".into()),
            ..TraceOptions::default()
        });
        let (a, b) = (TrackKey::Thread(0x1000), TrackKey::Thread(0x2000));
        p.thread(0, &ident(10, 10, "repro"));
        // A thread of the same process, under another name, is kept.
        p.thread(1, &ident(10, 11, "worker"));
        p.thread(2, &ident(20, 20, "sh"));
        assert!(!p.hides(0, a, false, || 0));
        assert!(!p.hides(1, b, false, || 0));
        assert!(p.hides(2, TrackKey::Thread(0x3000), true, || 0));
        // A track whose thread is not known yet is not shown.
        assert!(p.hides(3, TrackKey::Thread(0x4000), false, || 0));
        let irq = TrackKey::Irq(0);
        p.running(0, Some(2));
        assert!(p.hides(4, irq, false, || 0));
        p.running(0, Some(0));
        assert!(!p.hides(4, irq, false, || 0));
        assert!(p.shows_switch(0, 1));
        assert!(!p.shows_switch(0, 2));
    }

    #[test]
    fn the_depth_limit_hides_deep_kernel_calls_only() {
        let p = Policy::from_options(&TraceOptions {
            max_depth: Some(1),
            ..TraceOptions::default()
        });
        let k = TrackKey::Thread(0x1000);
        assert!(!p.hides(0, k, false, || 1));
        assert!(p.hides(0, k, false, || 2));
        assert!(!p.hides(0, k, true, || 5));
        // No focus: nothing is hidden, and the depth is not even asked.
        let p = Policy::new();
        assert!(!p.hides(0, k, false, || unreachable!()));
    }
}

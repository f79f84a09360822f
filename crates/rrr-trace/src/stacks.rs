//! Shadow call stacks: matching entries and returns by stack slot.
//!
//! A frame is keyed by its slot: the stack pointer at entry, where the return address lies.
//! A `ret` at stack pointer `sp` returns from the frame whose slot is `sp`, and every frame
//! with a lower slot (deeper) is unwound with it. A tail call enters a new function at the
//! same slot as the frame on top: it nests under it and the one `ret` closes both.
//! User and kernel frames live on the same thread's stack (user below kernel) and are only
//! compared with frames of their own mode.

/// One open call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Function id.
    pub func: u32,
    /// Stack pointer at entry.
    pub slot: u64,
    /// User-space frame.
    pub user: bool,
    /// Not written (its thread, or its depth, is filtered out).
    pub hidden: bool,
}

/// How a popped frame ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Its own `ret` (or a tail-called function's `ret` at the same slot).
    Returned,
    /// Unwound: a shallower frame returned or a new call reused its stack.
    Unwound,
}

/// A per-track shadow stack.
#[derive(Debug, Default)]
pub(crate) struct ShadowStack {
    frames: Vec<Frame>,
    /// Highest slot seen per mode (kernel, user): a `ret` above it, with nothing open, comes
    /// from a call made before tracing started.
    floor: [u64; 2],
    /// Number of such calls found so far (orders their reconstructed beginnings).
    pub unmatched: u64,
}

impl ShadowStack {
    /// Open frames, outermost first.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Pops kernel frames left open on top when execution is back in user space.
    fn pop_stale_kernel(&mut self, user: bool, end: &mut impl FnMut(Frame, Ending)) {
        if user {
            while let Some(&top) = self.frames.last().filter(|f| !f.user) {
                self.frames.pop();
                end(top, Ending::Unwound);
            }
        }
    }

    /// A call of `func` with its return address at `slot` (`hidden`: not written).
    #[inline(always)]
    pub fn enter(
        &mut self,
        func: u32,
        slot: u64,
        user: bool,
        hidden: bool,
        end: impl FnMut(Frame, Ending),
    ) {
        // The common case first: a call from the frame on top, of the same mode. Nothing
        // ends, and the floor is already at or above the top frame's slot.
        if let Some(top) = self.frames.last() {
            if top.user == user && top.slot >= slot {
                self.frames.push(Frame {
                    func,
                    slot,
                    user,
                    hidden,
                });
                return;
            }
        }
        self.enter_slow(func, slot, user, hidden, end);
    }

    /// [`ShadowStack::enter`] when frames end or the floor moves.
    #[inline(never)]
    fn enter_slow(
        &mut self,
        func: u32,
        slot: u64,
        user: bool,
        hidden: bool,
        mut end: impl FnMut(Frame, Ending),
    ) {
        self.pop_stale_kernel(user, &mut end);
        // Frames of this mode deeper than the new slot have returned unseen.
        while let Some(&top) = self
            .frames
            .last()
            .filter(|f| f.user == user && f.slot < slot)
        {
            self.frames.pop();
            end(top, Ending::Unwound);
        }
        let m = user as usize;
        self.floor[m] = self.floor[m].max(slot);
        self.frames.push(Frame {
            func,
            slot,
            user,
            hidden,
        });
    }

    /// How many kernel frames are open (the depth a new kernel call would have).
    pub fn kernel_depth(&self) -> usize {
        self.frames.iter().filter(|f| !f.user).count()
    }

    /// A `ret` with the return address at `sp`. Returns true if it closed a frame of its own.
    pub fn ret(&mut self, sp: u64, user: bool, mut end: impl FnMut(Frame, Ending)) -> bool {
        self.pop_stale_kernel(user, &mut end);
        let mut matched = false;
        while let Some(&top) = self
            .frames
            .last()
            .filter(|f| f.user == user && f.slot <= sp)
        {
            self.frames.pop();
            let how = if top.slot == sp {
                Ending::Returned
            } else {
                Ending::Unwound
            };
            matched |= how == Ending::Returned;
            end(top, how);
        }
        matched
    }

    /// The common `ret`: the one on top, of this mode, returns at `sp` and nothing else
    /// ends with it. Pops and returns that frame, as [`ShadowStack::ret`] would (one frame,
    /// `Returned`); `None` (and nothing changed) for every other case, which `ret` handles.
    #[inline(always)]
    pub fn ret_top(&mut self, sp: u64, user: bool) -> Option<Frame> {
        let n = self.frames.len();
        let top = *self.frames.last()?;
        if top.user != user || top.slot != sp {
            return None;
        }
        if n >= 2 {
            let below = self.frames[n - 2];
            if below.user == user && below.slot <= sp {
                return None;
            }
        }
        self.frames.pop();
        Some(top)
    }

    /// For a `ret` that closed nothing: true if it returns from a call made before tracing
    /// began (its slot is above every frame this stack has seen in that mode).
    pub fn is_from_before_start(&mut self, sp: u64, user: bool) -> bool {
        let m = user as usize;
        let open_above = self.frames.iter().any(|f| f.user == user && f.slot > sp);
        if open_above || sp <= self.floor[m] {
            return false;
        }
        self.floor[m] = sp;
        self.unmatched += 1;
        true
    }

    /// Pops every frame, innermost first.
    pub fn drain(&mut self, mut end: impl FnMut(Frame)) {
        while let Some(f) = self.frames.pop() {
            end(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(s: &mut ShadowStack, sp: u64) -> Vec<(u32, Ending)> {
        let mut v = Vec::new();
        s.ret(sp, false, |f, e| v.push((f.func, e)));
        v
    }

    /// `ret_top` takes exactly the cases where `ret` closes the top frame alone, and leaves
    /// the stack as `ret` would.
    #[test]
    fn ret_top_agrees_with_ret() {
        /// A slot and whether it is user mode.
        type At = (u64, bool);
        let k = |slot| (slot, false);
        let u = |slot| (slot, true);
        // (frames on the stack, the ret, whether ret_top takes it)
        let cases: &[(&[At], At, bool)] = &[
            (&[k(1000), k(900)], k(900), true),
            (&[k(1000), k(1000)], k(1000), false), // a tail call: two frames end
            (&[k(1000), k(900), k(800)], k(1000), false), // unwinds deeper frames
            (&[k(1000)], k(700), false),           // untracked inner ret
            (&[k(1000)], k(1000), true),
            (&[u(0x7ff0), k(0xffff_3f00)], u(0x7ff0), false), // stale kernel frame on top
            (&[u(0x7ff0), u(0x7fe0)], u(0x7fe0), true),
            (&[k(0xffff_3f00), u(0x7fe0)], u(0x7fe0), true),
            (&[], k(1000), false),
        ];
        for (frames, (sp, user), fast) in cases {
            let build = || {
                let mut s = ShadowStack::default();
                for (i, &(slot, mode)) in frames.iter().enumerate() {
                    s.frames.push(Frame {
                        func: i as u32,
                        slot,
                        user: mode,
                        hidden: false,
                    });
                }
                s
            };
            let (mut a, mut b) = (build(), build());
            let mut slow = Vec::new();
            a.ret(*sp, *user, |f, e| slow.push((f, e)));
            let got = b.ret_top(*sp, *user);
            assert_eq!(got.is_some(), *fast, "{frames:?} ret at {sp:#x}");
            if let Some(f) = got {
                assert_eq!(slow, vec![(f, Ending::Returned)]);
                assert_eq!(a.frames, b.frames);
            } else {
                assert_eq!(b.frames.len(), frames.len(), "unchanged");
            }
        }
    }

    #[test]
    fn nested_calls_return_in_order() {
        let mut s = ShadowStack::default();
        s.enter(1, 1000, false, false, |_, _| panic!());
        s.enter(2, 900, false, false, |_, _| panic!());
        assert_eq!(ends(&mut s, 900), vec![(2, Ending::Returned)]);
        assert_eq!(ends(&mut s, 1000), vec![(1, Ending::Returned)]);
        assert!(s.frames().is_empty());
    }

    #[test]
    fn tail_call_closes_with_one_ret() {
        let mut s = ShadowStack::default();
        s.enter(1, 1000, false, false, |_, _| panic!());
        s.enter(2, 1000, false, false, |_, _| panic!());
        assert_eq!(
            ends(&mut s, 1000),
            vec![(2, Ending::Returned), (1, Ending::Returned)]
        );
    }

    #[test]
    fn ret_above_unwinds_deeper_frames() {
        let mut s = ShadowStack::default();
        s.enter(1, 1000, false, false, |_, _| panic!());
        s.enter(2, 900, false, false, |_, _| panic!());
        s.enter(3, 800, false, false, |_, _| panic!());
        assert_eq!(
            ends(&mut s, 1000),
            vec![
                (3, Ending::Unwound),
                (2, Ending::Unwound),
                (1, Ending::Returned)
            ]
        );
    }

    #[test]
    fn untracked_inner_ret_is_ignored() {
        let mut s = ShadowStack::default();
        s.enter(1, 1000, false, false, |_, _| panic!());
        assert_eq!(ends(&mut s, 700), vec![]);
        assert!(!s.is_from_before_start(700, false));
        assert_eq!(s.frames().len(), 1);
    }

    #[test]
    fn ret_from_before_start_is_recognised_once_per_level() {
        let mut s = ShadowStack::default();
        s.enter(1, 800, false, false, |_, _| panic!());
        assert_eq!(ends(&mut s, 800), vec![(1, Ending::Returned)]);
        assert!(s.is_from_before_start(900, false));
        assert!(!s.is_from_before_start(850, false));
        assert!(s.is_from_before_start(1000, false));
        assert_eq!(s.unmatched, 2);
    }

    #[test]
    fn user_frames_survive_kernel_frames_and_stale_kernel_frames_close() {
        let mut s = ShadowStack::default();
        s.enter(10, 0x7ff0, true, false, |_, _| panic!());
        s.enter(20, 0xffff_c900_0000_3f00, false, false, |_, _| panic!());
        let mut v = Vec::new();
        s.enter(11, 0x7fe0, true, false, |f, e| v.push((f.func, e)));
        assert_eq!(v, vec![(20, Ending::Unwound)]);
        let mut v = Vec::new();
        s.ret(0x7fe0, true, |f, e| v.push((f.func, e)));
        assert_eq!(v, vec![(11, Ending::Returned)]);
        assert_eq!(
            s.frames(),
            &[Frame {
                func: 10,
                slot: 0x7ff0,
                user: true,
                hidden: false,
            }]
        );
    }
}

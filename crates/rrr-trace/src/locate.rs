//! Finding, in a replay, the hooked execution a trace timestamp names, so that a debugger can
//! be taken there (`rrr replay --gdb --at TS`).
//!
//! PANDA stops its replay at an instruction count, which is the trace's clock. QEMU's replay
//! counts instructions too, but a TCG plugin cannot read that counter: rrr's QEMU plugin counts
//! whole blocks, also blocks a fault or an I/O access cut short, so its clock runs a little
//! ahead of QEMU's (about 200 instructions in 3.5 M). What both agree on is the order of
//! executions: the call the trace shows at `ts` is the n-th execution of its instruction, and
//! a gdb breakpoint there with an ignore count of n-1 stops exactly at it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::hooks::Hook;

/// The hooked execution a timestamp names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    /// Its trace timestamp: the first hooked execution at or after the one asked for.
    pub ts: u64,
    /// The instruction's address.
    pub pc: u64,
    /// How many times this instruction had executed as a call (or as a return), this time
    /// included.
    pub hit: u64,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ts={} pc={:#x} hit={}", self.ts, self.pc, self.hit)
    }
}

/// A [`Located`] that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("not a located execution (ts=N pc=0xADDR hit=N): {0:?}")]
pub struct BadLocated(String);

impl FromStr for Located {
    type Err = BadLocated;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadLocated(s.to_owned());
        let mut fields = s.split_whitespace().map(|f| f.split_once('='));
        let mut next = |key: &str| match fields.next() {
            Some(Some((k, v))) if k == key => Ok(v),
            _ => Err(bad()),
        };
        let ts = next("ts")?.parse().map_err(|_| bad())?;
        let pc = next("pc")?
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .ok_or_else(bad)?;
        let hit = next("hit")?.parse().map_err(|_| bad())?;
        Ok(Located { ts, pc, hit })
    }
}

/// Counts the executions of hooked instructions until the trace clock reaches `at`.
#[derive(Debug)]
pub struct Locator {
    at: u64,
    /// Executions so far, by instruction and by kind of hook (an instruction that is both a
    /// function's entry and a return runs both hooks each time it executes).
    hits: HashMap<(u64, bool), u64>,
    found: Option<Located>,
}

impl Locator {
    /// A locator for trace time `at`.
    pub fn new(at: u64) -> Self {
        Locator {
            at,
            hits: HashMap::new(),
            found: None,
        }
    }

    /// `hook` runs at `pc`, trace time `ts`. Returns where `at` is the first time it is
    /// reached; later hooks are not counted.
    pub fn observe(&mut self, hook: Hook, pc: u64, ts: u64) -> Option<Located> {
        if self.found.is_some() {
            return None;
        }
        let hit = self
            .hits
            .entry((pc, matches!(hook, Hook::Enter(_))))
            .or_default();
        *hit += 1;
        if ts < self.at {
            return None;
        }
        self.found = Some(Located { ts, pc, hit: *hit });
        self.found
    }

    /// Where `at` is, once it has been reached.
    pub fn found(&self) -> Option<Located> {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Returns;

    #[test]
    fn the_nth_execution_at_or_after_the_time_is_found_once() {
        let mut l = Locator::new(50);
        let (f, g) = (0xffff_ffff_8100_0000, 0xffff_ffff_8100_0100);
        for (i, ts) in [10, 20, 30].into_iter().enumerate() {
            assert_eq!(l.observe(Hook::Enter(1), f, ts), None, "{i}");
        }
        // The return at g is counted apart from the entries at f.
        assert_eq!(l.observe(Hook::Return(Returns::Rax), f, 40), None);
        assert_eq!(l.observe(Hook::Enter(2), g, 45), None);
        let at = Located {
            ts: 60,
            pc: f,
            hit: 4,
        };
        assert_eq!(l.observe(Hook::Enter(1), f, 60), Some(at));
        assert_eq!(l.observe(Hook::Enter(1), f, 70), None, "found once");
        assert_eq!(l.found(), Some(at));
    }

    #[test]
    fn returns_count_apart_from_entries_at_the_same_instruction() {
        let mut l = Locator::new(30);
        let pc = 0xffff_ffff_8100_0000;
        l.observe(Hook::Enter(1), pc, 10);
        l.observe(Hook::Return(Returns::Rax), pc, 10);
        l.observe(Hook::Enter(1), pc, 20);
        l.observe(Hook::Return(Returns::Rax), pc, 20);
        let found = l.observe(Hook::Return(Returns::Rax), pc, 30).unwrap();
        assert_eq!(found.hit, 3);
    }

    #[test]
    fn located_reads_back_what_it_writes() {
        let at = Located {
            ts: 3_442_000,
            pc: 0xffff_ffff_810d_7f8d,
            hit: 17,
        };
        let text = at.to_string();
        assert_eq!(text, "ts=3442000 pc=0xffffffff810d7f8d hit=17");
        assert_eq!(text.parse::<Located>().unwrap(), at);
        for bad in ["", "ts=1 pc=12 hit=1", "pc=0x1 ts=1 hit=1", "ts=1 pc=0x1"] {
            assert!(bad.parse::<Located>().is_err(), "{bad}");
        }
    }
}

//! How much of a replay a trace holds: a size budget that ui.perfetto.dev can open, explicit
//! windows (`--window`, `--last`, the latter from where a first pass saw the events), and
//! focus: threads, functions (`--only`, `--skip`), depth. The budget itself is kept by the
//! tracer, in one pass ([`rrr_trace::ring`]).

use std::path::Path;

use anyhow::Context;
use osi_profile::{flags, Profile, REPORTING_FUNCTIONS};
use rrr_trace::{Threads, Window};

/// The default size budget. ui.perfetto.dev runs the trace processor in WebAssembly, whose
/// heap stops at 4 GiB and in practice near 2 GiB; a loaded trace takes 2 to 4 times its file
/// size (a 556 MB trace took 2.8 GB in the native trace processor), so 512 MiB is the largest
/// budget an ordinary laptop's browser opens.
pub const DEFAULT_MAX_SIZE: u64 = 512 << 20;

/// Past this size a trace is over the browser's reach: `rrr serve --rpc` opens it with the
/// native trace processor instead.
pub const BROWSER_REACH: u64 = 1 << 30;

/// What a trace may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many bytes (0: no limit).
    pub max_size: u64,
    /// Only this part of the replay.
    pub window: Window,
    /// Only the last this many instructions of the recording.
    pub last: Option<u64>,
    /// Only these threads.
    pub threads: Threads,
    /// Only the kernel functions that match one of these (name globs, or source paths when
    /// they hold a `/`); none: all.
    pub only: Vec<String>,
    /// Not the kernel functions that match one of these.
    pub skip: Vec<String>,
    /// Only kernel calls this deep below the kernel's entry (0: the entry itself).
    pub max_depth: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_size: DEFAULT_MAX_SIZE,
            window: Window::ALL,
            last: None,
            threads: Threads::All,
            only: Vec::new(),
            skip: Vec::new(),
            max_depth: None,
        }
    }
}

impl Limits {
    /// Whether functions are filtered (`--only`, `--skip`).
    pub fn filters_functions(&self) -> bool {
        !self.only.is_empty() || !self.skip.is_empty()
    }

    /// Writes to `out` the profile at `profile` with the kernel functions that `--only` and
    /// `--skip` leave out denied (not hooked: their callees still show, under their callers).
    /// The stimulus's functions and the reporting functions are always kept.
    pub fn filter_profile(&self, profile: &Path, out: &Path) -> anyhow::Result<()> {
        let pattern = |p: &String| {
            glob::Pattern::new(p).with_context(|| format!("{p:?} is not a function pattern"))
        };
        let only = self
            .only
            .iter()
            .map(pattern)
            .collect::<Result<Vec<_>, _>>()?;
        let skip = self
            .skip
            .iter()
            .map(pattern)
            .collect::<Result<Vec<_>, _>>()?;
        let matches = |pats: &[glob::Pattern], raw: &[String], f: &osi_profile::Function| {
            pats.iter().zip(raw).any(|(pat, text)| {
                if text.contains('/') {
                    f.file
                        .as_deref()
                        .is_some_and(|file| file.contains(text.as_str()))
                } else {
                    pat.matches(&f.name)
                }
            })
        };
        let mut data = Profile::open(profile)?.to_data();
        for f in &mut data.functions {
            let base = f.name.split('.').next().unwrap_or_default();
            if f.flags & flags::USER != 0 || REPORTING_FUNCTIONS.contains(&base) {
                continue;
            }
            let kept = (only.is_empty() || matches(&only, &self.only, f))
                && !matches(&skip, &self.skip, f);
            if !kept {
                f.flags |= flags::DENIED;
            }
        }
        osi_profile::write(&data, out)?;
        Ok(())
    }
}

/// Where a first pass saw the events: (trace time, bytes, events) about every megabyte of
/// trace, the last one at the trace's end (the tracer's results; `--last` needs the end).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sizes(pub Vec<(u64, u64, u64)>);

impl Sizes {
    /// The whole pass: (last trace time, bytes, events).
    pub fn total(&self) -> (u64, u64, u64) {
        self.0.last().copied().unwrap_or_default()
    }

    /// The window of the last `last` instructions of `within`, which this pass traced;
    /// `None` when that is all of it.
    pub fn last(&self, within: Window, last: u64) -> Option<Window> {
        let (end, _, _) = self.total();
        let from = within.from.max(end.saturating_sub(last));
        (from > within.from).then_some(Window {
            from,
            to: within.to,
        })
    }
}

/// Parses `--threads`: `stimulus` (the name rrr's disk gives it), `all`, or pids.
pub fn parse_threads(s: &str) -> Result<Threads, String> {
    match s {
        "all" => Ok(Threads::All),
        "stimulus" => Ok(Threads::Comm(crate::rootfs::STIMULUS_NAME.to_owned())),
        pids => pids
            .split(',')
            .map(|p| p.trim().parse::<i32>())
            .collect::<Result<Vec<_>, _>>()
            .map(Threads::Pids)
            .map_err(|_| format!("{s:?}: stimulus, all, or pids (123,456)")),
    }
}

/// Parses a size: bytes, or with a binary suffix (`512M`, `2G`, `64K`); `0` is no limit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| {
        format!("not a size: {s:?} (bytes, or with K, M or G: 512M, 2G; 0: no limit)")
    })?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s} is too big"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("big").is_err());
        assert!(parse_size("").is_err());
    }

    fn sizes() -> Sizes {
        // 10 MB over trace times 0..1000, evenly.
        Sizes((1..=10).map(|i| (i * 100, i << 20, i * 1000)).collect())
    }

    #[test]
    fn the_last_instructions_are_a_window_at_the_end() {
        let s = sizes();
        assert_eq!(
            s.last(Window::ALL, 250),
            Some(Window {
                from: 750,
                to: u64::MAX
            })
        );
        assert_eq!(s.last(Window::ALL, 5000), None);
        let within = Window {
            from: 800,
            to: 1000,
        };
        assert_eq!(s.last(within, 250), None);
        assert_eq!(s.total(), (1000, 10 << 20, 10000));
    }
}

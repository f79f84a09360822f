//! The writer: shadow stacks, decoding and the trace's tracks and threads, on its own
//! thread, written through the Perfetto encoding in [`crate::perfetto`]. Output is flushed
//! in whole packets, so a killed process leaves a file Perfetto reads up to the last flush.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use osi_profile::{ClassRef, Profile};

use crate::crash::CrashReport;
use crate::decode::{encode_args, encode_return, words_for, Kind, Plan, PlanParam};
use crate::focus::Threads;
use crate::prefetch::prefetch;
use crate::record::{Access, Args, ArgsRef, Batch, Record, ThreadIdent, TrackKey};
use crate::ring::{Budget, Cut, Head, Ring};
use crate::stacks::{Ending, Frame, ShadowStack};
use crate::watch::{At, Call, Watcher, Who};
pub use crate::window::Window;
use rrr_perfetto::encode::Enc;
use rrr_perfetto::fields::{BEGIN, END, E_CATEGORY_IIDS, E_FLOW, E_FLOW_END, INSTANT};
use rrr_perfetto::{Sequence, IID_USER};

/// Why the trace could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The output failed.
    #[error("writing the trace: {0} (is the disk full?)")]
    Io(#[from] std::io::Error),
}

/// What a finished trace holds: the plugin's results, which rrr reads from the file
/// [`TraceSummary::save`] writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceSummary {
    /// Slice begins, ends and instants written.
    pub events: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Records dropped under back-pressure (0 unless the pipeline was told to drop).
    pub dropped: u64,
    /// Thread and IRQ tracks.
    pub tracks: u64,
    /// When the kernel started reporting the crash the trace marks (see
    /// [`TraceWriter::mark_crash`]), if it did.
    pub crash_at: Option<u64>,
    /// Where the events are: (trace time, bytes written, events written) about every
    /// megabyte of output, and at the end (not part of the summary's text).
    pub sizes: Vec<(u64, u64, u64)>,
    /// What a size budget cut, if it cut anything (see [`TraceWriter::set_budget`]).
    pub cut: Option<Cut>,
}

impl TraceSummary {
    /// Writes the summary to `path` as JSON (atomically: a reader never sees half of it).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads what [`TraceSummary::save`] wrote.
    pub fn load(path: &Path) -> std::io::Result<TraceSummary> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }
}

/// The crash to mark, and where it starts.
struct CrashMark {
    report: CrashReport,
    /// The reporting functions' ids, sorted.
    reporters: Vec<u32>,
    marked: bool,
}

struct Track {
    uuid: u64,
    /// Its key.
    key: TrackKey,
    /// Its descriptor has been written (done before its first event).
    described: bool,
    stack: ShadowStack,
    ident: Option<ThreadIdent>,
    pending_flow: Option<u64>,
    /// Its thread passes the thread filter.
    shown: bool,
}

/// Streams records into a Perfetto trace.
pub struct TraceWriter<W: Write> {
    out: W,
    /// The packets, encoded.
    seq: Sequence,
    profile: Arc<Profile>,
    /// Tracks, indexed through `index`; a cache of the last lookup makes the common case
    /// (consecutive events on one track) a compare.
    tracks: Vec<Track>,
    index: HashMap<TrackKey, usize>,
    last: Option<(TrackKey, usize)>,
    /// Processes by pid: the process track's uuid, its name, and its main thread's track (a
    /// pid reused by another process gets a process track of its own).
    processes: HashMap<i32, (u64, [u8; 16], TrackKey)>,
    next_uuid: u64,
    /// Per function, once used: its name and annotation names are interned, and how to
    /// decode its arguments is resolved, so the hot path does not consult the profile.
    plans: Vec<Plan>,
    plan_params: Vec<PlanParam>,
    /// Where the part of the trace being written starts: the first event, the window's start,
    /// or the budget's current segment's. A call made before tracing began is drawn from
    /// there when it returns: a window's or a kept segment's never start at the trace's time 0.
    part_start: u64,
    next_flow: u64,
    /// Frames a return ends, kept to reuse its allocation (a fresh vector per return was
    /// 2% of the writer benchmark in malloc and free).
    ended: Vec<(Frame, Ending)>,
    crash: Option<CrashMark>,
    /// The part of the replay written; outside it only the shadow stacks and thread
    /// identities are kept.
    window: Window,
    /// Where the window is: before it, in it, after it.
    phase: Phase,
    /// (trace time, bytes written, events written) about every megabyte of output: where
    /// the events are, for a window that fits a size budget.
    sizes: Vec<(u64, u64, u64)>,
    /// Which threads are written.
    threads: Threads,
    /// The processes kept by a `Threads::Comm` filter.
    kept_pids: HashSet<i32>,
    /// Per CPU: whether the thread running there is written (its interrupts are).
    cpu_shown: Vec<bool>,
    /// Kernel calls deeper than this are not written.
    max_depth: Option<u32>,
    /// A thread filter or a depth limit is set.
    focused: bool,
    /// The memory watch, if any, and its track's uuid once made.
    watch: Option<Watcher>,
    watch_track: Option<u64>,
    /// The watch track has been described in the current segment.
    watch_described: bool,
    /// The size budget, and its segments once the first flush made them.
    budget: Option<Budget>,
    ring: Option<Ring>,
    /// Processes described in the current segment (with a budget).
    described_pids: HashSet<i32>,
    summary: TraceSummary,
}

/// Where the records being written are, relative to the [`Window`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Before,
    In,
    After,
}

impl<W: Write> TraceWriter<W> {
    /// A writer emitting to `out`, decoding with `profile`.
    pub fn new(out: W, profile: Arc<Profile>) -> Self {
        let n = profile.len();
        TraceWriter {
            out,
            seq: Sequence::new(),
            profile,
            tracks: Vec::new(),
            index: HashMap::new(),
            last: None,
            processes: HashMap::new(),
            next_uuid: 1,
            plans: vec![Plan::NONE; n],
            plan_params: Vec::new(),
            part_start: 0,
            next_flow: 1,
            ended: Vec::new(),
            crash: None,
            window: Window::ALL,
            phase: Phase::In,
            sizes: Vec::new(),
            threads: Threads::All,
            kept_pids: HashSet::new(),
            cpu_shown: Vec::new(),
            max_depth: None,
            focused: false,
            watch: None,
            watch_track: None,
            watch_described: false,
            budget: None,
            ring: None,
            described_pids: HashSet::new(),
            summary: TraceSummary::default(),
        }
    }

    /// Writes only the calls of `threads` (and the interrupts taken while they run), and of
    /// the kernel no deeper than `max_depth` calls below its entry (0: the entry itself, such
    /// as `do_syscall_64`). Calls not written still run on the shadow stacks, so those
    /// written nest as they ran. Must be set before the first record.
    pub fn set_focus(&mut self, threads: Threads, max_depth: Option<u32>) {
        self.focused = threads != Threads::All || max_depth.is_some();
        self.threads = threads;
        self.max_depth = max_depth;
    }

    /// Writes only the part of the replay in `window`: a call open when it starts is a slice
    /// that starts there (with its name, on its thread, at its depth; its arguments are not
    /// kept), one open when it ends ends there. Must be set before the first record.
    pub fn set_window(&mut self, window: Window) {
        self.window = window;
        self.phase = if window.from > 0 {
            Phase::Before
        } else {
            Phase::In
        };
    }

    /// Writes a trace of at most `budget.bytes` that keeps the end of the replay, in one
    /// pass: the output goes to segments (see [`crate::ring`]), the oldest dropped while
    /// the rest are over the budget; the first kept one starts with a slice for every call
    /// open then (its arguments were not kept). A crash marked is always kept, over the
    /// budget if need be. The trace is written to the output when it is finished (until
    /// then it is in `budget.parts`). Must be set before the first record.
    pub fn set_budget(&mut self, budget: Budget) {
        self.seq.keep_interned();
        self.budget = Some(budget);
    }

    /// Marks `report` in the trace at the first call of a reporting function
    /// ([`osi_profile::REPORTING_FUNCTIONS`], those in the profile): an instant named after
    /// the report on the thread that made the call and on a top-level `crash` track, with
    /// the report's text, the reporting function, and whether the calls open then are the
    /// report's call trace.
    pub fn mark_crash(&mut self, report: CrashReport) {
        let mut reporters: Vec<u32> = self
            .profile
            .functions()
            .filter(|f| {
                let base = f.name().split('.').next().unwrap_or_default();
                osi_profile::REPORTING_FUNCTIONS.contains(&base)
            })
            .map(|f| f.id())
            .collect();
        reporters.sort_unstable();
        self.crash = Some(CrashMark {
            report,
            reporters,
            marked: false,
        });
    }

    /// Watches memory: every access the engine reports ([`Record::Access`]), and every
    /// allocation and free of the object holding it, goes to the watch file with its thread
    /// and call stack, whatever the window or focus; those in the written part are also
    /// instants on their thread and on a `watch` track.
    pub(crate) fn set_watch(&mut self, watcher: Watcher) {
        self.watch = Some(watcher);
    }

    /// Writes every record of a batch.
    pub fn write_batch(&mut self, batch: &Batch) -> Result<(), WriterError> {
        if batch.dropped_before > 0 {
            self.summary.dropped += batch.dropped_before;
        }
        if let Some(budget) = self.budget.take() {
            self.ring = Some(Ring::create(&budget)?);
        }
        let records = &batch.records;
        for (i, r) in records.iter().enumerate() {
            self.prefetch_plans(records, i);
            self.record(r, batch);
        }
        if self.seq.full() {
            self.flush()?;
            let at = (self.seq.last_ts(), self.summary.bytes, self.summary.events);
            self.sizes.push(at);
        }
        let buffered = self.seq.buf.len() as u64;
        if self.phase == Phase::In && self.ring.as_ref().is_some_and(|r| r.due(buffered)) {
            self.next_segment()?;
        }
        Ok(())
    }

    /// Starts the budget's next segment (see [`TraceWriter::set_budget`]) here.
    #[inline(never)]
    fn next_segment(&mut self) -> Result<(), WriterError> {
        let ts = self.seq.last_ts();
        // Every call open now is interned before the cut: the segments after it then need
        // no name from a head that may be dropped.
        let open: Vec<u32> = (0..self.tracks.len())
            .flat_map(|i| self.written_calls(i))
            .collect();
        for func in open {
            if !self.plans[func as usize].ready {
                self.intern_function(func);
            }
        }
        self.flush()?;
        let head = self.head(ts);
        self.part_start = ts;
        for t in &mut self.tracks {
            t.described = false;
            // A flow whose start may be dropped is not drawn.
            t.pending_flow = None;
        }
        self.described_pids.clear();
        self.watch_described = false;
        let events = self.summary.events;
        if let Some(ring) = self.ring.as_mut() {
            ring.next(ts, head, events, self.seq.interned())?;
        }
        Ok(())
    }

    /// The functions of the calls open on track `i` that are written, outermost first.
    fn written_calls(&self, i: usize) -> Vec<u32> {
        let frames = self.tracks[i].stack.frames().iter();
        frames.filter(|f| !f.hidden).map(|f| f.func).collect()
    }

    /// The head of a segment starting at `ts` (see [`crate::ring`]): the sequence's start,
    /// the packet defaults, and every open call as a slice starting at `ts` on its track,
    /// described.
    fn head(&mut self, ts: u64) -> Head {
        let body = std::mem::take(&mut self.seq.buf);
        self.seq.start_packet(ts);
        let start = std::mem::take(&mut self.seq.buf);
        self.seq.set_defaults();
        let mut keys: Vec<(TrackKey, usize)> = self.index.iter().map(|(k, i)| (*k, *i)).collect();
        keys.sort();
        let mut pids = HashSet::new();
        let mut events = 0;
        for (key, i) in keys {
            let funcs = self.written_calls(i);
            if funcs.is_empty() {
                continue;
            }
            self.describe_in(i, key, &mut pids);
            let uuid = self.tracks[i].uuid;
            for func in funcs {
                let plan = self.plans[func as usize];
                self.seq.begin_at(ts, uuid, plan.iid as u64, plan.user);
                events += 1;
            }
        }
        let rest = std::mem::replace(&mut self.seq.buf, body);
        Head {
            start,
            rest,
            events,
        }
    }

    /// Asks the CPU for the decoding plans of the entries a little ahead of record `i`: the
    /// plan of the entry `2 * AHEAD` on, and the first and last parameters of the one `AHEAD`
    /// on (whose plan was asked for earlier; its parameters can span two cache lines). On a
    /// kernel-sized profile a function's plan and parameters are two cache misses, a third of
    /// the writer's time in the writer benchmark without this (the only hand-tuned memory
    /// access in the writer).
    #[inline]
    fn prefetch_plans(&self, records: &[Record], i: usize) {
        const AHEAD: usize = 8;
        // Addresses are computed without bounds checks: a prefetch of one past the end is
        // harmless, and these lookups ran for every record.
        if let Some(Record::Enter { func, .. }) = records.get(i + 2 * AHEAD) {
            prefetch(self.plans.as_ptr().wrapping_add(*func as usize));
        }
        if let Some(Record::Enter { func, .. }) = records.get(i + AHEAD) {
            if let Some(plan) = self.plans.get(*func as usize) {
                let first = self.plan_params.as_ptr().wrapping_add(plan.first as usize);
                prefetch(first);
                prefetch(first.wrapping_add(plan.len.saturating_sub(1) as usize));
            }
        }
    }

    /// Writes the buffered packets out.
    pub fn flush(&mut self) -> Result<(), WriterError> {
        self.summary.bytes += match self.ring.as_mut() {
            Some(ring) => self.seq.flush(ring)?,
            None => self.seq.flush(&mut self.out)?,
        };
        Ok(())
    }

    /// Closes every open call at the last timestamp, writes the stats, flushes.
    pub fn finish(mut self) -> Result<TraceSummary, WriterError> {
        if self.phase == Phase::In {
            let ts = self.seq.last_ts();
            self.end_all(ts);
        }
        if self.summary.dropped > 0 {
            tracing::warn!(
                dropped = self.summary.dropped,
                "events dropped under back-pressure"
            );
            eprintln!(
                "rrr: warning: {} events were dropped because the trace writer fell behind; \
                 the trace's stats show the loss (rerun without drop mode to keep everything)",
                self.summary.dropped
            );
            self.seq.packet_loss(self.summary.dropped);
        }
        self.flush()?;
        if let Some(ring) = self.ring.take() {
            let (bytes, events, cut) = ring.finish(self.summary.events, &mut self.out)?;
            self.summary.bytes = bytes;
            self.summary.events = events;
            self.summary.cut = cut;
        }
        if let Some(w) = self.watch.as_mut() {
            w.flush()?;
        }
        self.summary.tracks = self.index.len() as u64;
        let at = (self.seq.last_ts(), self.summary.bytes, self.summary.events);
        self.sizes.push(at);
        self.summary.sizes = std::mem::take(&mut self.sizes);
        Ok(self.summary)
    }

    /// Ends every open call at `ts` (the stacks are emptied).
    fn end_all(&mut self, ts: u64) {
        // In key order, so that the same records always give the same bytes.
        let mut keys: Vec<(TrackKey, usize)> = self.index.iter().map(|(k, i)| (*k, *i)).collect();
        keys.sort();
        for (_, i) in keys {
            let track = &mut self.tracks[i];
            let uuid = track.uuid;
            let mut n = 0;
            track.stack.drain(|f| n += usize::from(!f.hidden));
            for _ in 0..n {
                self.end_event(ts, uuid, None);
            }
        }
    }

    /// The window starts at `ts`: every call open now begins there, outermost first.
    #[inline(never)]
    fn open_window(&mut self, ts: u64) {
        self.phase = Phase::In;
        self.part_start = ts;
        let mut keys: Vec<(TrackKey, usize)> = self.index.iter().map(|(k, i)| (*k, *i)).collect();
        keys.sort();
        for (key, i) in keys {
            if self.tracks[i].stack.frames().iter().all(|f| f.hidden) {
                continue;
            }
            let uuid = self.event_track(key).uuid;
            let funcs = self.written_calls(i);
            for func in funcs {
                if !self.plans[func as usize].ready {
                    self.intern_function(func);
                }
                let plan = self.plans[func as usize];
                self.seq.begin_at(ts, uuid, plan.iid as u64, plan.user);
                self.summary.events += 1;
            }
        }
    }

    /// The window ends at `ts`: every call open now ends there; nothing is written after.
    #[inline(never)]
    fn close_window(&mut self, ts: u64) {
        self.end_all_open(ts);
        self.phase = Phase::After;
    }

    /// Ends every open call at `ts`, keeping the stacks (they run on, unwritten).
    fn end_all_open(&mut self, ts: u64) {
        let mut keys: Vec<(TrackKey, usize)> = self.index.iter().map(|(k, i)| (*k, *i)).collect();
        keys.sort();
        for (_, i) in keys {
            let uuid = self.tracks[i].uuid;
            let open = self.tracks[i].stack.frames().iter().filter(|f| !f.hidden);
            for _ in 0..open.count() {
                self.end_event(ts, uuid, None);
            }
        }
    }

    /// A record outside the window: the shadow stacks and thread identities follow it,
    /// nothing is written but track and process descriptors.
    #[inline(never)]
    fn record_unwritten(&mut self, ts: u64, r: &Record, words: &[u64]) {
        match *r {
            Record::Enter {
                track,
                sp,
                func,
                args,
                ..
            } => {
                let user = self.profile.function(func).is_some_and(|f| f.is_user());
                let i = self.track_index(track);
                self.watch_enter(ts, i, sp, func, args, words);
                let hidden = self.hidden(i, track, user);
                self.tracks[i]
                    .stack
                    .enter(func, sp, user, hidden, |_, _| {});
            }
            Record::Return {
                track, sp, value, ..
            } => {
                let user = !crate::guest::is_kernel_address(sp);
                let i = self.track_index(track);
                let mut returned = None;
                self.tracks[i].stack.ret(sp, user, |f, e| {
                    if e == Ending::Returned {
                        returned = Some(f);
                    }
                });
                if let Some(f) = returned {
                    self.watch_return(ts, i, f, value[0]);
                }
            }
            Record::Thread { track, ident, .. } => self.thread(ts, track, ident),
            Record::Switch { cpu, to, .. } => self.note_running(cpu, to),
            Record::Access { .. } => {}
        }
    }

    /// Whether a new call on track `i` (`key`) is not written: its thread is filtered out,
    /// or it is a kernel call deeper than the depth limit.
    #[inline(always)]
    fn hidden(&mut self, i: usize, key: TrackKey, user: bool) -> bool {
        if !self.focused {
            return false;
        }
        self.hidden_slow(i, key, user)
    }

    #[inline(never)]
    fn hidden_slow(&mut self, i: usize, key: TrackKey, user: bool) -> bool {
        let shown = match key {
            TrackKey::Thread(_) => self.tracks[i].shown,
            TrackKey::Irq(cpu) => self.threads == Threads::All || self.cpu_shown(cpu),
        };
        let too_deep = self
            .max_depth
            .is_some_and(|max| !user && self.tracks[i].stack.kernel_depth() > max as usize);
        !shown || too_deep
    }

    /// Whether the thread running on `cpu` is written.
    fn cpu_shown(&self, cpu: u32) -> bool {
        self.cpu_shown.get(cpu as usize).copied().unwrap_or(false)
    }

    /// Thread `to` runs on `cpu` from now on.
    fn note_running(&mut self, cpu: u32, to: TrackKey) {
        if self.threads == Threads::All {
            return;
        }
        let shown = self.index.get(&to).is_some_and(|&i| self.tracks[i].shown);
        let cpu = cpu as usize;
        if self.cpu_shown.len() <= cpu {
            self.cpu_shown.resize(cpu + 1, false);
        }
        self.cpu_shown[cpu] = shown;
    }

    /// What has been written so far.
    pub fn summary(&self) -> &TraceSummary {
        &self.summary
    }

    /// Writes the events of record `r`. Inlined into [`TraceWriter::write_batch`]'s loop: as
    /// a call (which the compiler chose once the Perfetto encoder became its own crate) the
    /// writer benchmark took 5% more instructions per event.
    #[inline(always)]
    fn record(&mut self, r: &Record, batch: &Batch) {
        if !self.seq.started() {
            self.part_start = r.ts();
            self.seq.start(r.ts());
        }
        // Instruction counts from several vCPUs may interleave slightly out of order; the
        // incremental clock only goes forward.
        let ts = r.ts().max(self.seq.last_ts());
        if let Record::Access { track, access, .. } = *r {
            return self.access(ts, track, &access);
        }
        if self.phase != Phase::In || ts > self.window.to {
            match self.phase {
                Phase::Before if ts >= self.window.from && ts <= self.window.to => {
                    self.open_window(self.window.from.max(self.seq.last_ts()))
                }
                Phase::In => self.close_window(self.window.to.max(self.seq.last_ts())),
                _ => {}
            }
            if self.phase != Phase::In {
                return self.record_unwritten(ts, r, &batch.words);
            }
        }
        match *r {
            Record::Enter {
                track,
                sp,
                func,
                args,
                ..
            } => self.enter(ts, track, sp, func, args, batch),
            Record::Return {
                track,
                sp,
                pc,
                value,
                ..
            } => self.ret(ts, track, sp, pc, value),
            Record::Thread { track, ident, .. } => self.thread(ts, track, ident),
            Record::Switch { cpu, from, to, .. } => {
                self.note_running(cpu, to);
                self.switch(ts, from, to)
            }
            Record::Access { .. } => {}
        }
    }

    fn track(&mut self, key: TrackKey) -> &mut Track {
        let i = self.track_index(key);
        &mut self.tracks[i]
    }

    /// The index of `key`'s track, created if new.
    #[inline(always)]
    fn track_index(&mut self, key: TrackKey) -> usize {
        match self.last {
            Some((k, i)) if k == key => i,
            _ => self.track_index_slow(key),
        }
    }

    #[inline(never)]
    fn track_index_slow(&mut self, key: TrackKey) -> usize {
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let uuid = self.new_uuid();
                self.tracks.push(Track {
                    uuid,
                    key,
                    described: false,
                    stack: ShadowStack::default(),
                    ident: None,
                    pending_flow: None,
                    shown: self.threads == Threads::All,
                });
                self.index.insert(key, self.tracks.len() - 1);
                self.tracks.len() - 1
            }
        };
        self.last = Some((key, i));
        i
    }

    /// The track for an event: described first if it is not yet (a thread whose task could
    /// not be read yet is named by its stack until it can).
    #[inline(always)]
    fn event_track(&mut self, key: TrackKey) -> &mut Track {
        let i = self.track_index(key);
        if !self.tracks[i].described {
            self.describe_unnamed(i, key);
        }
        &mut self.tracks[i]
    }

    #[inline(never)]
    fn describe_unnamed(&mut self, i: usize, key: TrackKey) {
        self.tracks[i].described = true;
        let mut pids = std::mem::take(&mut self.described_pids);
        self.describe_in(i, key, &mut pids);
        self.described_pids = pids;
    }

    /// Describes track `i` (`key`): by its thread, once known (and its process, unless in
    /// `pids`, then added), or by its stack.
    fn describe_in(&mut self, i: usize, key: TrackKey, pids: &mut HashSet<i32>) {
        let uuid = self.tracks[i].uuid;
        match self.tracks[i].ident {
            Some(ident) => {
                if let Some((puuid, name, _)) = self.processes.get(&ident.pid).copied() {
                    if pids.insert(ident.pid) {
                        let name = ThreadIdent {
                            comm: name,
                            ..ident
                        }
                        .comm_str();
                        self.seq.describe_process(puuid, ident.pid, name);
                    }
                }
                let comm = match key {
                    TrackKey::Thread(stack) if ident.tid < 0 => TrackKey::stack_name(stack),
                    _ => ident.comm_str(),
                };
                self.seq
                    .describe_track(uuid, comm, Some((ident.pid, ident.tid as i64)));
            }
            None => {
                let name = match key {
                    TrackKey::Irq(cpu) => format!("IRQ cpu{cpu}"),
                    TrackKey::Thread(stack) => TrackKey::stack_name(stack),
                };
                self.seq.describe_track(uuid, name, None);
            }
        }
    }

    fn new_uuid(&mut self) -> u64 {
        let u = self.next_uuid;
        self.next_uuid += 1;
        u
    }

    fn thread(&mut self, ts: u64, key: TrackKey, ident: ThreadIdent) {
        let comm = match key {
            TrackKey::Thread(stack) if ident.tid < 0 => TrackKey::stack_name(stack),
            _ => ident.comm_str(),
        };
        let known = self.processes.get(&ident.pid).copied();
        // A process track: new for a new process (a pid seen before, on another main thread,
        // is a reused pid), described again when its main thread is renamed (exec).
        if ident.pid == ident.tid && ident.pid >= 0 {
            let uuid = match known {
                Some((uuid, name, main)) if main == key => (name != ident.comm).then_some(uuid),
                _ => Some(self.new_uuid()),
            };
            if let Some(uuid) = uuid {
                self.processes.insert(ident.pid, (uuid, ident.comm, key));
                self.seq.describe_process(uuid, ident.pid, comm.clone());
                self.described_pids.insert(ident.pid);
            }
        }
        let reusable = match self.index.get(&key).map(|&i| &self.tracks[i]) {
            Some(t) => match t.ident {
                Some(old) => old.tid == ident.tid && old.pid == ident.pid,
                None => !t.described,
            },
            None => true,
        };
        if !reusable {
            // A new thread, a stack now owned by another task, or a track first seen before
            // its task could be read: close what is open there and start a thread track.
            let uuid = self.new_uuid();
            let old = self.track(key);
            let old_uuid = std::mem::replace(&mut old.uuid, uuid);
            old.described = false;
            let mut n = 0;
            old.stack.drain(|f| n += usize::from(!f.hidden));
            if self.phase == Phase::In {
                for _ in 0..n {
                    self.end_event(ts, old_uuid, None);
                }
            }
        }
        let shown = match &self.threads {
            Threads::All => true,
            Threads::Comm(name) => {
                if ident.comm_str() == *name {
                    self.kept_pids.insert(ident.pid);
                }
                self.kept_pids.contains(&ident.pid)
            }
            Threads::Pids(pids) => pids.contains(&ident.pid) || pids.contains(&ident.tid),
        };
        let track = self.track(key);
        track.ident = Some(ident);
        track.shown = shown;
        track.described = true;
        let uuid = track.uuid;
        // Same uuid and thread: a rename updates the name.
        self.seq
            .describe_track(uuid, comm, Some((ident.pid, ident.tid as i64)));
    }

    fn switch(&mut self, ts: u64, from: TrackKey, to: TrackKey) {
        if self.focused {
            let shown = |w: &mut Self, key| {
                let i = w.track_index(key);
                w.tracks[i].shown
            };
            if !shown(self, from) || !shown(self, to) {
                return;
            }
        }
        let flow = self.next_flow;
        self.next_flow += 1;
        let iid = self.seq.event_name("sched_out");
        let uuid = self.event_track(from).uuid;
        let (p, te) = self.seq.open_event(ts, uuid, INSTANT, Some(iid));
        let mut e = self.seq.enc();
        e.fixed64(E_FLOW, flow);
        e.close_pair(te, p);
        drop(e);
        self.summary.events += 1;
        self.track(to).pending_flow = Some(flow);
    }

    fn enter(&mut self, ts: u64, key: TrackKey, sp: u64, func: u32, args: ArgsRef, batch: &Batch) {
        let plan = match self.plans.get(func as usize) {
            Some(&plan) if plan.ready => plan,
            Some(_) => {
                self.intern_function(func);
                self.plans[func as usize]
            }
            None => return,
        };
        let i = self.track_index(key);
        self.watch_enter(ts, i, sp, func, args, &batch.words);
        if self.hidden(i, key, plan.user) {
            self.enter_hidden(ts, i, sp, func, plan.user);
            return self.check_crash(ts, key, func);
        }
        let track = self.event_track(key);
        let uuid = track.uuid;
        let flow = track.pending_flow.take();
        let mut closed = 0u32;
        track.stack.enter(func, sp, plan.user, false, |f, _| {
            closed += u32::from(!f.hidden)
        });
        for _ in 0..closed {
            self.end_event(ts, uuid, None);
        }
        let (p, te) = self.seq.open_event(ts, uuid, BEGIN, Some(plan.iid as u64));
        let TraceWriter {
            seq,
            plan_params,
            profile,
            ..
        } = self;
        let buf = &mut seq.buf;
        if plan.user {
            Enc::new(buf).uint(E_CATEGORY_IIDS, IID_USER);
        }
        let params = &plan_params[plan.first as usize..(plan.first + plan.len) as usize];
        encode_args(buf, profile, params, &args.load(&batch.words), &batch.arena);
        let mut e = Enc::new(buf);
        if let Some(flow) = flow {
            e.fixed64(E_FLOW_END, flow);
        }
        e.close_pair(te, p);
        drop(e);
        self.summary.events += 1;
        self.check_crash(ts, key, func);
    }

    /// Marks the crash if `func`, just entered on `key`'s track, starts its report.
    #[inline(always)]
    fn check_crash(&mut self, ts: u64, key: TrackKey, func: u32) {
        if let Some(c) = &self.crash {
            if !c.marked && c.reporters.binary_search(&func).is_ok() {
                self.mark_crash_at(ts, key, func);
            }
        }
    }

    /// The kernel started reporting the crash: `func` was just entered on `key`'s track.
    #[inline(never)]
    fn mark_crash_at(&mut self, ts: u64, key: TrackKey, func: u32) {
        let Some(mut crash) = self.crash.take() else {
            return;
        };
        crash.marked = true;
        let i = self.track_index(key);
        let uuid = self.tracks[i].uuid;
        let profile = &self.profile;
        let name = |id: u32| profile.function(id).map_or("", |f| f.name());
        let open: Vec<&str> = self.tracks[i]
            .stack
            .frames()
            .iter()
            .map(|f| name(f.func))
            .collect();
        let traced = |frame: &str| {
            profile
                .function_by_name(frame)
                .and_then(|id| profile.function(id))
                .is_some_and(|f| !f.is_denied())
        };
        let missing = crash.report.missing_frames(&open, traced);
        let stack = if crash.report.frames.is_empty() {
            "the report has no call trace to check".to_owned()
        } else if missing.is_empty() {
            "the calls open here are the report's call trace".to_owned()
        } else {
            format!(
                "differs from the report's call trace: not open here: {}",
                missing.join(", ")
            )
        };
        let reporter = name(func).to_owned();
        let args = [
            ("report", crash.report.text.as_str()),
            ("reported_by", reporter.as_str()),
            ("stack", stack.as_str()),
        ];
        self.seq.instant_at(ts, uuid, &crash.report.title, &args);
        let top = self.new_uuid();
        self.seq.describe_track(top, "crash".to_owned(), None);
        self.seq.instant_at(ts, top, &crash.report.title, &args);
        self.summary.events += 2;
        self.summary.crash_at = Some(ts);
        if let Some(ring) = self.ring.as_mut() {
            ring.pin();
        }
        self.crash = Some(crash);
    }

    /// A call that is not written enters on track `i`: it runs on the shadow stack (the
    /// written calls it unwinds end).
    #[inline(never)]
    fn enter_hidden(&mut self, ts: u64, i: usize, sp: u64, func: u32, user: bool) {
        let mut closed = 0u32;
        self.tracks[i]
            .stack
            .enter(func, sp, user, true, |f, _| closed += u32::from(!f.hidden));
        let uuid = self.tracks[i].uuid;
        for _ in 0..closed {
            self.end_event(ts, uuid, None);
        }
    }

    fn ret(&mut self, ts: u64, key: TrackKey, sp: u64, pc: u64, value: [u64; 2]) {
        let user = !crate::guest::is_kernel_address(sp);
        let track = self.event_track(key);
        let uuid = track.uuid;
        if let Some(frame) = track.stack.ret_top(sp, user) {
            if !frame.hidden {
                self.end_event_inline(ts, uuid, Some((frame.func, value)));
            }
            if self.watch.is_some() {
                let i = self.track_index(key);
                self.watch_return(ts, i, frame, value[0]);
            }
            return;
        }
        let mut ended = std::mem::take(&mut self.ended);
        let track = self.event_track(key);
        let matched = track.stack.ret(sp, user, |f, e| ended.push((f, e)));
        if self.watch.is_some() {
            if let Some(&(f, _)) = ended.iter().find(|(_, e)| *e == Ending::Returned) {
                let i = self.track_index(key);
                self.watch_return(ts, i, f, value[0]);
            }
        }
        for &(frame, how) in ended.iter().filter(|(f, _)| !f.hidden) {
            let v = (how == Ending::Returned).then_some((frame.func, value));
            self.end_event(ts, uuid, v);
        }
        ended.clear();
        self.ended = ended;
        if matched {
            return;
        }
        // A return from a call made before tracing began: reconstruct its slice from the
        // start of the part being written (each older one one unit earlier, so they nest).
        let Some(func) = self.profile.function_containing(pc) else {
            return;
        };
        let Some(f) = self.profile.function(func) else {
            return;
        };
        if f.is_denied() || f.is_user() != user {
            return;
        }
        // Its depth below the kernel's entry is not known: not with a depth limit.
        let i = self.track_index(key);
        if self.max_depth.is_some() || self.hidden(i, key, user) {
            return;
        }
        let part_start = self.part_start;
        let track = self.track(key);
        if !track.stack.is_from_before_start(sp, user) {
            return;
        }
        let begin_ts = part_start.saturating_sub(track.stack.unmatched - 1);
        if !self.plans[func as usize].ready {
            self.intern_function(func);
        }
        let iid = self.plans[func as usize].iid as u64;
        self.seq.begin_at(begin_ts, uuid, iid, user);
        self.summary.events += 1;
        self.end_event(ts, uuid, Some((func, value)));
    }

    /// A slice end, with the return value typed by `func`'s return class.
    fn end_event(&mut self, ts: u64, uuid: u64, ret: Option<(u32, [u64; 2])>) {
        self.end_event_inline(ts, uuid, ret);
    }

    /// [`TraceWriter::end_event`], inlined where most slices end (a `ret` of the top frame).
    #[inline(always)]
    fn end_event_inline(&mut self, ts: u64, uuid: u64, ret: Option<(u32, [u64; 2])>) {
        let (p, te) = self.seq.open_event(ts, uuid, END, None);
        let TraceWriter {
            seq,
            plans,
            profile,
            ..
        } = self;
        let mut e = seq.enc();
        if let Some((func, value)) = ret {
            if let Some(plan) = plans.get(func as usize) {
                encode_return(&mut e, profile, plan.ret, plan.ret_iid, value);
            }
        }
        e.close_pair(te, p);
        drop(e);
        self.summary.events += 1;
    }

    /// A call of `func` on track `i`, for the watch (an allocation asks its size, a free
    /// names its object).
    #[inline(always)]
    fn watch_enter(&mut self, ts: u64, i: usize, sp: u64, func: u32, args: ArgsRef, words: &[u64]) {
        if self.watch.as_ref().is_some_and(|w| w.cares(func)) {
            self.watch_enter_slow(ts, i, sp, func, args.load(words));
        }
    }

    #[inline(never)]
    fn watch_enter_slow(&mut self, ts: u64, i: usize, sp: u64, func: u32, args: Args) {
        let call = Call {
            track: i,
            slot: sp,
            func,
        };
        self.watch_event(ts, i, None, |w, at| w.on_enter(at, call, &args));
    }

    /// `frame` returned `value` on track `i`, for the watch (an allocation's pointer).
    fn watch_return(&mut self, ts: u64, i: usize, frame: Frame, value: u64) {
        if !self.watch.as_ref().is_some_and(|w| w.cares(frame.func)) {
            return;
        }
        let call = Call {
            track: i,
            slot: frame.slot,
            func: frame.func,
        };
        self.watch_event(ts, i, None, |w, at| w.on_return(at, call, value));
    }

    /// The watched memory was accessed on `key`'s track.
    #[inline(never)]
    fn access(&mut self, ts: u64, key: TrackKey, access: &Access) {
        let i = self.track_index(key);
        self.watch_event(ts, i, Some(access.cpu), |w, at| w.on_access(at, access));
    }

    /// Hands the watcher something that happened on track `i` (on `cpu`, if known), with the
    /// track's thread and open calls, and marks the event it makes.
    fn watch_event(
        &mut self,
        ts: u64,
        i: usize,
        cpu: Option<u32>,
        f: impl FnOnce(&mut Watcher, &At<'_>) -> Option<crate::watch::Event>,
    ) {
        let Some(w) = self.watch.as_mut() else { return };
        let track = &self.tracks[i];
        let stack: Vec<u32> = track.stack.frames().iter().map(|f| f.func).collect();
        let at = At {
            profile: &self.profile,
            ts,
            who: Who {
                ident: track.ident.as_ref(),
                cpu,
            },
            stack: &stack,
        };
        if let Some(e) = f(w, &at) {
            self.mark_watch(ts, i, &e);
        }
    }

    /// Marks a watch event in the written part of the trace: an instant on its thread's track
    /// (if written) and on the `watch` track.
    fn mark_watch(&mut self, ts: u64, i: usize, e: &crate::watch::Event) {
        if self.phase != Phase::In || ts < self.window.from || ts > self.window.to {
            return;
        }
        let Some(range) = self.watch.as_ref().map(|w| w.range()) else {
            return;
        };
        let name = format!("{} {}", e.kind.name(), e.size);
        let (addr, value, pc) = (
            format!("{:#x}", e.addr),
            format!("{:#x}", e.value),
            format!("{:#x}", e.pc),
        );
        let args = [
            ("addr", addr.as_str()),
            ("value", value.as_str()),
            ("pc", pc.as_str()),
        ];
        let key = self.tracks[i].key;
        let user = self.tracks[i].stack.frames().last().is_some_and(|f| f.user);
        if !self.hidden(i, key, user) {
            let uuid = self.event_track(key).uuid;
            self.seq.instant_at(ts, uuid, &name, &args);
            self.summary.events += 1;
        }
        let top = match self.watch_track {
            Some(uuid) => uuid,
            None => {
                let uuid = self.new_uuid();
                self.watch_track = Some(uuid);
                uuid
            }
        };
        if !self.watch_described {
            self.watch_described = true;
            self.seq.describe_track(top, format!("watch {range}"), None);
        }
        self.seq.instant_at(ts, top, &name, &args);
        self.summary.events += 1;
    }

    /// Writes a packet interning a function's name and parameter names, and records its
    /// decoding plan.
    fn intern_function(&mut self, func: u32) {
        let profile = Arc::clone(&self.profile);
        let Some(f) = profile.function(func) else {
            return;
        };
        let (iid, interned) = self.seq.open_interned(f.name());
        let first = self.plan_params.len() as u32;
        for p in f.params() {
            let name_iid = self.typed_name(p.name(), p.class());
            let kind = kind(p.class());
            self.plan_params.push(PlanParam {
                name_iid: name_iid as u32,
                kind,
                words: words_for(p.location()) as u8,
            });
        }
        let len = self.plan_params.len() as u32 - first;
        let ret = kind(f.ret_class());
        let ret_iid = self.typed_name("return", f.ret_class()) as u32;
        self.seq.close_interned(interned);
        self.plans[func as usize] = Plan {
            iid: iid as u32,
            first,
            len,
            ret,
            ret_iid,
            ready: true,
            user: f.is_user(),
        };
    }

    /// The iid of a value's annotation name. A pointer to a struct carries its type in its
    /// name, `name (struct foo *)`: 4 bytes less per value than a one-entry dict named by the
    /// type, which was 9% of a real trace's bytes.
    fn typed_name(&mut self, name: &str, class: ClassRef<'_>) -> u64 {
        match class {
            ClassRef::StructPtr(ty) => self.seq.annotation_name(&format!("{name} ({ty} *)")),
            _ => self.seq.annotation_name(name),
        }
    }
}

/// The decoding of a class.
fn kind(class: ClassRef<'_>) -> Kind {
    match class {
        ClassRef::Void | ClassRef::Float(_) | ClassRef::Unknown => Kind::Skip,
        ClassRef::Signed(w) => Kind::Signed(w),
        ClassRef::Unsigned(w) => Kind::Unsigned(w),
        ClassRef::Bool => Kind::Bool,
        ClassRef::Enum(t) => Kind::Enum(t),
        ClassRef::CharPtr => Kind::Str,
        ClassRef::StructPtr(_) | ClassRef::Pointer => Kind::Pointer,
        ClassRef::StructByValue(size) => Kind::Words(size.min(16) as u8),
    }
}

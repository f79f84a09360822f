//! The writer, on its own thread, in stages. The [call model](model) follows the records:
//! tracks, shadow call stacks, threads and processes. The [policy](policy) decides what is
//! written (the window, the thread filter, the depth limit). The [sink](sink) encodes what is
//! written as Perfetto packets, to the output or a size budget's segments. Subscribers (the
//! [crash marker](crash_mark), the [watch](crate::watch)) follow the model's calls, returns
//! and accesses, and ask for marks in the trace. Output is flushed in whole packets, so a
//! killed process leaves a file Perfetto reads up to the last flush.

mod call_notes;
mod crash_mark;
mod model;
mod policy;
mod sink;
pub(crate) mod subscriber;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use osi_profile::Profile;

use crate::crash::CrashReport;
use crate::focus::Threads;
use crate::options::TraceOptions;
use crate::record::{Access, ArgsRef, Batch, Record, ThreadIdent, TrackKey};
use crate::ring::{Budget, Cut};
use crate::stacks::{Ending, Frame};
use crate::watch::Watcher;
pub use crate::window::Window;
use call_notes::CallNotes;
pub use call_notes::NotedCall;
use crash_mark::CrashMarker;
use model::CallModel;
use policy::{Policy, Turn};
use rrr_perfetto::Flow;
use sink::Sink;
use subscriber::{At, Call, FlowStep, Happened, Mark, Subscriber, Who};

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
    /// The calls noted (see [`TraceOptions::note_calls`]).
    #[serde(default)]
    pub calls: Vec<NotedCall>,
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

/// Streams records into a Perfetto trace.
pub struct TraceWriter<W: Write> {
    model: CallModel,
    policy: Policy,
    sink: Sink<W>,
    profile: Arc<Profile>,
    subscribers: Vec<Box<dyn Subscriber>>,
    /// Per function: whether a subscriber cares about its calls (empty while there is none).
    interest: Vec<bool>,
    /// Frames a return ends, kept to reuse its allocation (a fresh vector per return was
    /// 2% of the writer benchmark in malloc and free).
    ended: Vec<(Frame, Ending)>,
    /// Records dropped under back-pressure.
    dropped: u64,
    /// When the crash was marked.
    crash_at: Option<u64>,
    /// The syscall entry (`do_syscall_64`) and how many argument words its parameters take:
    /// the observer adds the call site in the program after them.
    syscall_entry: Option<(u32, usize)>,
    /// The flows subscribers draw: their keys (see [`TraceWriter::notify`]) to the trace's
    /// flow ids.
    flows: HashMap<u64, u64>,
}

impl<W: Write> TraceWriter<W> {
    /// A writer emitting to `out`, decoding with `profile`.
    pub fn new(out: W, profile: Arc<Profile>) -> Self {
        let syscall_entry = profile
            .function_by_name(crate::observer::SYSCALL)
            .and_then(|id| profile.function(id))
            .map(|f| {
                let words = f.params().map(|p| crate::decode::words_for(p.location()));
                (f.id(), words.sum())
            });
        TraceWriter {
            syscall_entry,
            model: CallModel::new(),
            policy: Policy::new(),
            sink: Sink::new(out, Arc::clone(&profile)),
            profile,
            subscribers: Vec::new(),
            interest: Vec::new(),
            ended: Vec::new(),
            dropped: 0,
            crash_at: None,
            flows: HashMap::new(),
        }
    }

    /// A writer emitting to `out` as `options` say, each stage reading the options it uses:
    /// the policy its window, threads and depth, the sink its budget, the call notes their
    /// functions, the watch its memory. The crash marker marks `crash` (see
    /// [`TraceWriter::mark_crash`]); the watch writes its events to `accesses`: every access
    /// the engine reports ([`Record::Access`]), and every allocation and free of the object
    /// holding it, with its thread and call stack, whatever the window or focus (those in the
    /// written part are also instants on their thread and on a `watch` track).
    pub fn with_options(
        out: W,
        profile: Arc<Profile>,
        options: &TraceOptions,
        crash: Option<CrashReport>,
        accesses: Option<Box<dyn Write + Send>>,
    ) -> Self {
        let mut writer = TraceWriter::new(out, profile);
        writer.policy = Policy::from_options(options);
        writer.sink.set_options(options);
        if let Some(report) = crash {
            writer.mark_crash(report);
        }
        if let Some(notes) = CallNotes::from_options(options, &writer.profile) {
            writer.subscribe(Box::new(notes));
        }
        if let Some(watcher) =
            accesses.and_then(|out| Watcher::from_options(options, &writer.profile, out))
        {
            writer.subscribe(Box::new(watcher));
        }
        writer
    }

    /// Writes only the calls of `threads` (and the interrupts taken while they run), and of
    /// the kernel no deeper than `max_depth` calls below its entry (0: the entry itself, such
    /// as `do_syscall_64`). Calls not written still run on the shadow stacks, so those
    /// written nest as they ran. Must be set before the first record.
    pub fn set_focus(&mut self, threads: Threads, max_depth: Option<u32>) {
        self.policy.set_focus(threads, max_depth);
    }

    /// Writes only the part of the replay in `window`: a call open when it starts is a slice
    /// that starts there (with its name, on its thread, at its depth; its arguments are not
    /// kept), one open when it ends ends there. Must be set before the first record.
    pub fn set_window(&mut self, window: Window) {
        self.policy.set_window(window);
    }

    /// Writes a trace of at most `budget.bytes` that keeps the end of the replay, in one
    /// pass: the output goes to segments (see [`crate::ring`]), the oldest dropped while
    /// the rest are over the budget; the first kept one starts with a slice for every call
    /// open then (its arguments were not kept). A crash marked is always kept, over the
    /// budget if need be. The trace is written to the output when it is finished (until
    /// then it is in `budget.parts`). Must be set before the first record.
    pub fn set_budget(&mut self, budget: Budget) {
        self.sink.set_budget(budget);
    }

    /// Marks `report` in the trace at the first call of a reporting function
    /// ([`osi_profile::REPORTING_FUNCTIONS`], those in the profile): an instant named after
    /// the report on the thread that made the call and on a top-level `crash` track, with
    /// the report's text, the reporting function, and whether the calls open then are the
    /// report's call trace. Must be set before the first record.
    pub fn mark_crash(&mut self, report: CrashReport) {
        let marker = CrashMarker::new(report, &self.profile);
        self.subscribe(Box::new(marker));
    }

    /// Adds a subscriber to the call model's events.
    fn subscribe(&mut self, s: Box<dyn Subscriber>) {
        let n = self.profile.len();
        self.interest.resize(n, false);
        for (func, cares) in self.interest.iter_mut().enumerate() {
            *cares |= s.cares(func as u32);
        }
        self.subscribers.push(s);
    }

    /// Writes every record of a batch.
    pub fn write_batch(&mut self, batch: &Batch) -> Result<(), WriterError> {
        self.dropped += batch.dropped_before;
        self.sink.start_batch()?;
        let records = &batch.records;
        for (i, r) in records.iter().enumerate() {
            self.sink.prefetch_plans(records, i);
            self.record(r, batch);
        }
        if self.sink.end_batch(self.policy.writing())? {
            self.sink.next_segment(&self.model)?;
        }
        Ok(())
    }

    /// Writes the buffered packets out.
    pub fn flush(&mut self) -> Result<(), WriterError> {
        Ok(self.sink.flush()?)
    }

    /// Slice begins, ends and instants written so far.
    pub fn events(&self) -> u64 {
        self.sink.events
    }

    /// Closes every open call at the last timestamp, writes the stats, flushes.
    pub fn finish(mut self) -> Result<TraceSummary, WriterError> {
        if self.policy.writing() {
            let ts = self.sink.now();
            self.end_all_open(ts);
        }
        if self.dropped > 0 {
            tracing::warn!(dropped = self.dropped, "events dropped under back-pressure");
            eprintln!(
                "rrr: warning: {} events were dropped because the trace writer fell behind; \
                 the trace's stats show the loss (rerun without drop mode to keep everything)",
                self.dropped
            );
        }
        let written = self.sink.finish(self.dropped)?;
        let mut summary = TraceSummary {
            events: written.events,
            bytes: written.bytes,
            dropped: self.dropped,
            tracks: self.model.len() as u64,
            crash_at: self.crash_at,
            sizes: written.sizes,
            cut: written.cut,
            calls: Vec::new(),
        };
        for s in &mut self.subscribers {
            s.finish()?;
            s.report(&mut summary);
        }
        Ok(summary)
    }

    /// Writes the events of record `r`. Inlined into [`TraceWriter::write_batch`]'s loop: as
    /// a call (which the compiler chose once the Perfetto encoder became its own crate) the
    /// writer benchmark took 5% more instructions per event.
    #[inline(always)]
    fn record(&mut self, r: &Record, batch: &Batch) {
        let ts = self.sink.clock(r.ts());
        if let Record::Access { track, access, .. } = *r {
            return self.access(ts, track, &access);
        }
        if let Some(turn) = self.policy.turn(ts, self.sink.now()) {
            self.turn(turn);
        }
        if !self.policy.writing() {
            return self.record_unwritten(ts, r, batch);
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
            Record::Switch { cpu, from, to, .. } => self.switch(ts, cpu, from, to),
            Record::Access { .. } => {}
        }
    }

    /// The window opens (every call open then begins there, outermost first) or closes
    /// (every call open then ends there; nothing is written after).
    #[inline(never)]
    fn turn(&mut self, turn: Turn) {
        match turn {
            Turn::Open(ts) => {
                self.sink.start_part(ts);
                for i in self.model.in_key_order() {
                    let funcs = self.model.tracks[i].written_calls();
                    if funcs.is_empty() {
                        continue;
                    }
                    let uuid = self.sink.event_track(&self.model, i);
                    for func in funcs {
                        self.sink.begin_unknown(ts, uuid, func);
                    }
                }
            }
            Turn::Close(ts) => self.end_all_open(ts),
        }
    }

    /// Ends every open call at `ts`, keeping the stacks (they run on, unwritten).
    fn end_all_open(&mut self, ts: u64) {
        for i in self.model.in_key_order() {
            let track = &self.model.tracks[i];
            self.sink.end_n(ts, track.uuid, track.written_open());
        }
    }

    /// A record outside the window: the shadow stacks and thread identities follow it,
    /// nothing is written but track and process descriptors.
    #[inline(never)]
    fn record_unwritten(&mut self, ts: u64, r: &Record, batch: &Batch) {
        match *r {
            Record::Enter {
                track,
                sp,
                func,
                args,
                ..
            } => {
                let user = self.profile.function(func).is_some_and(|f| f.is_user());
                let i = self.model.track_index(track);
                if self.syscall_entry.is_some_and(|(entry, _)| entry == func) {
                    self.syscall(i, args, batch);
                }
                if self.cares(func) {
                    self.notify_call(ts, i, sp, func, args, batch);
                }
                let hidden = self.hides(i, track, user);
                let stack = &mut self.model.tracks[i].stack;
                stack.enter(func, sp, user, hidden, |_, _| {});
            }
            Record::Return {
                track, sp, value, ..
            } => {
                let user = !crate::guest::is_kernel_address(sp);
                let i = self.model.track_index(track);
                let mut returned = None;
                self.model.tracks[i].stack.ret(sp, user, |f, e| {
                    if e == Ending::Returned {
                        returned = Some(f);
                    }
                });
                if let Some(f) = returned.filter(|f| self.cares(f.func)) {
                    self.notify_return(ts, i, f, value[0]);
                }
            }
            Record::Thread { track, ident, .. } => self.thread(ts, track, ident),
            Record::Switch { cpu, to, .. } => {
                let to = self.model.find(to);
                self.policy.running(cpu, to);
                if let Some(i) = to {
                    self.model.tracks[i].cpu = Some(cpu);
                }
            }
            Record::Access { .. } => {}
        }
    }

    /// A syscall enters the kernel on track `i`: where in the program it was made, if the
    /// observer could read it (after its parameters' words).
    #[cold]
    fn syscall(&mut self, i: usize, args: ArgsRef, batch: &Batch) {
        let Some((_, params)) = self.syscall_entry else {
            return;
        };
        let a = args.slice(&batch.words);
        // `params` is below the words' count (at most MAX_ARG_WORDS) when there is a site.
        let site = a
            .words
            .get(params)
            .filter(|_| a.missing & (1 << params) == 0);
        self.model.tracks[i].syscall_site = site.copied().filter(|&s| s != 0);
    }

    /// Whether a subscriber cares about calls of `func`.
    #[inline(always)]
    fn cares(&self, func: u32) -> bool {
        self.interest.get(func as usize).copied().unwrap_or(false)
    }

    /// Whether the policy leaves out a new call on track `i` (`key`).
    #[inline(always)]
    fn hides(&self, i: usize, key: TrackKey, user: bool) -> bool {
        let stack = &self.model.tracks[i].stack;
        self.policy.hides(i, key, user, || stack.kernel_depth())
    }

    fn enter(&mut self, ts: u64, key: TrackKey, sp: u64, func: u32, args: ArgsRef, batch: &Batch) {
        let Some(plan) = self.sink.plan(func) else {
            return;
        };
        let i = self.model.track_index(key);
        if self.syscall_entry.is_some_and(|(entry, _)| entry == func) {
            self.syscall(i, args, batch);
        }
        let inside = self
            .cares(func)
            .then(|| self.notify_call(ts, i, sp, func, args, batch));
        if self.hides(i, key, plan.user) {
            self.enter_hidden(ts, i, sp, func, plan.user);
        } else {
            let uuid = self.sink.event_track(&self.model, i);
            let mut closed = 0;
            let stack = &mut self.model.tracks[i].stack;
            stack.enter(func, sp, plan.user, false, |f, _| {
                closed += usize::from(!f.hidden)
            });
            self.sink.end_n(ts, uuid, closed);
            let args = args.slice(&batch.words);
            self.sink.begin(ts, i, uuid, plan, args, &batch.arena);
        }
        if let Some(marks) = inside {
            self.write_marks(ts, i, marks);
        }
    }

    /// A call that is not written enters on track `i`: it runs on the shadow stack (the
    /// written calls it unwinds end).
    #[inline(never)]
    fn enter_hidden(&mut self, ts: u64, i: usize, sp: u64, func: u32, user: bool) {
        let mut closed = 0;
        let track = &mut self.model.tracks[i];
        track.stack.enter(func, sp, user, true, |f, _| {
            closed += usize::from(!f.hidden)
        });
        self.sink.end_n(ts, track.uuid, closed);
    }

    fn ret(&mut self, ts: u64, key: TrackKey, sp: u64, pc: u64, value: [u64; 2]) {
        let user = !crate::guest::is_kernel_address(sp);
        let i = self.model.track_index(key);
        let uuid = self.sink.event_track(&self.model, i);
        if let Some(frame) = self.model.tracks[i].stack.ret_top(sp, user) {
            if !frame.hidden {
                self.sink.end_inline(ts, uuid, Some((frame.func, value)));
            }
            if self.cares(frame.func) {
                self.notify_return(ts, i, frame, value[0]);
            }
            return;
        }
        let mut ended = std::mem::take(&mut self.ended);
        let stack = &mut self.model.tracks[i].stack;
        let matched = stack.ret(sp, user, |f, e| ended.push((f, e)));
        if let Some(&(f, _)) = ended.iter().find(|(_, e)| *e == Ending::Returned) {
            if self.cares(f.func) {
                self.notify_return(ts, i, f, value[0]);
            }
        }
        for &(frame, how) in ended.iter().filter(|(f, _)| !f.hidden) {
            let v = (how == Ending::Returned).then_some((frame.func, value));
            self.sink.end(ts, uuid, v);
        }
        ended.clear();
        self.ended = ended;
        if !matched {
            self.unmatched_return(ts, i, sp, pc, user, value);
        }
    }

    /// A return that closed no call of its own: from a call made before tracing began, its
    /// slice is drawn from the start of the part being written (each older one one unit
    /// earlier, so they nest), never from the trace's time 0.
    #[inline(never)]
    fn unmatched_return(
        &mut self,
        ts: u64,
        i: usize,
        sp: u64,
        pc: u64,
        user: bool,
        value: [u64; 2],
    ) {
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
        let key = self.model.tracks[i].key;
        if self.policy.max_depth().is_some() || self.hides(i, key, user) {
            return;
        }
        let part_start = self.sink.part_start();
        let track = &mut self.model.tracks[i];
        if !track.stack.is_from_before_start(sp, user) {
            return;
        }
        let begin_ts = part_start.saturating_sub(track.stack.unmatched - 1);
        let uuid = track.uuid;
        self.sink.begin_unknown(begin_ts, uuid, func);
        self.sink.end(ts, uuid, Some((func, value)));
    }

    fn thread(&mut self, ts: u64, key: TrackKey, ident: ThreadIdent) {
        let described = self.model.find(key).is_some_and(|i| self.sink.described(i));
        let change = self.model.thread(key, ident, described);
        if let Some(uuid) = change.process {
            self.sink
                .describe_process(uuid, ident.pid, self.model.tracks[change.track].name());
        }
        if let Some((old, open)) = change.replaced {
            self.sink.forget_track(change.track);
            if self.policy.writing() {
                self.sink.end_n(ts, old, open);
            }
        }
        self.policy.thread(change.track, &ident);
        self.sink.describe_thread(&self.model, change.track);
    }

    fn switch(&mut self, ts: u64, cpu: u32, from: TrackKey, to: TrackKey) {
        self.policy.running(cpu, self.model.find(to));
        let from = self.model.track_index(from);
        let to = self.model.track_index(to);
        self.model.tracks[to].cpu = Some(cpu);
        if self.policy.shows_switch(from, to) {
            let uuid = self.sink.event_track(&self.model, from);
            self.sink.switch(ts, uuid, to);
        }
    }

    /// A call of `func` on track `i`, for the subscribers; writes the marks they ask for
    /// at the call and returns those that go inside it.
    #[inline(never)]
    fn notify_call(
        &mut self,
        ts: u64,
        i: usize,
        sp: u64,
        func: u32,
        args: ArgsRef,
        batch: &Batch,
    ) -> Vec<Mark> {
        let call = Call {
            track: i,
            slot: sp,
            func,
        };
        let args = args.load(&batch.words);
        let marks = self.notify(ts, i, None, &Happened::Call(call, &args));
        let (inside, at): (Vec<Mark>, Vec<Mark>) = marks.into_iter().partition(|m| m.inside_call);
        self.write_marks(ts, i, at);
        inside
    }

    /// `frame` returned `value` on track `i`, for the subscribers.
    #[inline(never)]
    fn notify_return(&mut self, ts: u64, i: usize, frame: Frame, value: u64) {
        let call = Call {
            track: i,
            slot: frame.slot,
            func: frame.func,
        };
        let marks = self.notify(ts, i, None, &Happened::Return(call, value));
        self.write_marks(ts, i, marks);
    }

    /// The watched memory was accessed on `key`'s track.
    #[inline(never)]
    fn access(&mut self, ts: u64, key: TrackKey, access: &Access) {
        let i = self.model.track_index(key);
        let marks = self.notify(ts, i, Some(access.cpu), &Happened::Access(access));
        self.write_marks(ts, i, marks);
    }

    /// Hands the subscribers something that happened on track `i` (on `cpu`, if known, else
    /// the CPU the track runs on, if known), with the track's thread and open calls; returns
    /// the marks they ask for, their flows' keys made the writer's own (the subscriber's index
    /// in the top bits).
    fn notify(
        &mut self,
        ts: u64,
        i: usize,
        cpu: Option<u32>,
        happened: &Happened<'_>,
    ) -> Vec<Mark> {
        let track = &self.model.tracks[i];
        let stack: Vec<u32> = track.stack.frames().iter().map(|f| f.func).collect();
        let at = At {
            profile: &self.profile,
            ts,
            who: Who {
                ident: track.ident.as_ref(),
                cpu: cpu.or(track.cpu),
            },
            stack: &stack,
            written: self.policy.writes_at(ts),
            syscall_site: track.syscall_site,
        };
        let subscribers = self.subscribers.iter_mut().enumerate();
        let own = |i: usize, key: u64| (i as u64) << 48 | key;
        subscribers
            .filter_map(|(i, s)| {
                let mut mark = s.on(happened, &at)?;
                mark.flow = mark.flow.map(|step| match step {
                    FlowStep::Start(k) => FlowStep::Start(own(i, k)),
                    FlowStep::Step(k) => FlowStep::Step(own(i, k)),
                    FlowStep::End(k) => FlowStep::End(own(i, k)),
                });
                Some(mark)
            })
            .collect()
    }

    /// The trace's flow for a subscriber's flow step (a step of a flow whose start was not
    /// written has none).
    fn flow(&mut self, step: FlowStep) -> Option<Flow> {
        match step {
            FlowStep::Start(key) => {
                let id = self.sink.new_flow();
                self.flows.insert(key, id);
                Some(Flow::Through(id))
            }
            FlowStep::Step(key) => self.flows.get(&key).map(|&id| Flow::Through(id)),
            FlowStep::End(key) => self.flows.remove(&key).map(Flow::End),
        }
    }

    /// Writes subscribers' marks.
    #[inline(never)]
    fn write_marks(&mut self, ts: u64, i: usize, marks: Vec<Mark>) {
        for mark in marks {
            self.write_mark(ts, i, mark);
        }
    }

    /// Writes a subscriber's mark, if in the written part: an instant on its thread's track
    /// (if the thread is written, or the mark goes there anyway) and on the mark's own track.
    fn write_mark(&mut self, ts: u64, i: usize, mark: Mark) {
        if !self.policy.writes_at(ts) {
            return;
        }
        let args: Vec<(&str, &str)> = mark.args.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut flow = mark.flow.and_then(|step| self.flow(step));
        let track = &self.model.tracks[i];
        let user = track.stack.frames().last().is_some_and(|f| f.user);
        if mark.always_on_thread || !self.hides(i, track.key, user) {
            let uuid = self.sink.event_track(&self.model, i);
            // The flow goes through the thread's mark: its arrows go from thread to thread.
            self.sink.instant(ts, uuid, &mark.name, &args, flow.take());
        }
        let model = &mut self.model;
        let top = self.sink.own_track(mark.track, || model.new_uuid());
        self.sink.instant(ts, top, &mark.name, &args, flow);
        if mark.crash {
            self.crash_at = Some(ts);
            self.sink.pin();
        }
        if mark.keep_part {
            self.sink.keep_part();
        }
    }
}

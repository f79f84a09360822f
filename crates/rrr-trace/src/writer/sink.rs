//! The sink: the events the policy keeps, encoded as Perfetto packets (through
//! [`rrr_perfetto`]) and written to the output, or to a size budget's segments (see
//! [`crate::ring`]). It interns each function's name and resolves how to decode its arguments
//! the first time the function is written, and describes each track before its first event.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use osi_profile::{ClassRef, Profile};
use rrr_perfetto::encode::Enc;
use rrr_perfetto::fields::{BEGIN, END, E_CATEGORY_IIDS, E_FLOW, E_FLOW_END, INSTANT};
use rrr_perfetto::{Flow, Sequence, IID_USER};

use super::model::CallModel;
use crate::decode::{encode_args, encode_return, words_for, Kind, Plan, PlanParam};
use crate::options::TraceOptions;
use crate::prefetch::prefetch;
use crate::record::{ArgsSlice, Record};
use crate::ring::{Budget, Cut, Head, Ring};

/// A track of the trace's own (the crash's, the watch's): its id, and whether it has been
/// described in the current part.
struct OwnTrack {
    name: String,
    uuid: u64,
    described: bool,
}

/// The Perfetto encoder and the output it writes to.
pub(crate) struct Sink<W: Write> {
    out: W,
    /// The packets, encoded.
    seq: Sequence,
    profile: Arc<Profile>,
    /// Per function, once used: its name and annotation names are interned, and how to
    /// decode its arguments is resolved, so the hot path does not consult the profile.
    plans: Vec<Plan>,
    plan_params: Vec<PlanParam>,
    /// Where the part of the trace being written starts: the first event, the window's start,
    /// or the budget's current segment's.
    part_start: u64,
    /// Per track (by index): its descriptor is written in the current part.
    described: Vec<bool>,
    /// Processes described in the current part.
    described_pids: HashSet<i32>,
    /// Per track (by index): the flow a switch to it started, ended by its next call.
    flows: Vec<Option<u64>>,
    next_flow: u64,
    /// The crash's and the watch's tracks, once made.
    own: Vec<OwnTrack>,
    /// The size budget, and its segments once the first flush made them.
    budget: Option<Budget>,
    ring: Option<Ring>,
    /// Events written.
    pub events: u64,
    /// Bytes written.
    pub bytes: u64,
    /// (trace time, bytes written, events written) about every megabyte of output: where
    /// the events are, for a window that fits a size budget.
    sizes: Vec<(u64, u64, u64)>,
}

/// What the sink wrote, once finished.
pub(crate) struct Written {
    pub events: u64,
    pub bytes: u64,
    pub sizes: Vec<(u64, u64, u64)>,
    pub cut: Option<Cut>,
}

impl<W: Write> Sink<W> {
    /// A sink writing to `out`, decoding with `profile`.
    pub fn new(out: W, profile: Arc<Profile>) -> Self {
        let n = profile.len();
        Sink {
            out,
            seq: Sequence::new(),
            profile,
            plans: vec![Plan::NONE; n],
            plan_params: Vec::new(),
            part_start: 0,
            described: Vec::new(),
            described_pids: HashSet::new(),
            flows: Vec::new(),
            next_flow: 1,
            own: Vec::new(),
            budget: None,
            ring: None,
            events: 0,
            bytes: 0,
            sizes: Vec::new(),
        }
    }

    /// Takes the sink's options: their budget, if any.
    pub fn set_options(&mut self, options: &TraceOptions) {
        if let Some(budget) = &options.budget {
            self.set_budget(budget.clone());
        }
    }

    /// Writes at most `budget.bytes`, keeping the end (see [`crate::ring`]).
    pub fn set_budget(&mut self, budget: Budget) {
        self.seq.keep_interned();
        self.budget = Some(budget);
    }

    /// Makes the budget's segments, before the first batch's records.
    pub fn start_batch(&mut self) -> std::io::Result<()> {
        if let Some(budget) = self.budget.take() {
            self.ring = Some(Ring::create(&budget)?);
        }
        Ok(())
    }

    /// The trace's clock at a record of time `ts` (the sequence starts at the first):
    /// instruction counts from several vCPUs may interleave slightly out of order, and the
    /// incremental clock only goes forward.
    #[inline(always)]
    pub fn clock(&mut self, ts: u64) -> u64 {
        if !self.seq.started() {
            self.part_start = ts;
            self.seq.start(ts);
        }
        ts.max(self.seq.last_ts())
    }

    /// The latest event's time.
    #[inline(always)]
    pub fn now(&self) -> u64 {
        self.seq.last_ts()
    }

    /// Where the part being written starts.
    pub fn part_start(&self) -> u64 {
        self.part_start
    }

    /// A part of the trace (the window) starts at `ts`.
    pub fn start_part(&mut self, ts: u64) {
        self.part_start = ts;
    }

    /// The decoding plan of `func`, resolved (and its names interned) the first time;
    /// `None` for a function not in the profile.
    #[inline(always)]
    pub fn plan(&mut self, func: u32) -> Option<Plan> {
        match self.plans.get(func as usize) {
            Some(&plan) if plan.ready => Some(plan),
            Some(_) => {
                self.intern_function(func);
                Some(self.plans[func as usize])
            }
            None => None,
        }
    }

    /// Whether track `i`'s descriptor is written in the current part.
    #[inline(always)]
    pub fn described(&self, i: usize) -> bool {
        self.described.get(i).copied().unwrap_or(false)
    }

    fn set_described(&mut self, i: usize, described: bool) {
        if self.described.len() <= i {
            self.described.resize(i + 1, false);
        }
        self.described[i] = described;
    }

    /// Track `i`'s id, its descriptor written first if it is not yet in this part (a
    /// thread whose task could not be read yet is named by its stack until it can).
    #[inline(always)]
    pub fn event_track(&mut self, model: &CallModel, i: usize) -> u64 {
        if !self.described(i) {
            self.describe_new(model, i);
        }
        model.tracks[i].uuid
    }

    #[inline(never)]
    fn describe_new(&mut self, model: &CallModel, i: usize) {
        self.set_described(i, true);
        let mut pids = std::mem::take(&mut self.described_pids);
        self.describe_in(model, i, &mut pids);
        self.described_pids = pids;
    }

    /// Describes track `i` by its thread, once known (and its process, unless in `pids`,
    /// then added), or by its stack.
    fn describe_in(&mut self, model: &CallModel, i: usize, pids: &mut HashSet<i32>) {
        let track = &model.tracks[i];
        let thread = track.ident.map(|ident| {
            if let Some(p) = model.processes.get(&ident.pid) {
                if pids.insert(ident.pid) {
                    let name = crate::record::ThreadIdent {
                        comm: p.comm,
                        ..ident
                    }
                    .comm_str();
                    self.seq.describe_process(p.uuid, ident.pid, name);
                }
            }
            (ident.pid, ident.tid as i64)
        });
        self.seq.describe_track(track.uuid, track.name(), thread);
    }

    /// Track `i` now runs thread `ident`'s: its descriptor, written again (a rename keeps
    /// the id and updates the name).
    pub fn describe_thread(&mut self, model: &CallModel, i: usize) {
        self.set_described(i, true);
        let track = &model.tracks[i];
        let thread = track.ident.map(|t| (t.pid, t.tid as i64));
        self.seq.describe_track(track.uuid, track.name(), thread);
    }

    /// A process, new or renamed: its descriptor.
    pub fn describe_process(&mut self, uuid: u64, pid: i32, name: String) {
        self.seq.describe_process(uuid, pid, name);
        self.described_pids.insert(pid);
    }

    /// Track `i` was replaced by a new one on its key: the new one is not described yet.
    pub fn forget_track(&mut self, i: usize) {
        self.set_described(i, false);
    }

    /// A call of `func` (`plan`) begins at `ts` on track `uuid` (by index `i`), its
    /// arguments `args` (their strings in `arena`).
    #[inline(always)]
    pub fn begin(
        &mut self,
        ts: u64,
        i: usize,
        uuid: u64,
        plan: Plan,
        args: ArgsSlice<'_>,
        arena: &[u8],
    ) {
        let flow = self.flows.get_mut(i).and_then(Option::take);
        let (p, te) = self.seq.open_event(ts, uuid, BEGIN, Some(plan.iid as u64));
        let buf = &mut self.seq.buf;
        if plan.user {
            Enc::new(buf).uint(E_CATEGORY_IIDS, IID_USER);
        }
        let params = &self.plan_params[plan.first as usize..(plan.first + plan.len) as usize];
        encode_args(buf, &self.profile, params, args, arena);
        let mut e = Enc::new(buf);
        if let Some(flow) = flow {
            e.fixed64(E_FLOW_END, flow);
        }
        e.close_pair(te, p);
        drop(e);
        self.events += 1;
    }

    /// A call of `func` begins at `ts` on track `uuid`, without its arguments (it began
    /// before the part being written).
    pub fn begin_unknown(&mut self, ts: u64, uuid: u64, func: u32) {
        if let Some(plan) = self.plan(func) {
            self.seq.begin_at(ts, uuid, plan.iid as u64, plan.user);
            self.events += 1;
        }
    }

    /// A slice ends at `ts` on track `uuid`, with the return value typed by the returning
    /// function's return class.
    pub fn end(&mut self, ts: u64, uuid: u64, ret: Option<(u32, [u64; 2])>) {
        self.end_inline(ts, uuid, ret);
    }

    /// [`Sink::end`], inlined where most slices end (a `ret` of the top frame).
    #[inline(always)]
    pub fn end_inline(&mut self, ts: u64, uuid: u64, ret: Option<(u32, [u64; 2])>) {
        let (p, te) = self.seq.open_event(ts, uuid, END, None);
        let mut e = self.seq.enc();
        if let Some((func, value)) = ret {
            if let Some(plan) = self.plans.get(func as usize) {
                encode_return(&mut e, &self.profile, plan.ret, plan.ret_iid, value);
            }
        }
        e.close_pair(te, p);
        drop(e);
        self.events += 1;
    }

    /// `n` slices end at `ts` on track `uuid`, without return values.
    pub fn end_n(&mut self, ts: u64, uuid: u64, n: usize) {
        for _ in 0..n {
            self.end(ts, uuid, None);
        }
    }

    /// A switch at `ts` from track `from` (its id) to track `to` (by index): a `sched_out`
    /// instant on the first with a flow that the second's next call ends.
    pub fn switch(&mut self, ts: u64, from: u64, to: usize) {
        let flow = self.new_flow();
        let iid = self.seq.event_name("sched_out");
        let (p, te) = self.seq.open_event(ts, from, INSTANT, Some(iid));
        let mut e = self.seq.enc();
        e.fixed64(E_FLOW, flow);
        e.close_pair(te, p);
        drop(e);
        self.events += 1;
        if self.flows.len() <= to {
            self.flows.resize(to + 1, None);
        }
        self.flows[to] = Some(flow);
    }

    /// An instant at `ts` on track `uuid`, with text arguments, on a flow if `flow` says so.
    pub fn instant(
        &mut self,
        ts: u64,
        uuid: u64,
        name: &str,
        args: &[(&str, &str)],
        flow: Option<Flow>,
    ) {
        self.seq.instant_at(ts, uuid, name, args, flow);
        self.events += 1;
    }

    /// A new flow's id (flows a subscriber draws, as the switches' own).
    pub fn new_flow(&mut self) -> u64 {
        let flow = self.next_flow;
        self.next_flow += 1;
        flow
    }

    /// The id of the trace's own top-level track `name`, made (with `new_uuid`) the first
    /// time and described once per part.
    pub fn own_track(&mut self, name: String, new_uuid: impl FnOnce() -> u64) -> u64 {
        let i = match self.own.iter().position(|t| t.name == name) {
            Some(i) => i,
            None => {
                let uuid = new_uuid();
                self.own.push(OwnTrack {
                    name,
                    uuid,
                    described: false,
                });
                self.own.len() - 1
            }
        };
        let t = &mut self.own[i];
        if !t.described {
            t.described = true;
            self.seq.describe_track(t.uuid, t.name.clone(), None);
        }
        t.uuid
    }

    /// Keeps the current segment of a budget whatever the budget (it holds the crash).
    pub fn pin(&mut self) {
        if let Some(ring) = self.ring.as_mut() {
            ring.pin();
        }
    }

    /// Asks the CPU for the decoding plans of the entries a little ahead of record `i`: the
    /// plan of the entry `2 * AHEAD` on, and the first and last parameters of the one `AHEAD`
    /// on (whose plan was asked for earlier; its parameters can span two cache lines). On a
    /// kernel-sized profile a function's plan and parameters are two cache misses, a third of
    /// the writer's time in the writer benchmark without this (the only hand-tuned memory
    /// access in the writer).
    #[inline(always)]
    pub fn prefetch_plans(&self, records: &[Record], i: usize) {
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

    /// After a batch: flushes a full buffer; says whether a budget's next segment is due
    /// (only while writing).
    pub fn end_batch(&mut self, writing: bool) -> std::io::Result<bool> {
        if self.seq.full() {
            self.flush()?;
            let at = (self.seq.last_ts(), self.bytes, self.events);
            self.sizes.push(at);
        }
        let buffered = self.seq.buf.len() as u64;
        Ok(writing && self.ring.as_ref().is_some_and(|r| r.due(buffered)))
    }

    /// Starts the budget's next segment here: every call the model has open and written
    /// begins again at its start (see [`crate::ring`]).
    #[inline(never)]
    pub fn next_segment(&mut self, model: &CallModel) -> std::io::Result<()> {
        let ts = self.seq.last_ts();
        // Every call open now is interned before the cut: the segments after it then need
        // no name from a head that may be dropped.
        for t in &model.tracks {
            for func in t.written_calls() {
                self.plan(func);
            }
        }
        self.flush()?;
        let tail = self.tail(model, ts);
        let head = self.head(model, ts);
        self.part_start = ts;
        self.described.clear();
        // A flow whose start may be dropped is not drawn.
        self.flows.clear();
        self.described_pids.clear();
        for t in &mut self.own {
            t.described = false;
        }
        let events = self.events;
        if let Some(ring) = self.ring.as_mut() {
            ring.next(ts, head, tail, events, self.seq.interned())?;
        }
        Ok(())
    }

    /// The tail of a segment ending at `ts` (see [`crate::ring`]): the end there of every
    /// call open and written, innermost first on each track; and how many. Its events name
    /// their track and time in full, so that the sequence's state after it is as before it
    /// (the tail is only written before a gap).
    fn tail(&mut self, model: &CallModel, ts: u64) -> (Vec<u8>, u64) {
        let body = std::mem::take(&mut self.seq.buf);
        let mut events = 0;
        for i in model.in_key_order() {
            let track = &model.tracks[i];
            for _ in 0..track.written_open() {
                self.seq.end_at(ts, track.uuid);
                events += 1;
            }
        }
        (std::mem::replace(&mut self.seq.buf, body), events)
    }

    /// Keeps the current part of a budget whatever the budget (a moment of a crash's story
    /// is in it).
    pub fn keep_part(&mut self) {
        if let Some(ring) = self.ring.as_mut() {
            ring.keep_part();
        }
    }

    /// The head of a segment starting at `ts` (see [`crate::ring`]): the sequence's start,
    /// the packet defaults, and every open call as a slice starting at `ts` on its track,
    /// described.
    fn head(&mut self, model: &CallModel, ts: u64) -> Head {
        let body = std::mem::take(&mut self.seq.buf);
        self.seq.start_packet(ts);
        let start = std::mem::take(&mut self.seq.buf);
        self.seq.set_defaults();
        let mut pids = HashSet::new();
        let mut events = 0;
        for i in model.in_key_order() {
            let funcs = model.tracks[i].written_calls();
            if funcs.is_empty() {
                continue;
            }
            self.describe_in(model, i, &mut pids);
            let uuid = model.tracks[i].uuid;
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

    /// Writes the buffered packets out.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.bytes += match self.ring.as_mut() {
            Some(ring) => self.seq.flush(ring)?,
            None => self.seq.flush(&mut self.out)?,
        };
        Ok(())
    }

    /// Writes the stats (`dropped` records lost under back-pressure), flushes, and puts the
    /// budget's kept segments into the output.
    pub fn finish(mut self, dropped: u64) -> std::io::Result<Written> {
        if dropped > 0 {
            self.seq.packet_loss(dropped);
        }
        self.flush()?;
        let mut cut = None;
        if let Some(ring) = self.ring.take() {
            let (bytes, events, c) = ring.finish(self.events, &mut self.out)?;
            self.bytes = bytes;
            self.events = events;
            cut = c;
        }
        let at = (self.seq.last_ts(), self.bytes, self.events);
        self.sizes.push(at);
        Ok(Written {
            events: self.events,
            bytes: self.bytes,
            sizes: self.sizes,
            cut,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ArgsRef, TrackKey};
    use osi_profile::{Class, Function, Location, Param, ProfileData, TypeDesc};
    use prost::Message;
    use rrr_perfetto::proto::{self, track_event::Type};

    fn profile() -> Arc<Profile> {
        let ty = |c: &str, class| TypeDesc {
            c_type: c.into(),
            class,
        };
        let mut d = ProfileData {
            functions: vec![Function {
                name: "do_sys_openat2".into(),
                entry: 0xffff_ffff_8100_0000,
                size: 0x40,
                file: None,
                line: 0,
                ret: ty("long", Class::Signed(8)),
                params: vec![Param {
                    name: "dfd".into(),
                    ty: ty("int", Class::Signed(4)),
                    loc: Location::Reg(5),
                }],
                flags: 0,
            }],
            ..Default::default()
        };
        d.finish();
        Arc::new(Profile::from_bytes(&d.to_bytes()).unwrap())
    }

    /// A call's begin (its argument decoded by its type), its end (with the return value)
    /// and an instant ending a flow, as Perfetto's own types read them back.
    #[test]
    fn events_are_encoded_as_perfetto_reads_them() {
        let mut out = Vec::new();
        let mut model = CallModel::new();
        let i = model.track_index(TrackKey::Thread(0x1000));
        let mut sink = Sink::new(&mut out, profile());
        let ts = sink.clock(100);
        let uuid = sink.event_track(&model, i);
        let plan = sink.plan(0).unwrap();
        let words = [(-100i64) as u64];
        let args = ArgsRef {
            at: 0,
            len: 1,
            missing: 0,
            strings: 0,
        };
        sink.begin(ts, i, uuid, plan, args.slice(&words), &[]);
        sink.end(110, uuid, Some((0, [3, 0])));
        sink.instant(
            120,
            uuid,
            "bad-write 4",
            &[("addr", "0x10")],
            Some(Flow::End(9)),
        );
        let written = sink.finish(0).unwrap();
        assert_eq!(written.events, 3);
        assert_eq!(written.bytes as usize, out.len());

        let trace = proto::Trace::decode(&out[..]).unwrap();
        let events: Vec<&proto::TrackEvent> = trace
            .packet
            .iter()
            .filter_map(|p| match &p.data {
                Some(proto::trace_packet::Data::TrackEvent(e)) => Some(e),
                _ => None,
            })
            .collect();
        let types: Vec<i32> = events.iter().filter_map(|e| e.r#type).collect();
        let want = [Type::SliceBegin, Type::SliceEnd, Type::Instant].map(|t| t as i32);
        assert_eq!(types, want);
        let int = |e: &proto::TrackEvent| match e.debug_annotations[0].value {
            Some(proto::debug_annotation::Value::IntValue(v)) => v,
            ref other => panic!("{other:?}"),
        };
        assert_eq!(int(events[0]), -100, "the int argument, sign-extended");
        assert_eq!(int(events[1]), 3, "the return value");
        assert_eq!(events[2].terminating_flow_ids, [9]);
        let names: Vec<&str> = trace
            .packet
            .iter()
            .filter_map(|p| p.interned_data.as_ref())
            .flat_map(|d| d.event_names.iter().filter_map(|n| n.name.as_deref()))
            .collect();
        assert!(names.contains(&"do_sys_openat2"), "{names:?}");
    }
}

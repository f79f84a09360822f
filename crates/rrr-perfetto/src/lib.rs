//! Perfetto's trace format as rrr writes it, apart from what a trace says (its tracks, threads
//! and call stacks are the trace writer's, in `rrr-trace`): field numbers, packets, the clock,
//! interning and packet defaults of the one trusted packet sequence rrr writes. It knows
//! nothing of kernels.
//!
//! Timestamps are guest instruction counts on a sequence-scoped incremental clock (so most
//! take one or two bytes), declared equal to BOOTTIME nanoseconds at the first event. Names
//! are interned: event name iids are handed out in order of first use, annotation names on
//! first use. Hot packets are written with [`encode::Enc`]; the rest with prost's
//! [`proto`] types.

#![deny(missing_docs)]

pub mod encode;
pub mod proto;

use std::collections::HashMap;
use std::io::Write;

use prost::Message;

use encode::{tag, Enc, LEN, VARINT};

/// Protobuf field numbers of the messages rrr writes by hand.
pub mod fields {
    // TracePacket.
    /// `TracePacket.timestamp`.
    pub const P_TIMESTAMP: u32 = 8;
    /// `TracePacket.trusted_packet_sequence_id`.
    pub const P_SEQ_ID: u32 = 10;
    /// `TracePacket.track_event`.
    pub const P_TRACK_EVENT: u32 = 11;
    /// `TracePacket.interned_data`.
    pub const P_INTERNED: u32 = 12;
    /// `TracePacket.timestamp_clock_id`.
    pub const P_CLOCK_ID: u32 = 58;
    /// `TracePacket.trace_packet_defaults`.
    pub const P_DEFAULTS: u32 = 59;
    // TracePacketDefaults.
    /// `TracePacketDefaults.timestamp_clock_id`.
    pub const D_CLOCK_ID: u32 = 58;
    /// `TracePacketDefaults.track_event_defaults`.
    pub const D_TRACK_EVENT: u32 = 11;
    // TrackEvent.
    /// `TrackEvent.category_iids`.
    pub const E_CATEGORY_IIDS: u32 = 3;
    /// `TrackEvent.debug_annotations`.
    pub const E_ANNOTATION: u32 = 4;
    /// `TrackEvent.type`.
    pub const E_TYPE: u32 = 9;
    /// `TrackEvent.name_iid`.
    pub const E_NAME_IID: u32 = 10;
    /// `TrackEvent.track_uuid`.
    pub const E_TRACK: u32 = 11;
    /// `TrackEvent.flow_ids`.
    pub const E_FLOW: u32 = 47;
    /// `TrackEvent.terminating_flow_ids`.
    pub const E_FLOW_END: u32 = 48;
    // TrackEvent.Type.
    /// `TYPE_SLICE_BEGIN`.
    pub const BEGIN: u64 = 1;
    /// `TYPE_SLICE_END`.
    pub const END: u64 = 2;
    /// `TYPE_INSTANT`.
    pub const INSTANT: u64 = 3;
    // InternedData.
    /// `InternedData.event_names`.
    pub const I_EVENT_NAMES: u32 = 2;
    /// `InternedData.debug_annotation_names`.
    pub const I_ANNOTATION_NAMES: u32 = 3;
    // DebugAnnotation.
    /// `DebugAnnotation.name_iid`.
    pub const A_NAME_IID: u32 = 1;
    /// `DebugAnnotation.bool_value`.
    pub const A_BOOL: u32 = 2;
    /// `DebugAnnotation.uint_value`.
    pub const A_UINT: u32 = 3;
    /// `DebugAnnotation.int_value`.
    pub const A_INT: u32 = 4;
    /// `DebugAnnotation.string_value`.
    pub const A_STRING: u32 = 6;
    /// `DebugAnnotation.pointer_value`.
    pub const A_POINTER: u32 = 7;
    /// `DebugAnnotation.array_values`.
    pub const A_ARRAY: u32 = 12;
}

use fields::*;

/// The sequence's id.
const SEQ: u64 = 1;
/// Sequence-scoped incremental clock carrying instruction counts.
const ICOUNT_CLOCK: u32 = 64;
const BOOTTIME: u32 = 6;
/// Buffered bytes past which the writer flushes.
const FLUSH_AT: usize = 1 << 20;
/// Events in a row on one track after which it becomes the default track: a defaults
/// packet costs about as much as the track field of 7 events.
const RETARGET_AFTER: u32 = 8;

/// Annotation name iid of return values (`return`).
pub const IID_RETURN: u64 = 1;
/// Interned category of user-space (stimulus) calls.
pub const IID_USER: u64 = 1;

/// An InternedData packet being written (see [`Sequence::open_interned`]).
pub struct OpenInterned {
    packet: usize,
    data: usize,
}

/// The trace's one packet sequence, encoded into a buffer that the owner flushes.
pub struct Sequence {
    /// Encoded packets not yet written out.
    pub buf: Vec<u8>,
    started: bool,
    last_ts: u64,
    /// The sequence's default track uuid (0: none yet).
    default_track: u64,
    /// The track of the latest events not on the default track, and how many in a row.
    run: (u64, u32),
    /// Annotation names to iids.
    names: HashMap<String, u64>,
    /// Interned event names that are not functions.
    extra_names: HashMap<&'static str, u64>,
    /// Event name iids handed out.
    event_iids: u64,
    /// Every InternedData packet written after the start, when kept (see
    /// [`Sequence::keep_interned`]).
    interned: Option<Vec<u8>>,
}

/// An event's place on a flow (the arrows the UI draws between events with one id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// The flow with this id starts or goes on here.
    Through(u64),
    /// The flow with this id ends here.
    End(u64),
}

impl Default for Sequence {
    fn default() -> Self {
        Sequence::new()
    }
}

impl Sequence {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequence {
            buf: Vec::with_capacity(FLUSH_AT + (64 << 10)),
            started: false,
            last_ts: 0,
            default_track: 0,
            run: (0, 0),
            names: HashMap::from([("return".to_owned(), IID_RETURN)]),
            extra_names: HashMap::new(),
            event_iids: 0,
            interned: None,
        }
    }

    /// Keeps a copy of every InternedData packet from now on, so that a trace cut at any
    /// point can be given the names interned before it (see [`Sequence::interned`]). Iids
    /// are never reused, so the copies stay valid.
    pub fn keep_interned(&mut self) {
        self.interned.get_or_insert_with(Vec::new);
    }

    /// The InternedData packets kept (see [`Sequence::keep_interned`]).
    pub fn interned(&self) -> &[u8] {
        self.interned.as_deref().unwrap_or_default()
    }

    /// Copies the packet at `from..` of the buffer to the kept interned data.
    fn keep(&mut self, from: usize) {
        if let Some(log) = self.interned.as_mut() {
            log.extend_from_slice(&self.buf[from..]);
        }
    }

    /// Whether [`Sequence::start`] has run.
    #[inline(always)]
    pub fn started(&self) -> bool {
        self.started
    }

    /// The latest event's time.
    #[inline(always)]
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    /// Whether the buffer is due to be flushed.
    #[inline(always)]
    pub fn full(&self) -> bool {
        self.buf.len() >= FLUSH_AT
    }

    /// Writes the buffered packets to `out`; returns how many bytes.
    pub fn flush(&mut self, out: &mut impl Write) -> std::io::Result<u64> {
        let n = self.buf.len() as u64;
        if n > 0 {
            out.write_all(&self.buf)?;
            self.buf.clear();
        }
        out.flush()?;
        Ok(n)
    }

    /// Starts the sequence at `ts`: the clock snapshot that ties instruction counts to
    /// BOOTTIME, the interned names every trace has, and the packet defaults.
    pub fn start(&mut self, ts: u64) {
        self.started = true;
        self.last_ts = ts;
        self.start_packet(ts);
        self.set_defaults();
    }

    /// The packet that starts the sequence at `ts` (see [`Sequence::start`]), again: for a
    /// trace that starts later, its incremental state cleared, the packet defaults (then
    /// [`Sequence::set_defaults`]) and interned names (see [`Sequence::interned`]) to
    /// follow.
    pub fn start_packet(&mut self, ts: u64) {
        let clock = |clock_id, is_incremental| proto::clock_snapshot::Clock {
            clock_id: Some(clock_id),
            timestamp: Some(ts),
            is_incremental: Some(is_incremental),
            unit_multiplier_ns: None,
        };
        self.packet(proto::TracePacket {
            timestamp: Some(ts),
            timestamp_clock_id: Some(BOOTTIME),
            sequence_flags: Some(
                proto::trace_packet::SequenceFlags::SeqIncrementalStateCleared as u32,
            ),
            first_packet_on_sequence: Some(true),
            data: Some(proto::trace_packet::Data::ClockSnapshot(
                proto::ClockSnapshot {
                    clocks: vec![clock(BOOTTIME, false), clock(ICOUNT_CLOCK, true)],
                    primary_trace_clock: Some(proto::BuiltinClock::Boottime as i32),
                },
            )),
            interned_data: Some(proto::InternedData {
                debug_annotation_names: vec![proto::DebugAnnotationName {
                    iid: Some(IID_RETURN),
                    name: Some("return".into()),
                }],
                event_categories: vec![proto::EventCategory {
                    iid: Some(IID_USER),
                    name: Some("user".into()),
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    /// Appends a packet built with prost, on this sequence.
    pub fn packet(&mut self, mut p: proto::TracePacket) {
        p.optional_trusted_packet_sequence_id = Some(
            proto::trace_packet::OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(
                SEQ as u32,
            ),
        );
        let body = p.encode_to_vec();
        self.enc().bytes(1, &body);
    }

    /// An encoder appending to the buffer.
    #[inline(always)]
    pub fn enc(&mut self) -> Enc<'_> {
        Enc::new(&mut self.buf)
    }

    /// Opens the packet of an event of type `ty` on track `uuid`, named by interned `name`,
    /// at `ts` on the incremental instruction-count clock, and its TrackEvent; the caller
    /// adds the event's fields and closes both at the returned positions (packet, event).
    #[inline(always)]
    pub fn open_event(&mut self, ts: u64, uuid: u64, ty: u64, name: Option<u64>) -> (usize, usize) {
        let track = self.track_field(uuid);
        let delta = ts - self.last_ts;
        self.last_ts = ts;
        let mut e = self.enc();
        let p = e.open(1);
        e.varints([
            tag(P_TIMESTAMP, VARINT),
            delta,
            tag(P_SEQ_ID, VARINT),
            SEQ,
            tag(P_TRACK_EVENT, LEN),
            0,
            tag(E_TYPE, VARINT),
            ty,
        ]);
        // The event's length is the byte before its type field (two one-byte varints).
        let te = e.position() - 3;
        if let Some(uuid) = track {
            e.uint(E_TRACK, uuid);
        }
        if let Some(iid) = name {
            e.uint(E_NAME_IID, iid);
        }
        (p, te)
    }

    /// A slice begin at absolute time `ts` (on BOOTTIME: before the incremental clock's
    /// current value), on track `uuid`, named by interned `iid`, of category `user` if `user`.
    pub fn begin_at(&mut self, ts: u64, uuid: u64, iid: u64, user: bool) {
        self.slice_at(ts, uuid, BEGIN, Some((iid, user)));
    }

    /// A slice end at absolute time `ts` (on BOOTTIME), on track `uuid` named in full: it
    /// leaves the sequence's state (clock, default track) as it was.
    pub fn end_at(&mut self, ts: u64, uuid: u64) {
        self.slice_at(ts, uuid, END, None);
    }

    /// A slice's begin or end (`ty`) at absolute time `ts`, its track named in full; a begin
    /// with its interned name and whether it is user code.
    fn slice_at(&mut self, ts: u64, uuid: u64, ty: u64, name: Option<(u64, bool)>) {
        let mut e = self.enc();
        let p = e.open(1);
        e.uint(P_TIMESTAMP, ts);
        e.uint(P_CLOCK_ID, BOOTTIME as u64);
        e.uint(P_SEQ_ID, SEQ);
        let te = e.open(P_TRACK_EVENT);
        e.uint(E_TYPE, ty);
        e.uint(E_TRACK, uuid);
        if let Some((iid, user)) = name {
            e.uint(E_NAME_IID, iid);
            if user {
                e.uint(E_CATEGORY_IIDS, IID_USER);
            }
        }
        e.close_pair(te, p);
    }

    /// An instant event at absolute time `ts` (on BOOTTIME), on track `uuid`, named `name`
    /// (not interned: for the few events that are not calls), with string annotations, and
    /// on a flow if `flow` says so.
    pub fn instant_at(
        &mut self,
        ts: u64,
        uuid: u64,
        name: &str,
        args: &[(&str, &str)],
        flow: Option<Flow>,
    ) {
        let annotations = args
            .iter()
            .map(|(k, v)| proto::DebugAnnotation {
                name_field: Some(proto::debug_annotation::NameField::Name((*k).to_owned())),
                value: Some(proto::debug_annotation::Value::StringValue((*v).to_owned())),
                ..Default::default()
            })
            .collect();
        self.packet(proto::TracePacket {
            timestamp: Some(ts),
            timestamp_clock_id: Some(BOOTTIME),
            data: Some(proto::trace_packet::Data::TrackEvent(proto::TrackEvent {
                r#type: Some(proto::track_event::Type::Instant as i32),
                track_uuid: Some(uuid),
                name_field: Some(proto::track_event::NameField::Name(name.to_owned())),
                debug_annotations: annotations,
                flow_ids: match flow {
                    Some(Flow::Through(id)) => vec![id],
                    _ => Vec::new(),
                },
                terminating_flow_ids: match flow {
                    Some(Flow::End(id)) => vec![id],
                    _ => Vec::new(),
                },
                ..Default::default()
            })),
            ..Default::default()
        });
    }

    /// Whether an event on `uuid` must name its track. Events name their track unless it is
    /// the sequence's default track (`TrackEventDefaults.track_uuid`, 2 bytes saved per
    /// event); the default follows a track once it has had [`RETARGET_AFTER`] events in a
    /// row, so an interrupt's few events do not cost a defaults packet each.
    #[inline(always)]
    fn track_field(&mut self, uuid: u64) -> Option<u64> {
        if uuid == self.default_track {
            self.run = (uuid, 0);
            return None;
        }
        self.run = match self.run {
            (u, n) if u == uuid => (u, n + 1),
            _ => (uuid, 1),
        };
        if self.run.1 < RETARGET_AFTER {
            return Some(uuid);
        }
        self.default_track = uuid;
        self.set_defaults();
        None
    }

    /// Writes the sequence's packet defaults: the instruction-count clock and the default
    /// track, if there is one yet (at the start there is none).
    pub fn set_defaults(&mut self) {
        let default_track = self.default_track;
        let mut e = self.enc();
        let p = e.open(1);
        e.uint(P_SEQ_ID, SEQ);
        let d = e.open(P_DEFAULTS);
        e.uint(D_CLOCK_ID, ICOUNT_CLOCK as u64);
        if default_track != 0 {
            let t = e.open(D_TRACK_EVENT);
            e.uint(E_TRACK, default_track);
            e.close(t);
        }
        e.close(d);
        e.close(p);
    }

    /// A track descriptor: a plain track named `name`, or the track of thread `(pid, tid)`.
    pub fn describe_track(&mut self, uuid: u64, name: String, thread: Option<(i32, i64)>) {
        let desc = match thread {
            None => proto::TrackDescriptor {
                uuid: Some(uuid),
                static_or_dynamic_name: Some(proto::track_descriptor::StaticOrDynamicName::Name(
                    name,
                )),
                ..Default::default()
            },
            Some((pid, tid)) => proto::TrackDescriptor {
                uuid: Some(uuid),
                thread: Some(proto::ThreadDescriptor {
                    pid: Some(pid),
                    tid: Some(tid),
                    thread_name: Some(name),
                }),
                ..Default::default()
            },
        };
        self.packet(proto::TracePacket {
            data: Some(proto::trace_packet::Data::TrackDescriptor(desc)),
            ..Default::default()
        });
    }

    /// A process track descriptor.
    pub fn describe_process(&mut self, uuid: u64, pid: i32, name: String) {
        self.packet(proto::TracePacket {
            data: Some(proto::trace_packet::Data::TrackDescriptor(
                proto::TrackDescriptor {
                    uuid: Some(uuid),
                    process: Some(proto::ProcessDescriptor {
                        pid: Some(pid),
                        cmdline: vec![],
                        process_name: Some(name),
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        });
    }

    /// The interned event name iid of `name` (not a function's: those are interned with
    /// [`Sequence::open_interned`]), interned on first use.
    pub fn event_name(&mut self, name: &'static str) -> u64 {
        if let Some(&iid) = self.extra_names.get(name) {
            return iid;
        }
        self.event_iids += 1;
        let iid = self.event_iids;
        self.extra_names.insert(name, iid);
        let interned = proto::InternedData {
            event_names: vec![proto::EventName {
                iid: Some(iid),
                name: Some(name.into()),
            }],
            ..Default::default()
        };
        let at = self.buf.len();
        self.packet(proto::TracePacket {
            interned_data: Some(interned),
            ..Default::default()
        });
        self.keep(at);
        iid
    }

    /// Opens an InternedData packet that gives `name` the next event name iid (returned);
    /// [`Sequence::annotation_name`] may add to it before [`Sequence::close_interned`].
    pub fn open_interned(&mut self, name: &str) -> (u64, OpenInterned) {
        self.event_iids += 1;
        let iid = self.event_iids;
        let mut e = self.enc();
        let packet = e.open(1);
        e.uint(P_SEQ_ID, SEQ);
        let data = e.open(P_INTERNED);
        let en = e.open(I_EVENT_NAMES);
        e.uint(1, iid);
        e.bytes(2, name.as_bytes());
        e.close(en);
        (iid, OpenInterned { packet, data })
    }

    /// Closes what [`Sequence::open_interned`] opened.
    pub fn close_interned(&mut self, open: OpenInterned) {
        let mut e = self.enc();
        e.close(open.data);
        e.close(open.packet);
        drop(e);
        // The packet's tag is the byte before its length.
        self.keep(open.packet - 1);
    }

    /// The iid of an annotation name, interned into the open InternedData if new.
    pub fn annotation_name(&mut self, name: &str) -> u64 {
        if let Some(&iid) = self.names.get(name) {
            return iid;
        }
        let iid = self.names.len() as u64 + 1;
        self.names.insert(name.to_owned(), iid);
        let mut e = self.enc();
        let an = e.open(I_ANNOTATION_NAMES);
        e.uint(1, iid);
        e.bytes(2, name.as_bytes());
        e.close(an);
        iid
    }

    /// The trace's stats: `lost` packets (events dropped under back-pressure).
    pub fn packet_loss(&mut self, lost: u64) {
        let stats = proto::TraceStats {
            buffer_stats: vec![proto::trace_stats::BufferStats {
                trace_writer_packet_loss: Some(lost),
            }],
        };
        self.packet(proto::TracePacket {
            data: Some(proto::trace_packet::Data::TraceStats(stats)),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::trace_packet::Data;

    /// A thread's track, a function name and an annotation name interned, a slice with an
    /// argument: prost's reading of Perfetto's schema finds each where Perfetto looks.
    #[test]
    fn a_sequence_reads_back_as_perfettos_schema() {
        let mut s = Sequence::new();
        s.start(100);
        s.describe_track(7, "init".into(), Some((1, 2)));
        let (f, open) = s.open_interned("f");
        let x = s.annotation_name("x");
        s.close_interned(open);
        let (p, te) = s.open_event(105, 7, BEGIN, Some(f));
        let mut e = s.enc();
        let a = e.open(E_ANNOTATION);
        e.uint(A_NAME_IID, x);
        e.uint(A_UINT, 42);
        e.close(a);
        e.close_pair(te, p);
        drop(e);
        let (p, te) = s.open_event(112, 7, END, None);
        s.enc().close_pair(te, p);
        assert_eq!(s.last_ts(), 112);
        let mut out = Vec::new();
        let n = s.flush(&mut out).unwrap();
        assert_eq!(n as usize, out.len());

        let trace = proto::Trace::decode(&out[..]).unwrap();
        let first = &trace.packet[0];
        assert_eq!(first.first_packet_on_sequence, Some(true));
        let Some(Data::ClockSnapshot(clocks)) = &first.data else {
            panic!("the sequence starts with its clocks: {first:?}")
        };
        assert!(clocks.clocks.iter().all(|c| c.timestamp == Some(100)));
        let thread = trace
            .packet
            .iter()
            .find_map(|p| match &p.data {
                Some(Data::TrackDescriptor(d)) => d.thread.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            (thread.pid, thread.tid, thread.thread_name.as_deref()),
            (Some(1), Some(2), Some("init"))
        );
        let interned = trace
            .packet
            .iter()
            .filter_map(|p| p.interned_data.as_ref())
            .find(|i| !i.event_names.is_empty())
            .unwrap();
        assert_eq!(interned.event_names[0].iid, Some(f));
        assert_eq!(interned.event_names[0].name.as_deref(), Some("f"));
        assert_eq!(interned.debug_annotation_names[0].iid, Some(x));
        assert_eq!(
            interned.debug_annotation_names[0].name.as_deref(),
            Some("x")
        );
        let events: Vec<(Option<u64>, &proto::TrackEvent)> = trace
            .packet
            .iter()
            .filter_map(|p| match &p.data {
                Some(Data::TrackEvent(e)) => Some((p.timestamp, e)),
                _ => None,
            })
            .collect();
        assert_eq!(events.len(), 2);
        // Timestamps on the incremental clock: deltas from the start.
        let (ts, begin) = events[0];
        assert_eq!(ts, Some(5));
        assert_eq!(begin.r#type, Some(BEGIN as i32));
        assert_eq!(begin.track_uuid, Some(7));
        assert_eq!(
            begin.name_field,
            Some(proto::track_event::NameField::NameIid(f))
        );
        let arg = &begin.debug_annotations[0];
        assert_eq!(
            arg.name_field,
            Some(proto::debug_annotation::NameField::NameIid(x))
        );
        assert_eq!(
            arg.value,
            Some(proto::debug_annotation::Value::UintValue(42))
        );
        let (ts, end) = events[1];
        assert_eq!(ts, Some(7));
        assert_eq!(end.r#type, Some(END as i32));
    }
}

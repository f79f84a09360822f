//! The call model: the trace's tracks (a thread's, or a CPU's interrupts'), the calls open on
//! each (a shadow stack), the thread each track runs, and the processes. It knows nothing of
//! what is written: the [policy](super::policy) decides that, the [sink](super::sink) writes.

use std::collections::HashMap;

use crate::record::{ThreadIdent, TrackKey};
use crate::stacks::ShadowStack;

/// One track of the trace.
pub(crate) struct Track {
    /// Its id in the trace (a Perfetto track uuid); a new thread on the same key gets a new one.
    pub uuid: u64,
    /// Its key.
    pub key: TrackKey,
    /// The calls open on it.
    pub stack: ShadowStack,
    /// The thread running on it, once read.
    pub ident: Option<ThreadIdent>,
    /// Where in the program its latest syscall was made (the return address of the libc
    /// wrapper, see `Observer::syscall_site`), if known.
    pub syscall_site: Option<u64>,
    /// The CPU it runs on, if known: an interrupt track's own, a thread's from the latest
    /// switch to it.
    pub cpu: Option<u32>,
}

impl Track {
    /// The functions of the calls open on it that are written, outermost first.
    pub fn written_calls(&self) -> Vec<u32> {
        let frames = self.stack.frames().iter();
        frames.filter(|f| !f.hidden).map(|f| f.func).collect()
    }

    /// The calls open on it that are written.
    pub fn written_open(&self) -> usize {
        self.stack.frames().iter().filter(|f| !f.hidden).count()
    }

    /// Its name: its thread's, or its stack's while the thread is not known (or has no tid).
    pub fn name(&self) -> String {
        match (self.key, self.ident) {
            (TrackKey::Thread(stack), Some(ident)) if ident.tid < 0 => TrackKey::stack_name(stack),
            (_, Some(ident)) => ident.comm_str(),
            (TrackKey::Irq(cpu), None) => format!("IRQ cpu{cpu}"),
            (TrackKey::Thread(stack), None) => TrackKey::stack_name(stack),
        }
    }
}

/// A process: its track's id, its name, and its main thread's track (a pid reused by another
/// process gets a process of its own).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Process {
    pub uuid: u64,
    pub comm: [u8; 16],
    pub main: TrackKey,
}

/// What a thread record changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ThreadChange {
    /// The track, by index.
    pub track: usize,
    /// The thread's process is new or renamed: its id, to describe.
    pub process: Option<u64>,
    /// The key now runs another thread: the old track's id and how many of the calls open on
    /// it (now all closed) were written.
    pub replaced: Option<(u64, usize)>,
}

/// Tracks, their stacks and threads, and processes.
pub(crate) struct CallModel {
    /// Tracks, indexed through `index`; a cache of the last lookup makes the common case
    /// (consecutive records on one track) a compare.
    pub tracks: Vec<Track>,
    index: HashMap<TrackKey, usize>,
    last: Option<(TrackKey, usize)>,
    /// Processes by pid.
    pub processes: HashMap<i32, Process>,
    next_uuid: u64,
}

impl CallModel {
    /// No tracks yet.
    pub fn new() -> CallModel {
        CallModel {
            tracks: Vec::new(),
            index: HashMap::new(),
            last: None,
            processes: HashMap::new(),
            next_uuid: 1,
        }
    }

    /// A new track id (for a track of the trace's own, such as the crash's).
    pub fn new_uuid(&mut self) -> u64 {
        let u = self.next_uuid;
        self.next_uuid += 1;
        u
    }

    /// The index of `key`'s track, created if new.
    #[inline(always)]
    pub fn track_index(&mut self, key: TrackKey) -> usize {
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
                    stack: ShadowStack::default(),
                    ident: None,
                    syscall_site: None,
                    cpu: match key {
                        TrackKey::Irq(cpu) => Some(cpu),
                        TrackKey::Thread(_) => None,
                    },
                });
                self.index.insert(key, self.tracks.len() - 1);
                self.tracks.len() - 1
            }
        };
        self.last = Some((key, i));
        i
    }

    /// The index of `key`'s track, if it has one.
    pub fn find(&self, key: TrackKey) -> Option<usize> {
        self.index.get(&key).copied()
    }

    /// The tracks' indices in key order (the same records always give the same bytes).
    pub fn in_key_order(&self) -> Vec<usize> {
        let mut keys: Vec<(TrackKey, usize)> = self.index.iter().map(|(k, i)| (*k, *i)).collect();
        keys.sort();
        keys.into_iter().map(|(_, i)| i).collect()
    }

    /// How many tracks there are.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Thread `ident` runs on `key`'s track. `described`: the track has been written
    /// already, named by its stack (it is then replaced by a thread track, as is one whose
    /// key now runs another thread).
    pub fn thread(&mut self, key: TrackKey, ident: ThreadIdent, described: bool) -> ThreadChange {
        let mut process = None;
        // A process: new for a new process (a pid seen before, on another main thread, is a
        // reused pid), described again when its main thread is renamed (exec).
        if ident.pid == ident.tid && ident.pid >= 0 {
            let uuid = match self.processes.get(&ident.pid) {
                Some(p) if p.main == key => (p.comm != ident.comm).then_some(p.uuid),
                _ => Some(self.new_uuid()),
            };
            if let Some(uuid) = uuid {
                let p = Process {
                    uuid,
                    comm: ident.comm,
                    main: key,
                };
                self.processes.insert(ident.pid, p);
                process = Some(uuid);
            }
        }
        let reusable = match self.find(key).map(|i| &self.tracks[i]) {
            Some(t) => match t.ident {
                Some(old) => old.tid == ident.tid && old.pid == ident.pid,
                None => !described,
            },
            None => true,
        };
        let mut replaced = None;
        if !reusable {
            // A new thread, a stack now owned by another task, or a track first written
            // before its task could be read: what is open there closes, a new track starts.
            let uuid = self.new_uuid();
            let i = self.track_index(key);
            let old = &mut self.tracks[i];
            let old_uuid = std::mem::replace(&mut old.uuid, uuid);
            let mut n = 0;
            old.stack.drain(|f| n += usize::from(!f.hidden));
            replaced = Some((old_uuid, n));
        }
        let i = self.track_index(key);
        self.tracks[i].ident = Some(ident);
        ThreadChange {
            track: i,
            process,
            replaced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ident;

    /// Each record's thread, in order: the changes the model reports for each.
    fn threads(records: &[(TrackKey, ThreadIdent, bool)]) -> Vec<ThreadChange> {
        let mut m = CallModel::new();
        records
            .iter()
            .map(|&(k, id, described)| m.thread(k, id, described))
            .collect()
    }

    #[test]
    fn a_process_is_described_when_new_and_when_renamed() {
        let k = TrackKey::Thread(0x1000);
        let got = threads(&[
            (k, ident(7, 7, "sh"), false),
            (k, ident(7, 7, "sh"), true),
            (k, ident(7, 7, "repro"), true),
        ]);
        // The process gets id 1, its track id 2; the same name again changes nothing; exec
        // renames the process on the same track.
        assert_eq!(got[0].process, Some(1));
        assert_eq!(got[1].process, None);
        assert_eq!(got[2].process, Some(1));
        assert!(got.iter().all(|c| c.replaced.is_none() && c.track == 0));
    }

    #[test]
    fn another_thread_on_a_stack_replaces_its_track() {
        let k = TrackKey::Thread(0x1000);
        let mut m = CallModel::new();
        let i = m.track_index(k);
        m.tracks[i].stack.enter(3, 0x800, false, false, |_, _| {});
        m.tracks[i].stack.enter(4, 0x700, false, true, |_, _| {});
        m.thread(k, ident(7, 8, "a"), true);
        let uuid = m.tracks[i].uuid;
        m.tracks[i].stack.enter(3, 0x800, false, false, |_, _| {});
        m.tracks[i].stack.enter(4, 0x700, false, true, |_, _| {});
        let c = m.thread(k, ident(9, 10, "b"), true);
        // The old track's one written call (the hidden one is not counted) ends with it.
        assert_eq!(c.replaced, Some((uuid, 1)));
        assert_ne!(m.tracks[i].uuid, uuid);
        assert!(m.tracks[i].stack.frames().is_empty());
    }

    #[test]
    fn a_track_named_by_its_stack_is_replaced_once_its_thread_is_known() {
        let k = TrackKey::Thread(0x1000);
        let mut m = CallModel::new();
        m.track_index(k);
        assert!(m.thread(k, ident(5, 6, "x"), true).replaced.is_some());
        let mut m = CallModel::new();
        m.track_index(k);
        assert!(m.thread(k, ident(5, 6, "x"), false).replaced.is_none());
    }

    #[test]
    fn tracks_are_named_by_thread_or_stack() {
        let mut m = CallModel::new();
        let i = m.track_index(TrackKey::Irq(1));
        assert_eq!(m.tracks[i].name(), "IRQ cpu1");
        let k = TrackKey::Thread(0xffff_c900_0000_4000);
        let j = m.track_index(k);
        assert_eq!(
            m.tracks[j].name(),
            TrackKey::stack_name(0xffff_c900_0000_4000)
        );
        m.thread(k, ident(3, 3, "init"), false);
        assert_eq!(m.tracks[j].name(), "init");
        assert_eq!(m.in_key_order().len(), 2);
    }
}

//! What the observer sends to the writer: raw observations, no decoding yet.

/// Which Perfetto track an observation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackKey {
    /// A thread, keyed by the base of its kernel stack (stack pointer masked by THREAD_SIZE).
    Thread(u64),
    /// Interrupt context on a CPU.
    Irq(u32),
}

impl TrackKey {
    /// The name of a thread known only by its kernel stack (its task could not be read):
    /// `stack-<base in hex>`.
    pub fn stack_name(stack: u64) -> String {
        format!("stack-{stack:x}")
    }
}

/// Most argument words an entry carries; further parameters are not read.
pub const MAX_ARG_WORDS: usize = 12;

/// Raw argument words of one entry, in parameter order (a register pair takes two words).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// The words.
    pub words: [u64; MAX_ARG_WORDS],
    /// How many words are valid.
    pub len: u8,
    /// Bit i set: word i could not be read (optimized out, or unmapped stack).
    pub missing: u16,
    /// Offset in the batch's byte arena of this entry's strings, each as `u16 len + bytes`
    /// (len `u16::MAX`: unreadable), one per `char *` parameter in order.
    pub strings: u32,
}

/// An entry's arguments as the observer ships them: the words are in the batch's
/// [`Batch::words`], `words[at..at + len]`, so that a record costs only the words its function
/// has (records with the words inline were 144 bytes, and writing them was the vCPU thread's
/// largest stall in a looping trace's profile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgsRef {
    /// Where the words start in the batch's [`Batch::words`].
    pub at: u32,
    /// How many words there are (see [`Args::len`]).
    pub len: u8,
    /// See [`Args::missing`].
    pub missing: u16,
    /// See [`Args::strings`].
    pub strings: u32,
}

/// An entry's arguments read in place from the batch's words (see [`ArgsRef::slice`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgsSlice<'a> {
    /// The words present (fewer than [`ArgsRef::len`] if the batch ends first).
    pub words: &'a [u64],
    /// See [`Args::missing`]; words beyond the batch's end are missing.
    pub missing: u16,
    /// See [`Args::strings`].
    pub strings: u32,
}

impl ArgsRef {
    /// The arguments, their words borrowed from `words` (the batch's [`Batch::words`]): the
    /// writer's hot path, without the copy [`ArgsRef::load`] makes (about 3% of the writer
    /// benchmark's instructions).
    #[inline(always)]
    pub fn slice<'a>(&self, words: &'a [u64]) -> ArgsSlice<'a> {
        let len = (self.len as usize).min(MAX_ARG_WORDS);
        let have = words.get(self.at as usize..).unwrap_or_default();
        let n = len.min(have.len());
        let beyond = ((1u32 << len) - (1u32 << n)) as u16;
        ArgsSlice {
            words: &have[..n],
            missing: self.missing | beyond,
            strings: self.strings,
        }
    }

    /// The arguments, their words taken from `words` (the batch's [`Batch::words`]); words
    /// beyond its end read as missing.
    pub fn load(&self, words: &[u64]) -> Args {
        let mut args = Args {
            len: self.len.min(MAX_ARG_WORDS as u8),
            missing: self.missing,
            strings: self.strings,
            ..Args::default()
        };
        let at = self.at as usize;
        let have = words.get(at..).unwrap_or_default();
        let n = (args.len as usize).min(have.len());
        args.words[..n].copy_from_slice(&have[..n]);
        for w in n..args.len as usize {
            args.missing |= 1 << w;
        }
        args
    }
}

/// Who a thread track belongs to, read from the task struct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadIdent {
    /// Thread id (`task_struct.pid`).
    pub tid: i32,
    /// Process id (`task_struct.tgid`).
    pub pid: i32,
    /// `task_struct.comm`, NUL-padded (empty for a task that cannot be read: the writer
    /// names its track by its stack, [`TrackKey::stack_name`]).
    pub comm: [u8; 16],
    /// True for kernel threads (no mm).
    pub kernel: bool,
}

impl ThreadIdent {
    /// The comm as text.
    pub fn comm_str(&self) -> String {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// A load or store that touched the watched memory (see [`crate::watch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The instruction.
    pub pc: u64,
    /// The first byte accessed.
    pub addr: u64,
    /// The value loaded or stored (its low 64 bits).
    pub value: u64,
    /// Bytes accessed.
    pub size: u8,
    /// A store.
    pub write: bool,
    /// The CPU.
    pub cpu: u32,
}

/// One observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// A hooked function's first instruction is about to run.
    Enter {
        /// Guest instruction count.
        ts: u64,
        /// Track.
        track: TrackKey,
        /// Stack pointer at entry (points at the return address).
        sp: u64,
        /// Function id in the profile.
        func: u32,
        /// Raw arguments.
        args: ArgsRef,
    },
    /// A `ret` is about to run.
    Return {
        /// Guest instruction count.
        ts: u64,
        /// Track.
        track: TrackKey,
        /// Stack pointer at the `ret` (points at the return address).
        sp: u64,
        /// Address of the `ret` instruction.
        pc: u64,
        /// The return value's eightbytes: rax and 0, rax and rdx (a struct of 9 to 16
        /// bytes), or a struct returned in memory's first 16 bytes.
        value: [u64; 2],
    },
    /// A thread track's identity (new, or changed: rename or stack reuse).
    Thread {
        /// Guest instruction count.
        ts: u64,
        /// The thread's track.
        track: TrackKey,
        /// Who it is.
        ident: ThreadIdent,
    },
    /// A CPU switched from one thread to another.
    Switch {
        /// Guest instruction count.
        ts: u64,
        /// The CPU.
        cpu: u32,
        /// Previous thread's track.
        from: TrackKey,
        /// Next thread's track.
        to: TrackKey,
    },
    /// The watched memory was accessed.
    Access {
        /// Guest instruction count.
        ts: u64,
        /// Track.
        track: TrackKey,
        /// The access.
        access: Access,
    },
}

impl Record {
    /// The record's timestamp.
    pub fn ts(&self) -> u64 {
        match *self {
            Record::Enter { ts, .. }
            | Record::Return { ts, .. }
            | Record::Thread { ts, .. }
            | Record::Switch { ts, .. }
            | Record::Access { ts, .. } => ts,
        }
    }
}

/// Records plus the bytes (strings) they refer to, shipped together.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records, in observation order.
    pub records: Vec<Record>,
    /// Strings read from guest memory (see [`Args::strings`]).
    pub arena: Vec<u8>,
    /// The entries' argument words (see [`ArgsRef`]).
    pub words: Vec<u64>,
    /// Records dropped under back-pressure just before this batch.
    pub dropped_before: u64,
}

impl Batch {
    /// An empty batch with room for `n` records.
    pub fn with_capacity(n: usize) -> Self {
        Batch {
            records: Vec::with_capacity(n),
            arena: Vec::with_capacity(n * 8),
            words: Vec::with_capacity(n * 2),
            dropped_before: 0,
        }
    }

    /// Empties it for reuse.
    pub fn clear(&mut self) {
        self.records.clear();
        self.arena.clear();
        self.words.clear();
        self.dropped_before = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_fits_a_cache_line() {
        // The observer writes one per event on the vCPU thread: its size is its cost.
        assert!(std::mem::size_of::<Record>() <= 64);
    }

    #[test]
    fn argument_words_are_loaded_from_the_batch() {
        let words = [7, 8, 9, 10];
        let args = ArgsRef {
            at: 1,
            len: 2,
            missing: 0b10,
            strings: 5,
        };
        let a = args.load(&words);
        assert_eq!(
            (&a.words[..3], a.len, a.missing, a.strings),
            (&[8, 9, 0][..], 2, 0b10, 5)
        );
        // Words past the batch's end are missing, not another entry's.
        let short = ArgsRef {
            at: 3,
            len: 3,
            ..args
        }
        .load(&words);
        assert_eq!((&short.words[..3], short.missing), (&[10, 0, 0][..], 0b110));
    }

    #[test]
    fn a_slice_of_the_words_says_what_load_says() {
        let words = [7, 8, 9, 10];
        for (at, len, missing) in [(1, 2, 0b10), (3, 3, 0), (0, 4, 0b1), (4, 2, 0), (9, 1, 0)] {
            let r = ArgsRef {
                at,
                len,
                missing,
                strings: 5,
            };
            let (a, s) = (r.load(&words), r.slice(&words));
            assert_eq!(s.words, &a.words[..s.words.len()], "{r:?}");
            assert_eq!((s.missing, s.strings), (a.missing, a.strings), "{r:?}");
            // Every word not in the slice is missing.
            assert!((s.words.len()..a.len as usize).all(|w| a.missing & (1 << w) != 0));
        }
    }
}

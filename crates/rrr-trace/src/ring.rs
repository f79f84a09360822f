//! A trace held within a size budget in one pass, like a flight recorder: the writer's
//! output goes to segment files on disk, and once they are over the budget the oldest go, so
//! the end of the replay (where a crash is) is kept with as much before it as fits.
//!
//! Each segment but the first has a head, made when it starts: what a trace that starts
//! there needs before its events (the sequence's start packet, the names interned so far,
//! the packet defaults, and a slice at its start for every call open then, on its described
//! track), and each but the last a tail, made when it ends: the end, there, of every call
//! open then. Parts the writer asks to keep (the crash and what follows it; the moments of a
//! crash's story) are kept whatever the budget, so the trace kept may have gaps: a kept
//! segment after a gap starts with its head, one before a gap ends with its tail. Otherwise
//! only the first kept segment's head is written out, and the bodies follow it, as they were
//! written.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A size budget and where its segments go while the trace is written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Budget {
    /// The most bytes the trace may have.
    pub bytes: u64,
    /// A directory for the segments (created; its segments are removed when the trace is
    /// finished).
    pub parts: PathBuf,
}

/// The segments a budget keeps never hold fewer than this many bytes (a batch of records is
/// tens of kilobytes of trace).
const MIN_SEGMENT: u64 = 256 << 10;
/// A segment is about this share of the budget: the trace kept is within one segment of it.
const SEGMENTS_PER_BUDGET: u64 = 32;

/// What a segment's head holds besides the interned names (see the module's doc).
#[derive(Debug, Default)]
pub(crate) struct Head {
    /// The sequence's start packet, at the segment's start.
    pub start: Vec<u8>,
    /// The packet defaults, the track descriptors and the slices of the open calls.
    pub rest: Vec<u8>,
    /// The slices it begins.
    pub events: u64,
}

struct Segment {
    index: u64,
    /// Its start, in trace time.
    from: u64,
    /// Its head's bytes, interned names included (none for the first segment: the trace's
    /// own start is in its body).
    head: u64,
    /// The slices its head begins.
    head_events: u64,
    /// Events written before it starts.
    events_before: u64,
    /// Its body's bytes.
    body: u64,
    /// Its body's events, and where it ends in trace time, once it ends.
    body_events: u64,
    to: u64,
    /// Its tail's bytes and events, once it ends.
    tail: u64,
    tail_events: u64,
}

/// A part of the replay a budget dropped between parts it kept, in trace times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Gap {
    /// Where the dropped part starts.
    pub from: u64,
    /// Where the next kept part starts.
    pub to: u64,
}

/// What a budget cut from a trace.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cut {
    /// Where the trace kept starts, in trace time.
    pub from: u64,
    /// The bytes of the whole trace.
    pub whole_bytes: u64,
    /// The events of the whole trace.
    pub whole_events: u64,
    /// The parts dropped between parts kept (the moments of a crash's story), in order.
    #[serde(default)]
    pub gaps: Vec<Gap>,
}

/// The segments of a trace written within a [`Budget`], in its `parts` directory: segment
/// N's body is `N.body`, its head `N.head` (the lengths of its start packet and of the
/// interned names it needs, 8 bytes each, little-endian, then its start packet and the rest),
/// and every name interned before the latest segment is in `interned`. So a run that dies
/// leaves what [`salvage`] makes a trace of.
pub(crate) struct Ring {
    dir: PathBuf,
    budget: u64,
    segment_bytes: u64,
    /// Finished segments still kept, oldest first.
    kept: VecDeque<Segment>,
    current: Segment,
    file: File,
    /// The interned names written to `interned`, and how many bytes.
    interned: File,
    interned_len: u64,
    /// Segments from this index on are never dropped (the crash is in them).
    pinned: Option<u64>,
    /// Segments kept alone, whatever the budget (a moment of a crash's story is in them).
    parts: Vec<u64>,
    /// Body bytes of every segment, dropped or not.
    written: u64,
}

impl Ring {
    /// Starts the first segment in `budget.parts`.
    pub fn create(budget: &Budget) -> std::io::Result<Ring> {
        let dir = budget.parts.clone();
        std::fs::create_dir_all(&dir).map_err(|e| in_path(&dir, e))?;
        let interned = dir.join(INTERNED);
        let interned = File::create(&interned).map_err(|e| in_path(&interned, e))?;
        let current = Segment {
            index: 0,
            from: 0,
            head: 0,
            head_events: 0,
            events_before: 0,
            body: 0,
            body_events: 0,
            to: 0,
            tail: 0,
            tail_events: 0,
        };
        let file = create(&dir, 0, BODY)?;
        Ok(Ring {
            segment_bytes: (budget.bytes / SEGMENTS_PER_BUDGET).max(MIN_SEGMENT),
            budget: budget.bytes,
            dir,
            kept: VecDeque::new(),
            current,
            file,
            interned,
            interned_len: 0,
            pinned: None,
            parts: Vec::new(),
            written: 0,
        })
    }

    /// Whether the current segment is full with `buffered` more bytes: the writer starts the
    /// next one.
    pub fn due(&self, buffered: u64) -> bool {
        self.current.body + buffered >= self.segment_bytes
    }

    /// Ends the current segment with `tail` (`tail_events` slice ends) and starts the next
    /// at trace time `from`, with `head`, `events_before` events written before it and the
    /// names `interned` so far; drops the oldest segments while the rest are over the budget.
    pub fn next(
        &mut self,
        from: u64,
        head: Head,
        (tail, tail_events): (Vec<u8>, u64),
        events_before: u64,
        interned: &[u8],
    ) -> std::io::Result<()> {
        self.file.flush()?;
        create(&self.dir, self.current.index, TAIL)?.write_all(&tail)?;
        self.current.tail = tail.len() as u64;
        self.current.tail_events = tail_events;
        self.current.body_events = events_before - self.current.events_before;
        self.current.to = from;
        self.interned
            .write_all(&interned[self.interned_len as usize..])?;
        self.interned_len = interned.len() as u64;
        let index = self.current.index + 1;
        let mut head_file = create(&self.dir, index, HEAD)?;
        head_file.write_all(&(head.start.len() as u64).to_le_bytes())?;
        head_file.write_all(&self.interned_len.to_le_bytes())?;
        head_file.write_all(&head.start)?;
        head_file.write_all(&head.rest)?;
        let file = create(&self.dir, index, BODY)?;
        let next = Segment {
            index,
            from,
            head: (head.start.len() + head.rest.len()) as u64 + self.interned_len,
            head_events: head.events,
            events_before,
            body: 0,
            body_events: 0,
            to: 0,
            tail: 0,
            tail_events: 0,
        };
        self.kept
            .push_back(std::mem::replace(&mut self.current, next));
        self.file = file;
        self.trim()
    }

    /// Keeps the current segment and every later one, whatever the budget.
    pub fn pin(&mut self) {
        self.pinned.get_or_insert(self.current.index);
    }

    /// Keeps the current segment, whatever the budget.
    pub fn keep_part(&mut self) {
        if !self.parts.contains(&self.current.index) {
            self.parts.push(self.current.index);
        }
    }

    /// Whether segment `index` is kept whatever the budget.
    fn pinned(&self, index: u64) -> bool {
        self.pinned.is_some_and(|p| index >= p) || self.parts.contains(&index)
    }

    /// The segments kept, oldest first, the current one last.
    fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.kept.iter().chain([&self.current])
    }

    /// The bytes of the trace the kept segments make: their bodies, the head of each that
    /// starts a run (but the trace's first), the tail of each that ends one before a gap.
    fn size(&self) -> u64 {
        let mut bytes = 0;
        let mut prev: Option<&Segment> = None;
        for s in self.segments() {
            let starts = prev.is_none_or(|p| p.index + 1 != s.index);
            if starts && s.index > 0 {
                bytes += s.head;
            }
            if let Some(p) = prev.filter(|_| starts) {
                bytes += p.tail;
            }
            bytes += s.body;
            prev = Some(s);
        }
        bytes
    }

    /// Drops the oldest segments while the trace they make is over the budget (never the
    /// current one, nor a pinned one).
    fn trim(&mut self) -> std::io::Result<()> {
        while self.size() > self.budget {
            let Some(at) = self.kept.iter().position(|s| !self.pinned(s.index)) else {
                break;
            };
            let index = self.kept[at].index;
            self.kept.remove(at);
            // The body first: a head without its body is no segment.
            for kind in [BODY, HEAD, TAIL] {
                let path = segment_path(&self.dir, index, kind);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(in_path(&path, e))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Ends the trace: drops what the budget does not hold, writes the kept segments to
    /// `out` (see [`salvage`]) and removes them. `events` were written in all. Returns the
    /// bytes and events kept, and what was cut, if anything was.
    pub fn finish(
        mut self,
        events: u64,
        out: &mut impl Write,
    ) -> std::io::Result<(u64, u64, Option<Cut>)> {
        self.file.flush()?;
        self.current.body_events = events - self.current.events_before;
        self.trim()?;
        let mut kept_events = 0;
        let mut gaps = Vec::new();
        let mut prev: Option<&Segment> = None;
        for s in self.segments() {
            let starts = prev.is_none_or(|p| p.index + 1 != s.index);
            if starts && s.index > 0 {
                kept_events += s.head_events;
            }
            if let Some(p) = prev.filter(|_| starts) {
                kept_events += p.tail_events;
                gaps.push(Gap {
                    from: p.to,
                    to: s.from,
                });
            }
            kept_events += s.body_events;
            prev = Some(s);
        }
        let first = self.kept.front().unwrap_or(&self.current);
        let cut = (first.index > 0 || !gaps.is_empty()).then_some(Cut {
            from: first.from,
            whole_bytes: self.written,
            whole_events: events,
            gaps,
        });
        drop(self.file);
        drop(self.interned);
        let bytes = salvage(&self.dir, out)?;
        Ok((bytes, kept_events, cut))
    }
}

impl Write for Ring {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.current.body += n as u64;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes the trace that the segments in `parts` make to `out`: the first one's head (with
/// the interned names it needs) unless it is the trace's first segment, then every body in
/// order; returns how many bytes. Removes `parts`. A run that died before it finished its
/// trace (see [`TraceWriter::set_budget`](crate::TraceWriter::set_budget)) leaves its
/// segments there.
pub fn salvage(parts: &Path, out: &mut impl Write) -> std::io::Result<u64> {
    let mut indices: Vec<u64> = std::fs::read_dir(parts)
        .map_err(|e| in_path(parts, e))?
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_suffix(BODY)?.parse().ok()
        })
        .collect();
    indices.sort_unstable();
    let mut bytes = 0;
    let mut prev: Option<u64> = None;
    for index in indices {
        let starts = prev.is_none_or(|p| p + 1 != index);
        if let Some(p) = prev.filter(|_| starts) {
            bytes += copy_file(&segment_path(parts, p, TAIL), out)?;
        }
        if starts && index > 0 {
            bytes += write_head(parts, index, out)?;
        }
        bytes += copy_file(&segment_path(parts, index, BODY), out)?;
        prev = Some(index);
    }
    out.flush()?;
    std::fs::remove_dir_all(parts).map_err(|e| in_path(parts, e))?;
    Ok(bytes)
}

/// Copies the file at `path` to `out`; returns how many bytes.
fn copy_file(path: &Path, out: &mut impl Write) -> std::io::Result<u64> {
    let mut file = File::open(path).map_err(|e| in_path(path, e))?;
    std::io::copy(&mut file, out)
}

/// Writes segment `index`'s head, with the interned names it needs, to `out`; returns how
/// many bytes.
fn write_head(parts: &Path, index: u64, out: &mut impl Write) -> std::io::Result<u64> {
    let path = segment_path(parts, index, HEAD);
    let head = std::fs::read(&path).map_err(|e| in_path(&path, e))?;
    let word = |at: usize| -> Option<usize> {
        Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?) as usize)
    };
    let bad = || in_path(&path, std::io::Error::other("not a segment head"));
    let (start, interned) = (word(0).ok_or_else(bad)?, word(8).ok_or_else(bad)?);
    let body = head
        .get(16..)
        .filter(|b| b.len() >= start)
        .ok_or_else(bad)?;
    out.write_all(&body[..start])?;
    let path = parts.join(INTERNED);
    let names = File::open(&path).map_err(|e| in_path(&path, e))?;
    let copied = std::io::copy(&mut names.take(interned as u64), out)?;
    if copied < interned as u64 {
        return Err(in_path(
            &path,
            std::io::Error::other("shorter than its heads say"),
        ));
    }
    out.write_all(&body[start..])?;
    Ok((body.len() + interned) as u64)
}

/// The interned names' file, and the suffixes of a segment's files.
const INTERNED: &str = "interned";
const HEAD: &str = ".head";
const BODY: &str = ".body";
const TAIL: &str = ".tail";

fn segment_path(dir: &Path, index: u64, kind: &str) -> PathBuf {
    dir.join(format!("{index:06}{kind}"))
}

fn create(dir: &Path, index: u64, kind: &str) -> std::io::Result<File> {
    let path = segment_path(dir, index, kind);
    File::create(&path).map_err(|e| in_path(&path, e))
}

/// `e`, saying which path it was about.
fn in_path(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes segments of `MIN_SEGMENT` bytes, each filled with its index, pinning at
    /// segment `pin`; returns the trace's bytes and what was cut.
    fn ring_of(segments: u8, budget: u64, pin: Option<u8>) -> (Vec<u8>, Option<Cut>) {
        ring_keeping(segments, budget, pin, &[])
    }

    /// [`ring_of`], also keeping the segments `parts`. Each segment's head is 0xff, its tail
    /// 0xee.
    fn ring_keeping(
        segments: u8,
        budget: u64,
        pin: Option<u8>,
        parts: &[u8],
    ) -> (Vec<u8>, Option<Cut>) {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = Ring::create(&Budget {
            bytes: budget,
            parts: dir.path().join("parts"),
        })
        .unwrap();
        for i in 0..segments {
            if i > 0 {
                let head = Head {
                    start: vec![0xff],
                    rest: Vec::new(),
                    events: 0,
                };
                ring.next(u64::from(i) * 100, head, (vec![0xee], 1), u64::from(i), &[])
                    .unwrap();
            }
            if pin == Some(i) {
                ring.pin();
            }
            if parts.contains(&i) {
                ring.keep_part();
            }
            ring.write_all(&vec![i; MIN_SEGMENT as usize]).unwrap();
        }
        let mut out = Vec::new();
        let (_, _, cut) = ring.finish(u64::from(segments), &mut out).unwrap();
        (out, cut)
    }

    #[test]
    fn the_oldest_segments_go_but_not_the_pinned_one_and_after() {
        let budget = 3 * MIN_SEGMENT + 1;
        // Within the budget: the last three segments, after the head of the first kept.
        let (out, cut) = ring_of(8, budget, None);
        assert_eq!(cut.map(|c| c.from), Some(500));
        assert_eq!(out.len() as u64, budget);
        assert_eq!((out[0], out[1], out[out.len() - 1]), (0xff, 5, 7));
        // A crash in segment 2 keeps segments 2 to 7, over the budget.
        let (out, cut) = ring_of(8, budget, Some(2));
        assert_eq!(cut.map(|c| c.from), Some(200));
        assert_eq!(out.len() as u64, 6 * MIN_SEGMENT + 1);
        assert_eq!((out[0], out[1]), (0xff, 2));
        // Nothing over the budget: the trace as written, no head.
        let (out, cut) = ring_of(2, budget, None);
        assert_eq!(cut, None);
        assert_eq!((out.len() as u64, out[0]), (2 * MIN_SEGMENT, 0));
    }

    /// The segments of `out` in order: for each run of one byte, the byte (heads and tails
    /// are one byte).
    fn runs(out: &[u8]) -> Vec<u8> {
        let mut runs: Vec<u8> = Vec::new();
        for &b in out {
            if runs.last() != Some(&b) || b >= 0xee {
                runs.push(b);
            }
        }
        runs
    }

    #[test]
    fn parts_kept_alone_stay_with_gaps_between() {
        let budget = 3 * MIN_SEGMENT + 1;
        // The story's parts in segments 1 and 3, the crash in 6: segments 1, 3 and 6 to 7
        // are kept, each run after a gap starting with its head, each before one ending with
        // its tail; the trace's first segment is not, so the first run starts with a head too.
        let (out, cut) = ring_keeping(8, budget, Some(6), &[1, 3]);
        assert_eq!(runs(&out), [0xff, 1, 0xee, 0xff, 3, 0xee, 0xff, 6, 7]);
        let cut = cut.unwrap();
        assert_eq!(cut.from, 100);
        assert_eq!(
            cut.gaps,
            [Gap { from: 200, to: 300 }, Gap { from: 400, to: 600 }]
        );
        // A kept part next to the end is no gap.
        let (out, cut) = ring_keeping(8, budget, None, &[5]);
        assert_eq!(runs(&out), [0xff, 5, 6, 7]);
        assert_eq!(cut.unwrap().gaps, []);
        // The trace's first segment kept: no head before it (its tail and the next head take
        // the room of segment 4).
        let (out, _) = ring_keeping(6, budget, None, &[0]);
        assert_eq!(runs(&out), [0, 0xee, 0xff, 5]);
    }
}

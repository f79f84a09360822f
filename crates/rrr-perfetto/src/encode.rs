//! Protobuf wire encoding for the hot packets (slice begin/end), written by hand.
//!
//! prost builds a message tree per packet and reached about 3M events/s in the writer
//! benchmark; writing the few fields of a TrackEvent straight into the output buffer is what
//! lets the writer keep up with an emulator (see `examples/writer_bench.rs`). Every other
//! packet is built with the prost types in [`super::proto`].

/// The wire type of varints.
pub const VARINT: u32 = 0;
/// The wire type of 64-bit fixed-size fields.
pub const FIXED64: u32 = 1;
/// The wire type of length-delimited fields.
pub const LEN: u32 = 2;

/// Appends protobuf fields to a byte buffer.
///
/// The buffer's pointer, length and capacity are copied into the encoder and only written
/// back when it is dropped. Byte stores through a `Vec`'s pointer may alias the `Vec`'s own
/// fields as far as the compiler knows, so appending to a `Vec` directly reloads its length
/// and capacity after every byte; an encoder that is a local of the function writing (never
/// passed by reference to code that is not inlined) keeps them in registers. With one
/// capacity check per group of fields instead of one per byte run, the writer benchmark's
/// instructions per event (callgrind) went from 914 to 508, and its events/s up by a third.
pub struct Enc<'a> {
    vec: &'a mut Vec<u8>,
    ptr: *mut u8,
    len: usize,
    cap: usize,
}

impl<'a> Enc<'a> {
    /// An encoder appending to `vec`.
    #[inline(always)]
    pub fn new(vec: &'a mut Vec<u8>) -> Self {
        let (ptr, len, cap) = (vec.as_mut_ptr(), vec.len(), vec.capacity());
        Enc { vec, ptr, len, cap }
    }

    /// Bytes in the buffer so far.
    #[inline(always)]
    pub fn position(&self) -> usize {
        self.len
    }

    /// Makes room for `n` more bytes and returns where they go.
    #[inline(always)]
    fn room(&mut self, n: usize) -> *mut u8 {
        if self.cap - self.len < n {
            (self.ptr, self.cap) = grow(self.vec, self.len, n);
        }
        // SAFETY: `len` is within the allocation (at most its capacity).
        unsafe { self.ptr.add(self.len) }
    }

    /// Writes the length back to the vector.
    #[inline(always)]
    fn sync(&mut self) {
        // SAFETY: every byte below `len` was written before `len` moved past it, and `len`
        // never exceeds the capacity (`room`).
        unsafe { self.vec.set_len(self.len) };
    }

    /// Appends varints (at most 10 bytes each) after one capacity check.
    #[inline(always)]
    pub fn varints<const N: usize>(&mut self, values: [u64; N]) {
        let start = self.room(10 * N);
        let mut p = start;
        // SAFETY: `N` varints take at most `10 * N` bytes, all within the room just made.
        unsafe {
            for v in values {
                p = put_varint(p, v);
            }
            self.len += p.offset_from(start) as usize;
        }
    }

    /// Appends a base-128 varint.
    #[inline(always)]
    pub fn varint(&mut self, v: u64) {
        self.varints([v]);
    }

    /// Appends a varint field.
    #[inline(always)]
    pub fn uint(&mut self, field: u32, v: u64) {
        self.varints([tag(field, VARINT), v]);
    }

    /// Opens a length-delimited field of at most `max` bytes (under 128: its length is one
    /// byte): returns where the field starts and where its body goes. The body is written
    /// by hand, then [`Enc::close_short`] sets the length. Two calls, not one taking the body
    /// as a closure: the closure was left as a call in the writer's hot loop once that grew.
    ///
    /// # Safety
    /// At most `max` bytes may be written at the body's pointer, and `max` must be under 128.
    #[inline(always)]
    unsafe fn open_short(&mut self, field: u32, max: usize) -> (*mut u8, *mut u8) {
        debug_assert!(max < 0x80);
        let start = self.room(MAX_TAG_LEN + 1 + max);
        // SAFETY: the tag and the length byte fit the room just made.
        unsafe {
            let at = put_varint(start, tag(field, LEN));
            (start, at)
        }
    }

    /// Closes a field [`Enc::open_short`] opened at `(start, at)`, its body ending at `end`.
    ///
    /// # Safety
    /// `(start, at)` must come from `open_short`, and the body written there must end at
    /// `end`, within its `max`.
    #[inline(always)]
    unsafe fn close_short(&mut self, (start, at): (*mut u8, *mut u8), end: *mut u8) {
        // SAFETY: the length byte is at `at`; the body is under 128 bytes.
        unsafe {
            *at = end.offset_from(at) as u8 - 1;
            self.len += end.offset_from(start) as usize;
        }
    }

    /// Appends a length-delimited field holding only the varint fields `fields`, as (field,
    /// value) pairs, in one go.
    #[inline(always)]
    pub fn message<const N: usize>(&mut self, field: u32, fields: [(u32, u64); N]) {
        const { assert!(N <= 5, "at most 5 fields keep the body under 128 bytes") };
        // SAFETY: each field is a tag and a varint, at most MAX_FIELD_LEN bytes; 5 of them
        // are under 128.
        unsafe {
            let open = self.open_short(field, MAX_FIELD_LEN * N);
            let mut p = open.1.add(1);
            for (f, v) in fields {
                p = put_varint(p, tag(f, VARINT));
                p = put_varint(p, v);
            }
            self.close_short(open, p);
        }
    }

    /// [`Enc::message`] of a name and a pointer, which in the kernel is 2^56 or more: its
    /// varint's first 8 bytes are spread out of the value in one register, without the byte
    /// loop's branch per byte, whose exit mispredicts when pointers and small integers
    /// alternate (the only call site, so that the wider code is not inlined everywhere).
    #[inline(always)]
    pub fn named_pointer(&mut self, field: u32, name: (u32, u64), pointer: (u32, u64)) {
        if pointer.1 < 1 << 56 {
            return self.message(field, [name, pointer]);
        }
        // SAFETY: two fields of at most MAX_FIELD_LEN bytes each.
        unsafe {
            let open = self.open_short(field, 2 * MAX_FIELD_LEN);
            let mut p = open.1.add(1);
            p = put_varint(p, tag(name.0, VARINT));
            p = put_varint(p, name.1);
            p = put_varint(p, tag(pointer.0, VARINT));
            p = put_varint_wide(p, pointer.1);
            self.close_short(open, p);
        }
    }

    /// Appends a fixed64 field.
    #[inline(always)]
    pub fn fixed64(&mut self, field: u32, v: u64) {
        self.varint(tag(field, FIXED64));
        self.raw(&v.to_le_bytes());
    }

    /// Appends a length-delimited field holding `b`.
    #[inline(always)]
    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        self.varints([tag(field, LEN), b.len() as u64]);
        self.raw(b);
    }

    /// Appends bytes as they are.
    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        let p = self.room(b.len());
        // SAFETY: `b.len()` bytes of room; `b` cannot overlap the spare capacity.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len()) };
        self.len += b.len();
    }

    /// Starts a length-delimited field; returns the position of its one-byte length.
    #[inline(always)]
    pub fn open(&mut self, field: u32) -> usize {
        self.varints([tag(field, LEN), 0]);
        self.len - 1
    }

    /// Ends a field opened at `at`, widening the length prefix if the body is 128 bytes or
    /// more (rare: most packets are small).
    #[inline(always)]
    pub fn close(&mut self, at: usize) {
        assert!(at < self.len, "closing a field that was not opened here");
        let len = self.len - at - 1;
        if len < 0x80 {
            // SAFETY: `at` is below `len`, so within the written bytes.
            unsafe { *self.ptr.add(at) = len as u8 };
        } else {
            self.widen(at, len);
        }
    }

    /// Ends a field opened at `inner` and the field around it opened at `outer` (a packet and
    /// its event): one check for both.
    #[inline(always)]
    pub fn close_pair(&mut self, inner: usize, outer: usize) {
        assert!(
            outer < inner && inner < self.len,
            "closing fields that were not opened here"
        );
        let outer_len = self.len - outer - 1;
        if outer_len < 0x80 {
            // SAFETY: both positions are below `len`, so within the written bytes; the inner
            // field is shorter than the outer one.
            unsafe {
                *self.ptr.add(inner) = (self.len - inner - 1) as u8;
                *self.ptr.add(outer) = outer_len as u8;
            }
        } else {
            self.close(inner);
            self.close(outer);
        }
    }

    /// Rewrites the one-byte length prefix at `at` as the varint of `len`.
    #[inline(always)]
    fn widen(&mut self, at: usize, len: usize) {
        self.sync();
        (self.ptr, self.len, self.cap) = widen(self.vec, at, len);
    }
}

/// The longest tag: the varint of a 32-bit field number shifted left by 3.
const MAX_TAG_LEN: usize = 5;
/// The longest varint field: a tag and a 10-byte varint.
const MAX_FIELD_LEN: usize = MAX_TAG_LEN + 10;

/// A field's tag.
#[inline(always)]
pub(crate) fn tag(field: u32, wire: u32) -> u64 {
    ((field << 3) | wire) as u64
}

/// Writes `v` as a base-128 varint at `p`; returns the end.
///
/// # Safety
/// `p` must have room for 10 bytes.
#[inline(always)]
unsafe fn put_varint(mut p: *mut u8, mut v: u64) -> *mut u8 {
    // SAFETY: at most 10 bytes, which the caller has room for.
    unsafe {
        while v >= 0x80 {
            *p = v as u8 | 0x80;
            v >>= 7;
            p = p.add(1);
        }
        *p = v as u8;
        p.add(1)
    }
}

/// [`put_varint`] of a value of 2^56 or more.
///
/// # Safety
/// `p` must have room for 10 bytes.
#[inline(always)]
unsafe fn put_varint_wide(p: *mut u8, v: u64) -> *mut u8 {
    debug_assert!(v >= 1 << 56);
    let mut head = 0u64;
    for i in 0..8 {
        head |= ((v >> (7 * i)) & 0x7f) << (8 * i);
    }
    head |= 0x8080_8080_8080_8080;
    let top = v >> 56;
    // SAFETY: 8 + at most 2 bytes, which the caller has room for.
    unsafe {
        p.cast::<[u8; 8]>().write_unaligned(head.to_le_bytes());
        if top < 0x80 {
            *p.add(8) = top as u8;
            p.add(9)
        } else {
            *p.add(8) = top as u8 | 0x80;
            *p.add(9) = 1;
            p.add(10)
        }
    }
}

// The encoder's slow paths take and return values, never the encoder itself: were its
// address passed on, it would have to live in memory, and every byte stored through its
// pointer would reload its fields again.

/// Grows `vec`, holding `len` bytes, by at least `n`; returns its pointer and capacity.
#[cold]
#[inline(never)]
fn grow(vec: &mut Vec<u8>, len: usize, n: usize) -> (*mut u8, usize) {
    // SAFETY: the encoder wrote every byte below `len`, within the capacity.
    unsafe { vec.set_len(len) };
    vec.reserve(n.max(4096));
    (vec.as_mut_ptr(), vec.capacity())
}

/// Rewrites the one-byte length prefix at `at` as the varint of `len`; returns the vector's
/// pointer, length and capacity.
#[cold]
#[inline(never)]
fn widen(vec: &mut Vec<u8>, at: usize, len: usize) -> (*mut u8, usize, usize) {
    let mut prefix = Vec::with_capacity(4);
    let mut v = len as u64;
    while v >= 0x80 {
        prefix.push(v as u8 | 0x80);
        v >>= 7;
    }
    prefix.push(v as u8);
    vec.splice(at..at + 1, prefix);
    (vec.as_mut_ptr(), vec.len(), vec.capacity())
}

impl Drop for Enc<'_> {
    fn drop(&mut self) {
        self.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The highest field number protobuf allows.
    const MAX_FIELD: u32 = (1 << 29) - 1;

    #[test]
    fn varints_match_prost() {
        let mut values = vec![0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::MAX, 1 << 63];
        for shift in 0..64 {
            values.extend([1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1]);
        }
        values.extend([0xffff_8880_0014_1c05, 0xffff_ffff_810d_7f8d, 0x1008_b010]);
        for v in values {
            let mut got = Vec::new();
            Enc::new(&mut got).varint(v);
            let mut want = Vec::new();
            prost::encoding::encode_varint(v, &mut want);
            assert_eq!(got, want, "{v:#x}");
        }
    }

    #[test]
    fn messages_with_the_widest_tags_and_values_match_prost() {
        use prost::encoding::{encode_key, encode_varint, WireType};
        let fields = [
            (1, 0),
            (15, 300),
            (16, u64::MAX),
            (2047, 1 << 63),
            (MAX_FIELD, u64::MAX),
        ];
        let mut got = Vec::new();
        Enc::new(&mut got).message(MAX_FIELD, fields);
        let mut body = Vec::new();
        for (f, v) in fields {
            encode_key(f, WireType::Varint, &mut body);
            encode_varint(v, &mut body);
        }
        let mut want = Vec::new();
        encode_key(MAX_FIELD, WireType::LengthDelimited, &mut want);
        encode_varint(body.len() as u64, &mut want);
        want.extend(body);
        assert_eq!(got, want);
    }

    #[test]
    fn named_pointers_match_messages() {
        let mut values = vec![0, 1, 0x7fff_0000_1000, u64::MAX, 1 << 63, 1 << 56];
        for shift in 56..64 {
            values.extend([
                1u64 << shift,
                (1u64 << shift) - 1,
                (1u64 << shift) + 0x1234_5678,
            ]);
        }
        values.extend([
            0xffff_8880_0014_1c05,
            0xffff_ffff_810d_7f8d,
            0xffff_c900_0001_3e80,
        ]);
        for v in values {
            let (mut got, mut want) = (Vec::new(), Vec::new());
            Enc::new(&mut got).named_pointer(4, (1, 300), (7, v));
            Enc::new(&mut want).message(4, [(1, 300), (7, v)]);
            assert_eq!(got, want, "{v:#x}");
        }
    }

    #[test]
    fn close_pair_matches_two_closes() {
        for body in [0usize, 5, 120, 126, 127, 300] {
            let (mut got, mut want) = (vec![7u8], vec![7u8]);
            for (out, pair) in [(&mut got, true), (&mut want, false)] {
                let mut e = Enc::new(out);
                let p = e.open(1);
                e.uint(10, 1);
                let te = e.open(11);
                e.bytes(3, &vec![b'x'; body]);
                if pair {
                    e.close_pair(te, p);
                } else {
                    e.close(te);
                    e.close(p);
                }
            }
            assert_eq!(got, want, "body of {body} bytes");
        }
    }

    #[test]
    fn long_nested_fields_match_prost() {
        let mut got = Vec::new();
        let mut e = Enc::new(&mut got);
        let p = e.open(1);
        let q = e.open(2);
        e.bytes(3, &[b'x'; 300]);
        e.close(q);
        e.uint(4, 1 << 40);
        e.fixed64(5, 7);
        e.close(p);
        drop(e);

        #[derive(Clone, PartialEq, prost::Message)]
        struct Inner {
            #[prost(bytes, tag = "3")]
            b: Vec<u8>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Outer {
            #[prost(message, optional, tag = "2")]
            inner: Option<Inner>,
            #[prost(uint64, tag = "4")]
            v: u64,
            #[prost(fixed64, tag = "5")]
            f: u64,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        struct Top {
            #[prost(message, optional, tag = "1")]
            outer: Option<Outer>,
        }
        let want = Top {
            outer: Some(Outer {
                inner: Some(Inner { b: vec![b'x'; 300] }),
                v: 1 << 40,
                f: 7,
            }),
        };
        assert_eq!(got, want.encode_to_vec());
    }
}

//! Protobuf wire encoding for the hot packets (slice begin/end), written by hand.
//!
//! prost builds a message tree per packet and reached about 3M events/s in the writer
//! benchmark; writing the few fields of a TrackEvent straight into the output buffer is what
//! lets the writer keep up with an emulator (see `examples/writer_bench.rs`). Every other
//! packet is built with the prost types in [`crate::proto`].

/// Wire types.
pub const VARINT: u32 = 0;
pub const FIXED64: u32 = 1;
pub const LEN: u32 = 2;

/// An output buffer of whole packets.
#[derive(Default)]
pub struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    /// Appends a base-128 varint. Written into the spare capacity directly: the writer
    /// benchmark spent 8% of its time here with `push`/`extend_from_slice`.
    #[inline]
    pub fn varint(&mut self, mut v: u64) {
        self.buf.reserve(10);
        let len = self.buf.len();
        let spare = self.buf.spare_capacity_mut();
        let mut i = 0;
        while v >= 0x80 {
            spare[i].write(v as u8 | 0x80);
            v >>= 7;
            i += 1;
        }
        spare[i].write(v as u8);
        // SAFETY: bytes len..=len+i were initialised just above, within the reserved capacity.
        unsafe { self.buf.set_len(len + i + 1) };
    }

    #[inline]
    pub fn tag(&mut self, field: u32, wire: u32) {
        self.varint(((field << 3) | wire) as u64);
    }

    #[inline]
    pub fn uint(&mut self, field: u32, v: u64) {
        self.tag(field, VARINT);
        self.varint(v);
    }

    #[inline]
    pub fn fixed64(&mut self, field: u32, v: u64) {
        self.tag(field, FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, LEN);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// Starts a length-delimited field; returns the position of its one-byte length.
    #[inline]
    pub fn open(&mut self, field: u32) -> usize {
        self.tag(field, LEN);
        self.buf.push(0);
        self.buf.len() - 1
    }

    /// Ends a field opened at `at`, widening the length prefix if the body is 128 bytes or
    /// more (rare: most packets are small).
    #[inline]
    pub fn close(&mut self, at: usize) {
        let len = self.buf.len() - at - 1;
        if len < 0x80 {
            self.buf[at] = len as u8;
            return;
        }
        let mut prefix = Vec::with_capacity(4);
        let mut v = len as u64;
        while v >= 0x80 {
            prefix.push(v as u8 | 0x80);
            v >>= 7;
        }
        prefix.push(v as u8);
        self.buf.splice(at..at + 1, prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn varints_match_prost() {
        let mut values = vec![0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::MAX, 1 << 63];
        for shift in 0..64 {
            values.extend([1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1]);
        }
        values.extend([0xffff_8880_0014_1c05, 0xffff_ffff_810d_7f8d, 0x1008_b010]);
        for v in values {
            let mut e = Enc::default();
            e.varint(v);
            let mut want = Vec::new();
            prost::encoding::encode_varint(v, &mut want);
            assert_eq!(e.buf, want, "{v:#x}");
        }
    }

    #[test]
    fn long_nested_fields_match_prost() {
        let mut e = Enc::default();
        let p = e.open(1);
        let q = e.open(2);
        e.bytes(3, &[b'x'; 300]);
        e.close(q);
        e.uint(4, 1 << 40);
        e.fixed64(5, 7);
        e.close(p);

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
        assert_eq!(e.buf, want.encode_to_vec());
    }
}

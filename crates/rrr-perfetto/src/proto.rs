//! Perfetto's trace schema (our subset in `protos/perfetto_trace.proto`), built by prost. Used
//! for the packets that are not on the hot path and for decoding traces in tests.
#![allow(missing_docs, clippy::all)]
include!(concat!(env!("OUT_DIR"), "/perfetto.protos.rs"));

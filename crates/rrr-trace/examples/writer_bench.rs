//! Writer benchmark: the writer thread's work alone (shadow stacks, decoding, encoding,
//! buffered output) on a synthetic kernel-like stream: names from a 50k-function table,
//! 0-6 parameters per function (2.2 on average, as in a distro kernel), mixed types, deep
//! nesting, eight threads and context switches. Prints one final line
//! `events_per_sec=<N> bytes_per_event=<B>`.
//!
//! Run: `cargo run --release --example writer_bench -p rrr-trace [-- EVENTS]`; with
//! `RRR_BENCH_HOT_FUNCS=N` calls go to N functions only (a cache-resident hot set).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use osi_profile::{Class, ClassRef, Function, Location, Param, Profile, ProfileData, TypeDesc};
use rrr_trace::record::{ArgsRef, Batch};
use rrr_trace::{Record, ThreadIdent, TraceWriter, TrackKey};

/// xorshift64*: a deterministic stream without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const FUNCS: usize = 50_000;
const THREADS: u64 = 8;

fn profile(rng: &mut Rng) -> Arc<Profile> {
    let classes = [
        ("struct file *", Class::StructPtr("struct file".into())),
        ("int", Class::Signed(4)),
        ("unsigned long", Class::Unsigned(8)),
        ("void *", Class::Pointer),
        ("const char *", Class::CharPtr),
        ("_Bool", Class::Bool),
        ("struct inode *", Class::StructPtr("struct inode".into())),
        ("unsigned int", Class::Unsigned(4)),
    ];
    let names = [
        "file", "flags", "size", "ptr", "name", "force", "inode", "mode", "count", "pos",
    ];
    let regs = [5u16, 4, 1, 2, 8, 9];
    let mut d = ProfileData::default();
    for i in 0..FUNCS {
        // 0-6 parameters, skewed low: mean about 2.2.
        let n = [0, 1, 1, 2, 2, 2, 3, 3, 4, 6][rng.below(10) as usize];
        let params = (0..n)
            .map(|p| {
                let (c, class) = classes[rng.below(classes.len() as u64) as usize].clone();
                Param {
                    name: names[rng.below(names.len() as u64) as usize].into(),
                    ty: TypeDesc {
                        c_type: c.into(),
                        class,
                    },
                    loc: Location::Reg(regs[p]),
                }
            })
            .collect();
        let ret = if rng.below(3) == 0 {
            TypeDesc::void()
        } else {
            TypeDesc {
                c_type: "int".into(),
                class: Class::Signed(4),
            }
        };
        d.functions.push(Function {
            name: format!("kernel_function_{i}"),
            entry: 0xffff_ffff_8100_0000 + i as u64 * 0x40,
            size: 0x40,
            file: None,
            line: 0,
            ret,
            params,
            flags: 0,
        });
    }
    d.finish();
    Arc::new(Profile::from_bytes(&d.to_bytes()).expect("valid profile"))
}

/// Generates the stream one batch at a time, as the engine would fill them.
struct Stream {
    rng: Rng,
    depth: Vec<u64>,
    cur: u64,
    ts: u64,
    started: bool,
    /// Draw functions from the first N only (a hot set), instead of all 50k uniformly.
    hot: Option<u64>,
}

fn stack(t: u64) -> u64 {
    0xffff_c900_0000_0000 + (t + 1) * 0x4000
}

impl Stream {
    fn new(rng: Rng) -> Self {
        Stream {
            rng,
            depth: vec![0; THREADS as usize],
            cur: 0,
            ts: 1_000_000,
            started: false,
            hot: std::env::var("RRR_BENCH_HOT_FUNCS")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Refills `b` with 4096 records.
    fn fill(&mut self, profile: &Profile, b: &mut Batch) {
        b.clear();
        if !self.started {
            self.started = true;
            for t in 0..THREADS {
                let mut comm = [0u8; 16];
                comm[..6].copy_from_slice(b"worker");
                let ident = ThreadIdent {
                    tid: 100 + t as i32,
                    pid: 100,
                    comm,
                    kernel: false,
                };
                b.records.push(Record::Thread {
                    ts: self.ts,
                    track: TrackKey::Thread(stack(t)),
                    ident,
                });
            }
        }
        let rng = &mut self.rng;
        while b.records.len() < 4096 {
            self.ts += 1 + rng.below(60);
            let ts = self.ts;
            let track = TrackKey::Thread(stack(self.cur));
            if rng.below(3000) == 0 {
                let next = rng.below(THREADS);
                if next != self.cur {
                    b.records.push(Record::Switch {
                        ts,
                        cpu: 0,
                        from: track,
                        to: TrackKey::Thread(stack(next)),
                    });
                    self.cur = next;
                    continue;
                }
            }
            let d = &mut self.depth[self.cur as usize];
            let sp = stack(self.cur) + 0x3f00 - *d * 0x40;
            let enter = *d == 0 || (*d < 40 && rng.below(100) < 50);
            if enter {
                let func = rng.below(self.hot.unwrap_or(FUNCS as u64)) as u32;
                let f = profile.function(func).expect("in range");
                let mut args = ArgsRef {
                    at: b.words.len() as u32,
                    strings: b.arena.len() as u32,
                    ..ArgsRef::default()
                };
                for p in f.params() {
                    b.words.push(match p.class() {
                        ClassRef::Signed(_) | ClassRef::Unsigned(_) => rng.below(4096),
                        ClassRef::Bool => rng.below(2),
                        _ => 0xffff_8880_0000_0000 | (rng.below(1 << 30) << 3),
                    });
                    if p.class() == ClassRef::CharPtr {
                        let s: &[u8] = if rng.below(2) == 0 {
                            b"/dev/null"
                        } else {
                            b"eth0"
                        };
                        b.arena.extend_from_slice(&(s.len() as u16).to_le_bytes());
                        b.arena.extend_from_slice(s);
                    }
                }
                args.len = f.param_count() as u8;
                b.records.push(Record::Enter {
                    ts,
                    track,
                    sp: sp - 0x40,
                    func,
                    args,
                });
                *d += 1;
            } else {
                b.records.push(Record::Return {
                    ts,
                    track,
                    sp,
                    pc: 0,
                    value: [rng.below(64), 0],
                });
                *d -= 1;
            }
        }
    }
}

/// Counts bytes, keeps none (the writer's own buffering is what is measured).
struct Sink(u64);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let profile = profile(&mut rng);
    // The stream is generated on its own thread and handed over in batches, as the engine
    // thread does: the generator's work (and its cache traffic) stays off the writer's core.
    // Spent batches go back to be refilled, so no allocation is timed either.
    let (full_tx, full_rx) = crossbeam_channel::bounded::<Batch>(8);
    let (empty_tx, empty_rx) = crossbeam_channel::bounded::<Batch>(16);
    for _ in 0..16 {
        empty_tx
            .send(Batch::with_capacity(4096))
            .expect("room for 16");
    }
    let gen_profile = Arc::clone(&profile);
    let generator = std::thread::spawn(move || {
        let mut stream = Stream::new(rng);
        while let Ok(mut batch) = empty_rx.recv() {
            stream.fill(&gen_profile, &mut batch);
            if full_tx.send(batch).is_err() {
                break;
            }
        }
    });
    let mut writer = TraceWriter::new(Sink(0), Arc::clone(&profile));
    // Only the writer's work is timed, not its waits for the next batch.
    let mut busy = Duration::ZERO;
    while writer.events() < events {
        let batch = full_rx
            .recv()
            .expect("the generator runs until told to stop");
        let t = Instant::now();
        writer.write_batch(&batch).expect("sink never fails");
        busy += t.elapsed();
        // The generator may be blocked on a full channel with no empty batch: ignore a
        // closed or full return path at the end.
        let _ = empty_tx.try_send(batch);
    }
    drop(full_rx);
    drop(empty_tx);
    generator.join().expect("generator thread");
    let t = Instant::now();
    let summary = writer.finish().expect("sink never fails");
    busy += t.elapsed();
    let secs = busy.as_secs_f64();
    eprintln!(
        "{} events ({} tracks), writer busy {:.3} s, {} bytes",
        summary.events, summary.tracks, secs, summary.bytes
    );
    println!(
        "events_per_sec={:.0} bytes_per_event={:.1}",
        summary.events as f64 / secs,
        summary.bytes as f64 / summary.events as f64
    );
}

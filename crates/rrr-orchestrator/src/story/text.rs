//! The story for people.

use std::fmt::Write as _;
use std::path::Path;

use super::{Step, Story};

impl Story {
    /// The story for people.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.title);
        let _ = writeln!(s, "watched: {}", self.watched);
        if let Some(b) = self.bad_access.as_ref().filter(|_| self.refcount.is_none()) {
            let what = match b.what.as_str() {
                "bad-write" => "bad write (reported by the sanitizer)",
                "bad-read" => "bad read (reported by the sanitizer)",
                other => other,
            };
            let _ = writeln!(
                s,
                "\nthe bad access: {what} of {} bytes at {}",
                b.size, b.addr
            );
            step_text(&mut s, b);
        }
        if let Some(o) = &self.object {
            let _ = write!(s, "\nthe object: {} bytes at {}", o.size, o.addr);
            if let Some(cache) = &o.cache {
                let _ = write!(s, " (cache {cache})");
            }
            if let Some(asked) = o.asked {
                let _ = write!(s, ", {asked} bytes asked for");
            }
            if let Some(off) = o.offset {
                let past = off - o.size as i64;
                if off >= o.size as i64 {
                    let _ = write!(
                        s,
                        "; the access is at offset {off}, {past} bytes past its end"
                    );
                } else if off < 0 {
                    let _ = write!(s, "; the access is {} bytes before its start", -off);
                } else {
                    let _ = write!(s, "; the access is at offset {off}");
                }
            }
            let _ = writeln!(s);
        }
        match &self.allocation {
            Some(a) => {
                let _ = writeln!(s, "\nallocated ({} bytes asked for):", a.size);
                step_text(&mut s, a);
            }
            None if self.refcount.is_none() && !self.watched.is_empty() => {
                let _ = writeln!(s, "\nallocated: not in the replay");
            }
            None => {}
        }
        for f in &self.frees {
            let _ = writeln!(s, "\nfreed:");
            step_text(&mut s, f);
        }
        for w in &self.writes_after_free {
            let _ = writeln!(
                s,
                "\nwritten after the last free: {} bytes = {}",
                w.size,
                w.value.as_deref().unwrap_or("?")
            );
            step_text(&mut s, w);
        }
        if let Some(r) = &self.refcount {
            let _ = writeln!(s, "\nthe refcount at {}: {}", r.addr, r.warning);
            for (i, c) in r.changes.iter().enumerate() {
                let value = c.value.as_deref().unwrap_or("?");
                let count = u64::from_str_radix(value.trim_start_matches("0x"), 16)
                    .map_or(value.to_owned(), |v| (v as u32 as i32).to_string());
                let below = if r.below_one == Some(i) {
                    "  <- below one"
                } else {
                    ""
                };
                let _ = writeln!(s, "\n{}. set to {count}{below}", i + 1);
                step_text(&mut s, c);
            }
        }
        let _ = writeln!(s, "\nthreads: {}", self.threads.summary);
        let l = &self.left_out;
        if l.sanitizer + l.allocator + l.earlier_life > 0 {
            let _ = writeln!(
                s,
                "left out: {} accesses by the sanitizer, {} by the allocator, {} before the \
                 object's allocation (`rrr watch ... --all` lists them)",
                l.sanitizer, l.allocator, l.earlier_life
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

/// A step's lines in the text.
fn step_text(s: &mut String, step: &Step) {
    let t = &step.thread;
    let cpu = step.cpu.map_or(String::new(), |c| format!(" cpu {c}"));
    let _ = writeln!(
        s,
        "  at {} by {} (pid {} tid {}){cpu}",
        step.ts, t.comm, t.pid, t.tid
    );
    if let Some(place) = &step.place {
        let _ = writeln!(s, "  in {place}");
    }
    if let Some(c) = &step.call {
        let syscall = c.syscall.as_deref().unwrap_or("a syscall");
        match (&c.file, c.line) {
            (Some(file), Some(line)) => {
                let name = Path::new(file)
                    .file_name()
                    .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
                let guess = if c.exact {
                    ""
                } else {
                    " (the function's first line naming it)"
                };
                let _ = writeln!(
                    s,
                    "  from the reproducer's {syscall} in {} ({name}:{line}{guess}): {}",
                    c.function,
                    c.source.as_deref().unwrap_or("")
                );
            }
            _ => {
                let _ = writeln!(s, "  from the reproducer's {syscall} in {}", c.function);
            }
        }
    }
    for f in &step.stack {
        let _ = writeln!(s, "    {f}");
    }
}

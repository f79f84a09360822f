//! Profile benchmark: builds the profile of a vmlinux (all cores), then times opening the
//! written profile and a lookup, as a tracer does at start-up. Prints one final line
//! `build_secs=<S> functions=<N> params=<P> load_ms=<M>`. Peak RSS: run under
//! `/usr/bin/time -v`.
//!
//! Run: `cargo run --release --example profile_bench -p osi-profile -- VMLINUX`
//! (e.g. the Debian package linux-image-6.1.0-*-amd64-dbg's
//! /usr/lib/debug/boot/vmlinux-*).

use std::time::Instant;

fn main() {
    let Some(vmlinux) = std::env::args().nth(1) else {
        eprintln!("usage: profile_bench VMLINUX");
        std::process::exit(2);
    };
    let dir = std::env::temp_dir().join(format!("rrr-profile-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("vmlinux.rrrprof");
    let t = Instant::now();
    let profile = osi_profile::build(vmlinux.as_ref(), &out, &osi_profile::Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let build = t.elapsed().as_secs_f64();
    let functions = profile.len();
    let params: usize = profile.functions().map(|f| f.param_count()).sum();
    drop(profile);
    let t = Instant::now();
    let p = osi_profile::Profile::open(&out).expect("written above");
    let found = p
        .function_by_name("do_sys_openat2")
        .or(p.function_by_name("schedule"));
    let load = t.elapsed().as_secs_f64() * 1e3;
    assert!(found.is_some(), "no well-known function in the profile");
    std::fs::remove_dir_all(&dir).ok();
    println!("build_secs={build:.3} functions={functions} params={params} load_ms={load:.3}");
}

//! Profiles of small C programs compiled here with gcc and clang, DWARF 4 and 5, at -O2:
//! exact TSV lines, decode classes, and entry addresses checked against `nm`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use osi_profile::{ClassRef, Location, Options, Profile, ProfileError};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kinds.c")
}

fn compile(dir: &Path, cc: &str, args: &[&str], out: &str) -> PathBuf {
    let path = dir.join(out);
    let status = Command::new(cc)
        .args(args)
        .arg("-o")
        .arg(&path)
        .arg(fixture())
        .status()
        .unwrap_or_else(|e| panic!("running {cc} (install it with scripts/setup): {e}"));
    assert!(status.success(), "{cc} {args:?} failed");
    path
}

fn profile(path: &Path) -> Profile {
    let data = osi_profile::read(path, &Options::default()).unwrap();
    Profile::from_bytes(&data.to_bytes()).unwrap()
}

/// Function symbol addresses according to binutils.
fn nm(path: &Path) -> HashMap<String, u64> {
    let out = Command::new("nm")
        .arg(path)
        .output()
        .expect("running nm (binutils)");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (addr, kind, name) = (it.next()?, it.next()?, it.next()?);
            let addr = u64::from_str_radix(addr, 16).ok()?;
            matches!(kind, "T" | "t").then(|| (name.to_owned(), addr))
        })
        .collect()
}

fn check(cc: &str, dwarf: u8, want: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let flag = format!("-gdwarf-{dwarf}");
    let bin = compile(dir.path(), cc, &["-O2", &flag], "kinds");
    let p = profile(&bin);
    let syms = nm(&bin);
    for line in want {
        let name = line.split('\t').next().unwrap();
        let id = p
            .function_by_name(name)
            .unwrap_or_else(|| panic!("{cc} dwarf{dwarf}: no {name}"));
        let f = p.function(id).unwrap();
        assert_eq!(
            Some(&f.entry()),
            syms.get(name),
            "{cc} dwarf{dwarf}: entry of {name}"
        );
        let got = osi_profile::tsv_line(&f);
        assert_eq!(
            got,
            format!("{:#x}\t{line}", f.entry()),
            "{cc} dwarf{dwarf}"
        );
    }
    // Decode classes, beyond what the TSV shows.
    let class = |func: &str| -> Vec<ClassRef<'_>> {
        p.function(p.function_by_name(func).unwrap())
            .unwrap()
            .params()
            .map(|q| q.class())
            .collect()
    };
    assert_eq!(
        class("ints"),
        [
            ClassRef::Signed(1),
            ClassRef::Unsigned(1),
            ClassRef::Signed(2),
            ClassRef::Unsigned(2),
            ClassRef::Signed(4),
            ClassRef::Unsigned(4),
        ]
    );
    let longs = class("longs");
    assert_eq!(
        (longs[0], longs[1], longs[2], longs[4]),
        (
            ClassRef::Signed(8),
            ClassRef::Unsigned(8),
            ClassRef::Bool,
            ClassRef::Unsigned(8)
        )
    );
    let ClassRef::Enum(table) = longs[3] else {
        panic!("col is not an enum: {:?}", longs[3])
    };
    assert_eq!(
        [-1, 0, 5].map(|v| p.enum_name(table, v)),
        [Some("BLUE"), Some("RED"), Some("GREEN")]
    );
    assert_eq!(
        class("strs"),
        [ClassRef::CharPtr, ClassRef::CharPtr, ClassRef::Pointer]
    );
    assert_eq!(
        class("structs"),
        [
            ClassRef::StructPtr("struct node"),
            ClassRef::StructByValue(16),
            ClassRef::StructByValue(24),
            ClassRef::Pointer,
        ]
    );
    let structs = p.function(p.function_by_name("structs").unwrap()).unwrap();
    assert_eq!(structs.ret_class(), ClassRef::StructPtr("struct node"));
    assert!(structs.file().ends_with("kinds.c") && structs.line() > 0);
    // Assembly-only code is listed by name.
    let start = p.function(p.function_by_name("_start").unwrap()).unwrap();
    assert_eq!(
        (
            start.param_count(),
            start.flags() & osi_profile::flags::SYMBOL_ONLY != 0
        ),
        (0, true)
    );
}

const GCC: &[&str] = &[
    "main\tint\tint argc@rdi;char ** argv@rsi",
    "ints\tint\tsigned char a@rdi;unsigned char b@rsi;short int c@rdx;short unsigned int d@rcx;int e@r8;unsigned int f@r9",
    "longs\tlong int\tlong int a@rdi;long long unsigned int b@rsi;_Bool c@rdx;enum color col@rcx;ulong_t u@r8",
    "strs\tsize_t\tconst char * s@rdi;char * t@rsi;const unsigned char * u@rdx",
    "structs\tstruct node *\tstruct node * n@rdi;struct point p@rsi:rdx;struct big b@stack+8;void * v@rcx",
    "many\tlong int\tlong int a1@rdi;long int a2@rsi;long int a3@rdx;long int a4@rcx;long int a5@r8;long int a6@r9;long int a7@stack+8;int a8@stack+16",
    "pick\tenum color\tenum color c@rdi;_Bool flip@rsi",
    // A clone: its own symbol name, locations from DWARF at its entry; a parameter it does not
    // receive is what each call site says (`DW_OP_GNU_parameter_ref`).
    "scaled.constprop.0.isra.0\tlong int\tlong int x@rdi;long int factor@const3;struct node * n@callsite",
    // A clone given the address of a static object: in a position-independent file the
    // address moves with the load address, so it is no constant (see
    // `clone_parameters_read_as_gdb_reads_them` for an executable that does not move).
    "bump.constprop.0\tlong int\tlong int by@rdi;struct node * n@none",
    // A clone whose code returns nothing (gcc dropped the unused return value): void.
    "hold.isra.0\tvoid\tstruct node * n@rdi",
];

const CLANG: &[&str] = &[
    "main\tint\tint argc@rdi;char ** argv@rsi",
    "ints\tint\tsigned char a@rdi;unsigned char b@rsi;short c@rdx;unsigned short d@rcx;int e@r8;unsigned int f@r9",
    "longs\tlong\tlong a@rdi;unsigned long long b@rsi;_Bool c@rdx;enum color col@rcx;ulong_t u@r8",
    "strs\tsize_t\tconst char * s@rdi;char * t@rsi;const unsigned char * u@rdx",
    "structs\tstruct node *\tstruct node * n@rdi;struct point p@rsi:rdx;struct big b@stack+8;void * v@rcx",
    "many\tlong\tlong a1@rdi;long a2@rsi;long a3@rdx;long a4@rcx;long a5@r8;long a6@r9;long a7@stack+8;int a8@stack+16",
    "pick\tenum color\tenum color c@rdi;_Bool flip@rsi",
    "scaled\tlong\tlong x@rdi;long factor@rsi;struct node * n@rdx",
    "hold\tstruct node *\tstruct node * n@rdi",
    "bump\tlong\tstruct node * n@rdi;long by@rsi",
];

#[test]
fn gcc_dwarf4() {
    check("gcc", 4, GCC);
}

#[test]
fn gcc_dwarf5() {
    check("gcc", 5, GCC);
}

#[test]
fn clang_dwarf4() {
    check("clang", 4, CLANG);
}

#[test]
fn clang_dwarf5() {
    check("clang", 5, CLANG);
}

#[test]
fn inline_only_functions_have_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let bin = compile(dir.path(), "gcc", &["-O2", "-g"], "kinds");
    assert_eq!(profile(&bin).function_by_name("twice"), None);
}

fn err(path: &Path) -> String {
    let e = osi_profile::read(path, &Options::default()).expect_err("bad input must fail");
    e.to_string()
}

#[test]
fn bad_inputs_get_errors_that_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = d.join("notes.txt");
    std::fs::write(&text, "not a kernel").unwrap();
    assert!(err(&text).contains("not an ELF file"), "{}", err(&text));

    let no_dwarf = compile(d, "gcc", &["-O2"], "nodwarf");
    assert!(
        err(&no_dwarf).contains("CONFIG_DEBUG_INFO_DWARF5=y"),
        "{}",
        err(&no_dwarf)
    );

    let stripped = compile(d, "gcc", &["-O2", "-g", "-s"], "stripped");
    assert!(err(&stripped).contains("stripped"), "{}", err(&stripped));

    let split = compile(d, "gcc", &["-O2", "-g", "-gsplit-dwarf"], "split");
    assert!(
        err(&split).contains("CONFIG_DEBUG_INFO_SPLIT=n"),
        "{}",
        err(&split)
    );

    let object = compile(d, "gcc", &["-O2", "-g", "-c"], "kinds.o");
    assert!(err(&object).contains("ET_REL"), "{}", err(&object));

    let full = compile(d, "gcc", &["-O2", "-g"], "full");
    let bytes = std::fs::read(&full).unwrap();
    for cut in [10, 100, bytes.len() / 3, bytes.len() - 100] {
        let t = d.join(format!("truncated{cut}"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        match osi_profile::read(&t, &Options::default()) {
            Err(ProfileError::BadElf(..))
            | Err(ProfileError::NotElf(..))
            | Err(ProfileError::NoDwarf(..))
            | Err(ProfileError::Stripped(..)) => {}
            other => panic!("truncated at {cut}: {:?}", other.map(|d| d.functions.len())),
        }
    }
    let missing = d.join("missing");
    assert!(err(&missing).contains("No such file"), "{}", err(&missing));
}

/// Where gdb stopped: the pc, the return address, the general registers by name, and what
/// it printed for each parameter.
#[derive(Debug)]
struct Stop {
    pc: u64,
    ret: u64,
    regs: HashMap<String, u64>,
    printed: Vec<String>,
}

/// Runs `bin` under gdb, stopping at each of `entries`: per stop, the return address and the
/// general registers, then what gdb prints (`p/x`) for each name in `params` of that entry.
fn gdb_stops(bin: &Path, entries: &[(u64, Vec<String>)]) -> Vec<Stop> {
    let mut script = String::from("set pagination off\nset confirm off\n");
    for (entry, params) in entries {
        script += &format!("break *{entry:#x}\ncommands\nsilent\n");
        script += "printf \"STOP %lx %lx\\n\", $pc, *(unsigned long *)$sp\n";
        script += "info registers rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15\n";
        for p in params {
            script += &format!("printf \"PARAM \"\np/x {p}\n");
        }
        script += "continue\nend\n";
    }
    script += "run\n";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stops.gdb");
    std::fs::write(&file, script).unwrap();
    let out = Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(&file)
        .arg(bin)
        .output()
        .expect("running gdb (install it with scripts/setup)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut stops = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("STOP") => {
                let hex = |w: Option<&str>| u64::from_str_radix(w.unwrap(), 16).unwrap();
                let (pc, ret) = (hex(words.next()), hex(words.next()));
                stops.push(Stop {
                    pc,
                    ret,
                    regs: HashMap::new(),
                    printed: Vec::new(),
                });
            }
            Some("PARAM") => {
                let value = line.split_once(" = ").map_or(line, |(_, v)| v);
                stops
                    .last_mut()
                    .unwrap()
                    .printed
                    .push(value.trim().to_owned());
            }
            Some(reg) if words.clone().next().is_some_and(|v| v.starts_with("0x")) => {
                if let Some(stop) = stops.last_mut() {
                    let v = words.next().unwrap().trim_start_matches("0x");
                    stop.regs
                        .insert(reg.to_owned(), u64::from_str_radix(v, 16).unwrap());
                }
            }
            _ => {}
        }
    }
    assert!(
        !stops.is_empty(),
        "gdb stopped nowhere:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stops
}

/// Every parameter of gcc's clones, read from where the profile says, at each call's entry,
/// is what gdb prints there: a parameter a `.isra` clone does not receive (its call site's
/// value, or optimized out when the call site does not say), an address constant of a
/// `.constprop` clone, registers.
#[test]
fn clone_parameters_read_as_gdb_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let bin = compile(dir.path(), "gcc", &["-O2", "-g", "-no-pie"], "kinds");
    let p = profile(&bin);
    let clones: Vec<_> = ["scaled.constprop.0.isra.0", "bump.constprop.0"]
        .iter()
        .map(|name| p.function(p.function_by_name(name).unwrap()).unwrap())
        .collect();
    let entries: Vec<(u64, Vec<String>)> = clones
        .iter()
        .map(|f| (f.entry(), f.params().map(|p| p.name().to_owned()).collect()))
        .collect();
    let stops = gdb_stops(&bin, &entries);
    let mut kinds = std::collections::BTreeSet::new();
    for Stop {
        pc,
        ret,
        regs,
        printed,
    } in &stops
    {
        let f = clones.iter().find(|f| f.entry() == *pc).unwrap();
        let reg = |r: u16| regs[osi_profile::arch::name(r)];
        for (i, param) in f.params().enumerate() {
            let mut loc = param.location();
            if loc == Location::CallSite {
                kinds.insert("callsite");
                loc = p.call_site_value(*ret, f.entry(), i as u16);
            }
            let ours = match loc {
                Location::Reg(r) => Some(reg(r)),
                Location::RegOffset(r, off) => Some(reg(r).wrapping_add(off as i64 as u64)),
                Location::Const(v) => Some(v as i64 as u64),
                Location::None => None,
                other => panic!("{}: {other:?} not expected here", f.name()),
            };
            kinds.insert(match loc {
                Location::Const(v) if v > 1000 => "address",
                Location::None => "optimized out",
                _ => "value",
            });
            let ours = ours.map_or("<optimized out>".to_owned(), |v| format!("{v:#x}"));
            assert_eq!(
                ours,
                printed[i],
                "{} (returning to {ret:#x}): {}, ours then gdb's",
                f.name(),
                param.name()
            );
        }
    }
    // Both calls of each clone, and each kind of value, were compared.
    assert_eq!(stops.len(), 4, "{stops:?}");
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["address", "callsite", "optimized out", "value"]
    );
}

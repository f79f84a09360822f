//! The on-disk profile: round trip, lookups, and clear errors for bad files.

use osi_profile::{
    flags, CallSiteValue, Class, ClassRef, EnumType, Function, Location, Param, Profile,
    ProfileData, ProfileError, TypeDesc,
};

fn data() -> ProfileData {
    let mut d = ProfileData::default();
    d.enums.push(EnumType {
        values: vec![(-1, "NEG".into()), (3, "THREE".into())],
    });
    let f = |name: &str, entry, params, fl| Function {
        name: String::from(name),
        entry,
        size: 0x20,
        file: Some("fs/open.c".into()),
        line: 7,
        ret: TypeDesc {
            c_type: "long".into(),
            class: Class::Signed(8),
        },
        params,
        flags: fl,
    };
    d.functions = vec![
        f("zeta", 0x3000, vec![], flags::DENIED),
        f(
            "alpha",
            0x1000,
            vec![
                Param {
                    name: "file".into(),
                    ty: TypeDesc {
                        c_type: "struct file *".into(),
                        class: Class::StructPtr("struct file".into()),
                    },
                    loc: Location::Reg(5),
                },
                Param {
                    name: "mode".into(),
                    ty: TypeDesc {
                        c_type: "enum m".into(),
                        class: Class::Enum(0),
                    },
                    loc: Location::Stack(16),
                },
                Param {
                    name: "pair".into(),
                    ty: TypeDesc {
                        c_type: "struct kv".into(),
                        class: Class::StructByValue(16),
                    },
                    loc: Location::RegPair(4, 1),
                },
                Param {
                    name: "len".into(),
                    ty: TypeDesc {
                        c_type: "int".into(),
                        class: Class::Signed(4),
                    },
                    loc: Location::Const(-32),
                },
                Param {
                    name: "pud".into(),
                    ty: TypeDesc {
                        c_type: "pud_t *".into(),
                        class: Class::Pointer,
                    },
                    loc: Location::CallSite,
                },
            ],
            0,
        ),
        f("beta", 0x2000, vec![], flags::SYMBOL_ONLY),
    ];
    // What two calls of alpha pass as `pud` (out of order: finish sorts them).
    let site = |return_pc, loc| CallSiteValue {
        return_pc,
        callee: 0x1000,
        param: 4,
        loc,
    };
    d.call_sites = vec![
        site(0x2010, Location::Memory(6, -104)),
        site(0x2008, Location::RegOffset(7, 24)),
    ];
    d.facts.insert("task_struct.pid".into(), 0x4e8);
    d.text_facts.insert("kernel.version".into(), "6.1.0".into());
    d.finish();
    d
}

#[test]
fn a_profile_gives_back_the_data_it_was_written_from() {
    let d = data();
    let p = Profile::from_bytes(&d.to_bytes()).unwrap();
    assert_eq!(p.to_data(), d);
    // A function without a source file stays without one.
    let mut d = data();
    d.functions[0].file = None;
    assert_eq!(Profile::from_bytes(&d.to_bytes()).unwrap().to_data(), d);
}

#[test]
fn a_parameter_only_call_sites_pass_is_found_by_the_return_address() {
    let p = Profile::from_bytes(&data().to_bytes()).unwrap();
    let alpha = p.function(p.function_by_name("alpha").unwrap()).unwrap();
    assert_eq!(
        alpha.params().nth(4).unwrap().location(),
        Location::CallSite
    );
    assert_eq!(
        p.call_site_value(0x2008, 0x1000, 4),
        Location::RegOffset(7, 24)
    );
    assert_eq!(
        p.call_site_value(0x2010, 0x1000, 4),
        Location::Memory(6, -104)
    );
    // Another call, another callee or another parameter: not said.
    assert_eq!(p.call_site_value(0x2018, 0x1000, 4), Location::None);
    assert_eq!(p.call_site_value(0x2008, 0x3000, 4), Location::None);
    assert_eq!(p.call_site_value(0x2008, 0x1000, 3), Location::None);
}

#[test]
fn round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.rrrprof");
    std::fs::write(&path, data().to_bytes()).unwrap();
    let p = Profile::open(&path).unwrap();
    assert_eq!(p.len(), 3);
    let names: Vec<_> = p.functions().map(|f| f.name()).collect();
    assert_eq!(names, ["alpha", "beta", "zeta"]);
    let alpha = p.function(p.function_by_name("alpha").unwrap()).unwrap();
    assert_eq!(
        (alpha.entry(), alpha.file(), alpha.line(), alpha.ret_type()),
        (0x1000, "fs/open.c", 7, "long")
    );
    let params: Vec<_> = alpha
        .params()
        .map(|q| (q.name(), q.c_type(), q.class(), q.location()))
        .collect();
    assert_eq!(
        params,
        vec![
            (
                "file",
                "struct file *",
                ClassRef::StructPtr("struct file"),
                Location::Reg(5)
            ),
            ("mode", "enum m", ClassRef::Enum(0), Location::Stack(16)),
            (
                "pair",
                "struct kv",
                ClassRef::StructByValue(16),
                Location::RegPair(4, 1)
            ),
            ("len", "int", ClassRef::Signed(4), Location::Const(-32)),
            ("pud", "pud_t *", ClassRef::Pointer, Location::CallSite),
        ]
    );
    assert_eq!(p.function_at_entry(0x2000), p.function_by_name("beta"));
    assert_eq!(p.function_containing(0x101f), p.function_by_name("alpha"));
    assert_eq!(p.function_containing(0x1020), None);
    assert_eq!(p.function_by_name("gamma"), None);
    assert!(p
        .function(p.function_by_name("zeta").unwrap())
        .unwrap()
        .is_denied());
    assert_eq!(p.enum_name(0, -1), Some("NEG"));
    assert_eq!(p.enum_name(0, 2), None);
    assert_eq!(p.fact("task_struct.pid"), Some(0x4e8));
    assert_eq!(p.fact("task_struct.tgid"), None);
    assert_eq!(p.text_fact("kernel.version"), Some("6.1.0"));
}

#[test]
fn bad_files_get_clear_errors() {
    assert!(matches!(
        Profile::from_bytes(b"ELF\x7f...."),
        Err(ProfileError::NotAProfile)
    ));
    let mut bytes = data().to_bytes();
    bytes[8] = 99;
    let e = Profile::from_bytes(&bytes).unwrap_err();
    assert!(matches!(e, ProfileError::Version { found: 99, .. }));
    assert!(e.to_string().contains("regenerate it with `rrr profile"));
    let bytes = data().to_bytes();
    for cut in [20, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(
                Profile::from_bytes(&bytes[..cut]),
                Err(ProfileError::Corrupt(_))
            ),
            "cut at {cut}"
        );
    }
}

#[test]
fn merging_a_user_binary_keeps_both_enum_tables_and_the_kernels_facts() {
    let mut kernel = data();
    let mut user = data();
    for f in &mut user.functions {
        f.entry -= 0x800;
        f.name.insert_str(0, "u_");
        f.flags |= flags::USER;
    }
    user.enums[0].values[0].1 = "U_NEG".into();
    user.facts.insert("task_struct.pid".into(), 1);
    user.facts.insert("user.only".into(), 2);
    kernel.merge(user);
    let p = Profile::from_bytes(&kernel.to_bytes()).unwrap();
    assert_eq!(p.len(), 6);
    let names: Vec<&str> = p.functions().map(|f| f.name()).collect();
    assert_eq!(
        names,
        ["u_alpha", "alpha", "u_beta", "beta", "u_zeta", "zeta"]
    );
    let mode = |name: &str| {
        let f = p.function(p.function_by_name(name).unwrap()).unwrap();
        let ClassRef::Enum(t) = f.params().nth(1).unwrap().class() else {
            panic!("mode is an enum")
        };
        p.enum_name(t, -1).unwrap().to_string()
    };
    assert_eq!(
        (mode("alpha"), mode("u_alpha")),
        ("NEG".into(), "U_NEG".into())
    );
    assert!(p
        .function(p.function_by_name("u_beta").unwrap())
        .unwrap()
        .is_user());
    assert_eq!(p.fact("task_struct.pid"), Some(0x4e8));
    assert_eq!(p.fact("user.only"), Some(2));
}

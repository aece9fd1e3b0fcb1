//! Hostile and broken pickles: code-execution attempts are refused by name and nothing runs; truncated, corrupted,
//! over-declared, deeply nested or self-referencing input gives an error (never a panic) without large allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use odelt_nodes::checkpoint::official::load_official_pkl;
use odelt_nodes::checkpoint::pickle::{self, PickleErrorKind};
use odelt_nodes::checkpoint::WeightsSlot;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ----- a per-thread allocation meter, to show that declared lengths are not trusted -----

struct Meter;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(n: usize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get().saturating_add(n);
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn note_free(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static METER: Meter = Meter;

/// Peak bytes allocated by this thread while running `f` (above what was live before).
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, PEAK.with(Cell::get).saturating_sub(base))
}

// ----- helpers -----

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn sbu(s: &str) -> Vec<u8> {
    let mut v = vec![0x8c, s.len() as u8];
    v.extend(s.as_bytes());
    v
}

fn marker(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("odelt-pwned-{tag}-{}", std::process::id()))
}

/// `GLOBAL module name` + `(cmd,)` + `REDUCE`.
fn global_reduce(module: &str, name: &str, arg: &str) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'c'];
    p.extend(format!("{module}\n{name}\n").as_bytes());
    p.extend(sbu(arg));
    p.extend([0x85, b'R', b'.']);
    p
}

/// `STACK_GLOBAL module name` + `(cmd,)` + `REDUCE`, inside the official checkpoint dict shape.
fn stack_global_reduce_in_checkpoint(module: &str, name: &str, arg: &str) -> Vec<u8> {
    let mut p = vec![0x80, 4, b'}', b'('];
    p.extend(sbu("params"));
    p.extend(sbu(module));
    p.extend(sbu(name));
    p.push(0x93);
    p.extend(sbu(arg));
    p.extend([0x85, b'R', b'u', b'.']);
    p
}

fn assert_refused(bytes: &[u8], qualified: &str, tag: &str) {
    let m = marker(tag);
    let e = pickle::parse(bytes).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(qualified),
        "error does not name {qualified}: {msg}"
    );
    assert!(msg.contains("refusing to load"), "{msg}");
    let e = load_official_pkl(bytes, WeightsSlot::Params).unwrap_err();
    assert!(e.to_string().contains(qualified), "{e}");
    assert!(
        !m.exists(),
        "{} was created: something executed",
        m.display()
    );
}

// ----- code execution attempts -----

#[test]
fn global_reduce_of_dangerous_callables_is_refused() {
    for (i, (module, name)) in [
        ("os", "system"),
        ("posix", "system"),
        ("nt", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("__builtin__", "eval"),
        ("subprocess", "check_output"),
        ("subprocess", "Popen"),
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("g{i}");
        let cmd = if name == "eval" || name == "exec" {
            format!("open('{}', 'w')", marker(&tag).display())
        } else {
            format!("touch {}", marker(&tag).display())
        };
        assert_refused(
            &global_reduce(module, name, &cmd),
            &format!("{module}.{name}"),
            &tag,
        );
    }
}

#[test]
fn stack_global_reduce_of_dangerous_callables_is_refused() {
    for (i, (module, name)) in [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("importlib", "import_module"),
        ("runpy", "run_path"),
        ("pty", "spawn"),
        ("webbrowser", "open"),
        ("shutil", "rmtree"),
        ("socket", "socket"),
        ("marshal", "loads"),
        ("pickle", "loads"),
        ("types", "FunctionType"),
        ("code", "InteractiveInterpreter"),
        ("sys", "exit"),
        ("operator", "methodcaller"),
        ("functools", "partial"),
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("s{i}");
        let cmd = format!("touch {}", marker(&tag).display());
        assert_refused(
            &stack_global_reduce_in_checkpoint(module, name, &cmd),
            &format!("{module}.{name}"),
            &tag,
        );
    }
}

#[test]
fn newobj_of_a_dangerous_class_is_refused() {
    let mut p = vec![0x80, 4];
    p.extend(sbu("subprocess"));
    p.extend(sbu("Popen"));
    p.push(0x93);
    p.extend(sbu("id"));
    p.extend([0x85, 0x81, b'.']);
    let e = pickle::parse(&p).unwrap_err();
    assert!(
        matches!(e.kind, PickleErrorKind::ForbiddenGlobal { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("subprocess.Popen"), "{e}");
}

#[test]
fn unknown_function_call_is_refused_by_name() {
    let p = stack_global_reduce_in_checkpoint("evil_pkg.payload", "run", "x");
    let e = pickle::parse(&p).unwrap_err();
    assert!(
        matches!(e.kind, PickleErrorKind::UnknownFunction { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("evil_pkg.payload.run"), "{e}");
}

#[test]
fn dunder_attribute_chains_are_refused() {
    // STACK_GLOBAL may name dotted attributes; a dunder component is how one escapes to arbitrary objects.
    let p =
        stack_global_reduce_in_checkpoint("collections", "OrderedDict.__init__.__globals__", "x");
    let e = pickle::parse(&p).unwrap_err();
    assert!(
        matches!(e.kind, PickleErrorKind::ForbiddenGlobal { .. }),
        "{e}"
    );
}

// ----- truncation and corruption -----

#[test]
fn truncated_checkpoint_is_an_error_at_every_offset_tried() {
    let bytes = std::fs::read(data("tiny.pkl")).unwrap();
    let n = bytes.len();
    let mut offsets: Vec<usize> = (0..400).chain(n - 400..n).collect();
    offsets.extend((0..1000).map(|i| i * (n / 1000)));
    for cut in offsets {
        let r = load_official_pkl(&bytes[..cut], WeightsSlot::Params);
        let e = r.expect_err("a truncated checkpoint must not load");
        let msg = e.to_string();
        assert!(
            msg.contains("without a STOP") || msg.contains("truncated") || msg.contains("remain"),
            "cut at {cut}: {msg}"
        );
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x0de17);
    let big = std::fs::read(data("tiny.pkl")).unwrap();
    // The pickle structure of tiny.pkl (everything except array payloads) is in its first few KB and between arrays;
    // flip bytes anywhere, more often near opcodes.
    let mut ok = 0;
    for _ in 0..300 {
        let mut b = big.clone();
        for _ in 0..rng.random_range(1..8) {
            let i = if rng.random_bool(0.5) {
                rng.random_range(0..4096)
            } else {
                rng.random_range(0..b.len())
            };
            b[i] ^= 1 << rng.random_range(0..8);
        }
        if load_official_pkl(&b, WeightsSlot::Params).is_ok() {
            ok += 1;
        }
    }
    // Flips inside array data still load; flips in the structure must not.
    assert!(ok < 300, "every corrupted file loaded");
    let small: Vec<Vec<u8>> = [
        "mixed_p2",
        "mixed_p3",
        "mixed_p4",
        "mixed_p5",
        "official_f64",
    ]
    .iter()
    .map(|n| std::fs::read(data(&format!("pickle/{n}.pkl"))).unwrap())
    .collect();
    for i in 0..20_000 {
        let mut b = small[i % small.len()].clone();
        match rng.random_range(0..4) {
            0 => {
                for _ in 0..rng.random_range(1..6) {
                    let j = rng.random_range(0..b.len());
                    b[j] = rng.random();
                }
            }
            1 => {
                let j = rng.random_range(0..b.len());
                b.insert(j, rng.random());
            }
            2 => {
                let j = rng.random_range(0..b.len());
                b.remove(j);
            }
            _ => {
                // Splice a random chunk of itself somewhere else (duplicates opcodes, memo indices...).
                let a = rng.random_range(0..b.len());
                let len = rng.random_range(0..64).min(b.len() - a);
                let chunk = b[a..a + len].to_vec();
                let j = rng.random_range(0..b.len());
                b.splice(j..j, chunk);
            }
        }
        let _ = pickle::parse(&b);
        let _ = load_official_pkl(&b, WeightsSlot::Params);
    }
}

// ----- resource exhaustion -----

#[test]
fn huge_declared_lengths_fail_without_allocating() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "BINUNICODE8",
            [vec![0x80, 4, 0x8d], u64::MAX.to_le_bytes().to_vec()].concat(),
        ),
        (
            "BINBYTES8",
            [vec![0x80, 4, 0x8e], (1u64 << 40).to_le_bytes().to_vec()].concat(),
        ),
        (
            "BYTEARRAY8",
            [vec![0x80, 5, 0x96], (u64::MAX / 2).to_le_bytes().to_vec()].concat(),
        ),
        (
            "BINUNICODE",
            [vec![0x80, 4, b'X'], u32::MAX.to_le_bytes().to_vec()].concat(),
        ),
        (
            "BINBYTES",
            [vec![0x80, 4, b'B'], u32::MAX.to_le_bytes().to_vec()].concat(),
        ),
        (
            "LONG4",
            [vec![0x80, 4, 0x8b], i32::MAX.to_le_bytes().to_vec()].concat(),
        ),
        (
            "FRAME",
            [vec![0x80, 4, 0x95], u64::MAX.to_le_bytes().to_vec()].concat(),
        ),
        (
            "BINSTRING",
            [vec![0x80, 2, b'T'], i32::MAX.to_le_bytes().to_vec()].concat(),
        ),
    ];
    for (op, mut bytes) in cases {
        bytes.extend([0u8; 16]);
        bytes.push(b'.');
        let (r, peak) = peak_alloc(|| pickle::parse(&bytes));
        let e = r.unwrap_err();
        assert_eq!(e.opcode, op, "{e}");
        assert!(
            matches!(e.kind, PickleErrorKind::Truncated { .. }),
            "{op}: {e}"
        );
        assert!(peak < 64 * 1024, "{op}: allocated {peak} bytes");
    }
    // A huge memo index is a hash-map key, not a vector length.
    let mut p = vec![0x80, 4, b'N', b'r'];
    p.extend(u32::MAX.to_le_bytes());
    p.push(b'j');
    p.extend(u32::MAX.to_le_bytes());
    p.extend([0x86, b'.']);
    let (r, peak) = peak_alloc(|| pickle::parse(&p));
    r.unwrap();
    assert!(peak < 64 * 1024, "memo index: allocated {peak} bytes");
    // An array whose shape claims far more elements than its data holds.
    let mut p = vec![0x80, 4];
    p.extend(sbu("numpy._core.multiarray"));
    p.extend(sbu("_reconstruct"));
    p.push(0x93);
    p.extend(sbu("numpy"));
    p.extend(sbu("ndarray"));
    p.extend([
        0x93, b'K', 0, 0x85, b'C', 1, b'b', 0x87, b'R', b'(', b'K', 1, b'J',
    ]);
    p.extend(i32::MAX.to_le_bytes());
    p.push(b'J');
    p.extend(i32::MAX.to_le_bytes());
    p.push(0x86);
    p.extend(sbu("numpy"));
    p.extend(sbu("dtype"));
    p.push(0x93);
    p.extend(sbu("f4"));
    p.extend([
        0x89, 0x88, 0x87, b'R', 0x89, b'C', 4, 0, 0, 0, 0, b't', b'b', b'.',
    ]);
    let (r, peak) = peak_alloc(|| load_official_pkl(&p, WeightsSlot::Params));
    let e = r.unwrap_err();
    assert!(e.to_string().contains("needs"), "{e}");
    assert!(peak < 64 * 1024, "shape: allocated {peak} bytes");
}

#[test]
fn deep_nesting_is_bounded() {
    // 100k MARKs.
    let mut p = vec![0x80, 4];
    p.extend(std::iter::repeat_n(b'(', 100_000));
    p.push(b'.');
    let e = pickle::parse(&p).unwrap_err();
    assert!(matches!(e.kind, PickleErrorKind::Limit { .. }), "{e}");
    // 100k MARK + EMPTY_LIST pairs.
    let mut p = vec![0x80, 4];
    for _ in 0..100_000 {
        p.extend([b'(', b']']);
    }
    p.push(b'.');
    assert!(matches!(
        pickle::parse(&p).unwrap_err().kind,
        PickleErrorKind::Limit { .. }
    ));
    // 100k lists nested through APPEND (no marks): the tree depth limit stops it.
    let mut p = vec![0x80, 4];
    p.extend(std::iter::repeat_n(b']', 100_000));
    p.extend(std::iter::repeat_n(b'a', 99_999));
    p.push(b'.');
    let (r, peak) = peak_alloc(|| pickle::parse(&p));
    assert!(matches!(r.unwrap_err().kind, PickleErrorKind::Limit { .. }));
    assert!(peak < 64 << 20, "nested lists: allocated {peak} bytes");
    // Nested tuples via TUPLE1.
    let mut p = vec![0x80, 4, b'N'];
    p.extend(std::iter::repeat_n(0x85, 100_000));
    p.push(b'.');
    assert!(matches!(
        pickle::parse(&p).unwrap_err().kind,
        PickleErrorKind::Limit { .. }
    ));
}

#[test]
fn shared_references_cannot_blow_up() {
    // Billion laughs: each level is a list holding the previous level 8 times (via the memo).
    let mut p = vec![0x80, 4, b'N', 0x94];
    for level in 0..40u8 {
        p.push(b'(');
        for _ in 0..8 {
            p.extend([b'h', level]);
        }
        p.extend([b'l', 0x94]);
    }
    p.push(b'.');
    let (r, peak) = peak_alloc(|| pickle::parse(&p));
    assert!(matches!(r.unwrap_err().kind, PickleErrorKind::Limit { .. }));
    assert!(peak < 16 << 20, "billion laughs: allocated {peak} bytes");

    // Copy amplification: build one dict of 20k entries, then convert it with OrderedDict(d) 50k times.
    let mut p = vec![0x80, 4, b'}', 0x94, b'('];
    for i in 0..20_000i32 {
        p.push(b'J');
        p.extend(i.to_le_bytes());
        p.push(b'N');
    }
    p.push(b'u');
    p.extend(sbu("collections"));
    p.extend(sbu("OrderedDict"));
    p.extend([0x93, 0x94]);
    for _ in 0..50_000 {
        p.extend([b'h', 1, b'h', 0, 0x85, b'R', b'0']);
    }
    p.push(b'.');
    let (r, peak) = peak_alloc(|| pickle::parse(&p));
    assert!(matches!(r.unwrap_err().kind, PickleErrorKind::Limit { .. }));
    assert!(
        peak < 64 << 20,
        "copy amplification: allocated {peak} bytes"
    );

    // Self-reference: d = {}; d['d'] = d.
    let mut p = vec![0x80, 4, b'}', 0x94];
    p.extend(sbu("d"));
    p.extend([b'h', 0, b's', b'.']);
    assert!(matches!(
        pickle::parse(&p).unwrap_err().kind,
        PickleErrorKind::Limit { .. }
    ));
}

#[test]
fn malformed_structure_errors_carry_offset_and_opcode() {
    // SETITEM on a list at byte 5.
    let p = [0x80, 4, b']', b'N', b'N', b's', b'.'];
    let e = pickle::parse(&p).unwrap_err();
    assert_eq!((e.offset, e.opcode), (5, "SETITEM"));
    assert!(e.to_string().contains("at byte 5 (opcode SETITEM)"), "{e}");
    // BINGET of a never-stored memo entry.
    let e = pickle::parse(&[0x80, 4, b'h', 7, b'.']).unwrap_err();
    assert_eq!(e.kind, PickleErrorKind::MemoMissing(7));
    // Unknown opcode.
    let e = pickle::parse(&[0x80, 4, 0xff]).unwrap_err();
    assert_eq!(e.kind, PickleErrorKind::UnknownOpcode(0xff));
    // Protocol 6.
    let e = pickle::parse(&[0x80, 6, b'N', b'.']).unwrap_err();
    assert_eq!(e.kind, PickleErrorKind::UnsupportedProtocol(6));
    // Empty input.
    assert_eq!(
        pickle::parse(&[]).unwrap_err().kind,
        PickleErrorKind::NoStop
    );
    // Torch-style persistent ids.
    let e = pickle::parse(&[0x80, 2, b'N', b'Q', b'.']).unwrap_err();
    assert!(e.to_string().contains("persistent"), "{e}");
    // A value stack of 2M items.
    let mut p = vec![0x80, 4];
    p.extend(std::iter::repeat_n(b'N', 2 << 20));
    p.push(b'.');
    assert!(matches!(
        pickle::parse(&p).unwrap_err().kind,
        PickleErrorKind::Limit { .. }
    ));
}

//! Hostile plugins fail with a typed error within twice their deadline, and the host goes
//! on serving good plugins.

use std::time::{Duration, Instant};

use crate::support::*;
use sedna::plugin::{Cause, DirGrant, Hem, Plugin, PluginError, Sandbox};

const DEADLINE_MS: u64 = 300;

fn hostile(mode: &str) -> Result<Plugin<Hem>, PluginError> {
    hostile_in(mode, sandbox(DEADLINE_MS))
}

fn hostile_in(mode: &str, sandbox: Sandbox) -> Result<Plugin<Hem>, PluginError> {
    Plugin::load(
        runtime(),
        &fixture(FIXTURE_HEM_HOSTILE),
        params(&[("mode", mode)]),
        sandbox,
    )
}

/// The built-in IBT plugin still answers correctly on the same runtime.
fn good_plugin_still_serves() {
    let ibt =
        Plugin::<Hem>::load(runtime(), &builtin("IBT"), Vec::new(), Sandbox::default()).unwrap();
    assert!(ibt.is_hard_example(&frame(&[0.2, 0.3, 0.9])).unwrap());
    assert!(!ibt.is_hard_example(&frame(&[0.9, 0.95])).unwrap());
}

/// Calls the misbehaving plugin twice (a failed instance must not poison the next call)
/// and checks the cause and the time each call took.
fn assert_call_fails(mode: &str, expected: impl Fn(&Cause) -> bool) {
    assert_call_fails_in(mode, sandbox(DEADLINE_MS), expected)
}

fn assert_call_fails_in(mode: &str, sandbox: Sandbox, expected: impl Fn(&Cause) -> bool) {
    let plugin = hostile_in(mode, sandbox).unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let err = plugin.is_hard_example(&frame(&[0.5])).unwrap_err();
        let took = started.elapsed();
        assert!(expected(&err.cause), "mode {mode}: unexpected {err}");
        assert_eq!(err.call, "is-hard-example");
        assert!(
            err.to_string().contains("fixture-hem-hostile") || err.plugin.ends_with(".wasm"),
            "{err}"
        );
        assert!(
            took < Duration::from_millis(2 * DEADLINE_MS),
            "mode {mode} took {took:?}"
        );
    }
    good_plugin_still_serves();
}

#[test]
fn an_infinite_loop_times_out() {
    assert_call_fails(
        "loop",
        |c| matches!(c, Cause::Timeout(d) if *d == Duration::from_millis(DEADLINE_MS)),
    );
}

#[test]
fn a_memory_bomb_hits_the_cap() {
    // A small cap keeps the test quick: filling 256 MiB takes about as long as the deadline.
    let capped = Sandbox {
        memory: 32 << 20,
        ..sandbox(DEADLINE_MS)
    };
    assert_call_fails_in(
        "bomb",
        capped,
        |c| matches!(c, Cause::OutOfMemory(cap) if *cap == 32 << 20),
    );
}

#[test]
fn a_memory_bomb_hits_the_default_cap_within_the_default_deadline() {
    let plugin = hostile_in("bomb", Sandbox::default()).unwrap();
    let started = Instant::now();
    let err = plugin.is_hard_example(&frame(&[0.5])).unwrap_err();
    assert!(
        matches!(err.cause, Cause::OutOfMemory(cap) if cap == 256 << 20),
        "{err}"
    );
    assert!(
        started.elapsed() < 2 * Sandbox::default().deadline,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    assert_call_fails("recurse", |c| matches!(c, Cause::StackOverflow));
}

#[test]
fn a_panic_is_a_trap_with_its_message() {
    assert_call_fails(
        "panic",
        |c| matches!(c, Cause::Trap(m) if m.contains("panics on purpose")),
    );
}

#[test]
fn a_trap_in_init_refuses_the_plugin() {
    let err = hostile("trap-init")
        .err()
        .expect("a plugin that traps in init must be refused");
    assert_eq!(err.call, "init");
    assert!(
        matches!(&err.cause, Cause::Trap(m) if m.contains("init refuses to start")),
        "{err}"
    );
    good_plugin_still_serves();
}

#[test]
fn a_loop_in_init_times_out() {
    let started = Instant::now();
    let err = hostile("loop-init")
        .err()
        .expect("a plugin that loops in init must be refused");
    assert_eq!(err.call, "init");
    assert!(matches!(err.cause, Cause::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_millis(2 * DEADLINE_MS));
    good_plugin_still_serves();
}

#[test]
fn a_component_of_another_world_is_refused_with_the_mismatch() {
    let err = Plugin::<Hem>::load(
        runtime(),
        &trigger_component(),
        Vec::new(),
        Sandbox::default(),
    )
    .err()
    .expect("a trigger component is not a HEM");
    match &err.cause {
        Cause::WrongWorld { world, detail } => {
            assert_eq!(world, "hard-example-miner");
            assert!(detail.contains("sedna:plugin/mining@0.3.0"), "{detail}");
            assert!(detail.contains("trigger-condition"), "{detail}");
        }
        other => panic!("unexpected {other}"),
    }
    // And the trigger component works as what it is.
    let trigger = hard_example_ratio("2", "0.4");
    let recent = |values: &[f64]| [metric("hard_examples", values)];
    assert_eq!(
        trigger.evaluate(&recent(&[0.0, 1.0, 1.0])).unwrap(),
        Ok(true)
    );
    assert_eq!(
        trigger.evaluate(&recent(&[1.0, 0.0, 0.0])).unwrap(),
        Ok(false)
    );
    assert!(trigger.evaluate(&[]).unwrap().is_err());
    good_plugin_still_serves();
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let source = sedna::plugin::Source::new("junk", b"not wasm at all".to_vec());
    let err = Plugin::<Hem>::load(runtime(), &source, Vec::new(), Sandbox::default())
        .err()
        .unwrap();
    assert!(matches!(err.cause, Cause::Invalid(_)), "{err}");
}

#[test]
fn a_compile_bomb_is_refused_before_it_compiles() {
    // One function of 3 MiB: refused by its size, in a parse, never compiled.
    let bomb = sedna::plugin::Source::new("bomb", component_with_functions(1, 3 << 20));
    let err = Plugin::<Hem>::load(runtime(), &bomb, Vec::new(), Sandbox::default())
        .err()
        .unwrap();
    assert!(matches!(err.cause, Cause::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("function 0 of its core module 1 is 3.0 MiB of code"),
        "{err}"
    );
    assert!(err.to_string().contains("split it"), "{err}");
    // Under the limit it compiles (and fails only for exporting no world).
    let small = sedna::plugin::Source::new("small", component_with_functions(1, 64 << 10));
    let err = Plugin::<Hem>::load(runtime(), &small, Vec::new(), Sandbox::default())
        .err()
        .unwrap();
    assert!(!err.to_string().contains("MiB of code"), "{err}");
}

/// Functions under the size screen whose compile takes seconds and over 200 MiB.
fn slow_to_compile() -> sedna::plugin::Source {
    sedna::plugin::Source::new("slow", component_with_functions(4, 1 << 20))
}

#[test]
fn a_child_compiled_component_loads_and_serves_as_one_compiled_here() {
    let runtime = child_compiling_runtime(Duration::from_secs(60), 2 << 30);
    let ibt = Plugin::<Hem>::load(&runtime, &builtin("IBT"), Vec::new(), Sandbox::default())
        .expect("a component compiled in the child loads");
    assert!(ibt.is_hard_example(&frame(&[0.2, 0.3, 0.9])).unwrap());
    assert!(!ibt.is_hard_example(&frame(&[0.9, 0.95])).unwrap());
    // What the child says of bytes it cannot compile reaches the caller.
    let junk = sedna::plugin::Source::new("junk", b"\0asm\x0d\0\x01\0junk".to_vec());
    let err = runtime.compile(&junk).err().unwrap();
    assert!(matches!(err.cause, Cause::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("component: failed to parse WebAssembly module"),
        "{err}"
    );
}

#[test]
fn a_compile_over_its_time_or_memory_is_stopped_with_the_reason() {
    let started = Instant::now();
    let runtime = child_compiling_runtime(Duration::from_millis(500), 2 << 30);
    let err = runtime.compile(&slow_to_compile()).err().unwrap();
    assert!(
        err.to_string().contains("took over 0.5 s")
            && err.to_string().contains("--compile-timeout"),
        "{err}"
    );
    // Stopped at its deadline, not when the compile would have ended.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let runtime = child_compiling_runtime(Duration::from_secs(120), 96 << 20);
    let err = runtime.compile(&slow_to_compile()).err().unwrap();
    assert!(
        err.to_string().contains("needed over 96 MiB")
            && err.to_string().contains("--compile-memory"),
        "{err}"
    );
    // The bounds are per compile: a small component still compiles under them.
    let ibt = Plugin::<Hem>::load(&runtime, &builtin("IBT"), Vec::new(), Sandbox::default());
    assert!(ibt.is_ok(), "{:?}", ibt.err());
}

#[test]
fn a_cancelled_compile_stops_its_child() {
    let runtime = child_compiling_runtime(Duration::from_secs(120), 4 << 30);
    let cancel = sedna::plugin::compile::Cancel::default();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.cancel();
        })
    };
    let started = Instant::now();
    let err = runtime
        .compile_unless_cancelled(&slow_to_compile(), &cancel)
        .err()
        .unwrap();
    canceller.join().unwrap();
    assert!(err.to_string().contains("cancelled"), "{err}");
    // Its child was killed: the compile would have run for minutes.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn files_are_reachable_only_inside_a_granted_directory() {
    let root = tempfile::tempdir().unwrap();
    let granted = root.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("ok.txt"), "fine").unwrap();
    std::fs::write(root.path().join("secret.txt"), "secret").unwrap();
    let read = |path: &str, dirs: Vec<DirGrant>| {
        Plugin::<Hem>::load(
            runtime(),
            &fixture(FIXTURE_HEM_HOSTILE),
            params(&[("mode", "read"), ("path", path)]),
            Sandbox {
                dirs,
                ..sandbox(DEADLINE_MS)
            },
        )
    };
    let grant = || vec![DirGrant::read_only(&granted, "/data")];

    read("/data/ok.txt", grant()).expect("a granted file is readable");
    for path in [
        "/etc/passwd",
        "/data/../secret.txt",
        "../secret.txt",
        "/data/../../etc/passwd",
    ] {
        let err = read(path, grant())
            .err()
            .unwrap_or_else(|| panic!("{path} was readable"));
        assert!(
            matches!(&err.cause, Cause::Refused(m) if m.contains("cannot read")),
            "{path}: {err}"
        );
    }
    let err = read("/data/ok.txt", Vec::new())
        .err()
        .expect("nothing is readable without a grant");
    assert!(matches!(&err.cause, Cause::Refused(_)), "{err}");
    good_plugin_still_serves();
}

#[test]
fn a_granted_directory_is_read_only_unless_stated() {
    let dir = tempfile::tempdir().unwrap();
    let write = |writable: bool| {
        Plugin::<Hem>::load(
            runtime(),
            &fixture(FIXTURE_HEM_HOSTILE),
            params(&[("mode", "write"), ("path", "/out/new.txt")]),
            Sandbox {
                dirs: vec![DirGrant {
                    writable,
                    ..DirGrant::read_only(dir.path(), "/out")
                }],
                ..sandbox(DEADLINE_MS)
            },
        )
    };
    let err = write(false)
        .err()
        .expect("a read-only grant must refuse writes");
    assert!(
        matches!(&err.cause, Cause::Refused(m) if m.contains("cannot write")),
        "{err}"
    );
    assert!(!dir.path().join("new.txt").exists());
    write(true).expect("a writable grant accepts writes");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "written by a plugin"
    );
}

#[test]
fn there_are_no_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let err = Plugin::<Hem>::load(
        runtime(),
        &fixture(FIXTURE_HEM_HOSTILE),
        params(&[("mode", "connect"), ("address", &address)]),
        sandbox(DEADLINE_MS),
    )
    .err()
    .expect("a plugin must not open a socket");
    assert!(
        matches!(&err.cause, Cause::Refused(m) if m.contains("cannot connect")),
        "{err}"
    );
    assert!(listener.accept().is_err(), "nothing may have connected");
}

#[test]
fn granting_a_missing_directory_is_a_clear_error() {
    let err = Plugin::<Hem>::load(
        runtime(),
        &fixture(FIXTURE_HEM_HOSTILE),
        Vec::new(),
        Sandbox {
            dirs: vec![DirGrant::read_only("/no/such/dir", "/data")],
            ..Sandbox::default()
        },
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err.cause, Cause::Host(m) if m.contains("/no/such/dir")),
        "{err}"
    );
}

/// Everything logged through the `tracing` subscriber a test installs.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_plugin_flooding_the_log_is_limited_and_cannot_forge_a_host_line() {
    let plugin = hostile("flood").unwrap();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        plugin.is_hard_example(&frame(&[0.5])).unwrap();
        // A second later the allowance has refilled: the count of what was dropped goes
        // first.
        std::thread::sleep(Duration::from_secs(1));
        plugin.is_hard_example(&frame(&[0.5])).unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() < 400,
        "{} lines logged of 10,000 asked",
        lines.len()
    );
    assert!(
        lines.iter().all(|l| !l.starts_with("round 99")),
        "a forged line: {text}"
    );
    assert!(
        text.contains("line 0\\nround 99: deployed"),
        "escaped: {text}"
    );
    assert!(text.contains("log lines suppressed"), "{text}");
}

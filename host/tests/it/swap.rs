//! Hot swap under load: calls in flight finish on the version they started with, every
//! answer comes from one version, and a failed replacement leaves the old one serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::*;
use sedna::plugin::{Cause, Hem, Plugin, Prediction, Slot};

fn answering(answer: bool) -> Vec<sedna::plugin::Param> {
    params(&[
        ("mode", "answer"),
        ("answer", if answer { "true" } else { "false" }),
    ])
}

#[test]
fn swaps_under_load_never_fail_or_mix_versions() {
    const THREADS: usize = 4;
    const SWAPS: usize = 100;
    let hostile = fixture(FIXTURE_HEM_HOSTILE);
    let first = Plugin::<Hem>::load(runtime(), &hostile, answering(false), sandbox(1000)).unwrap();
    let slot = Arc::new(Slot::new(first));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);

    let callers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (slot, stop, seen) = (slot.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let batch: Vec<Prediction> = (0..16).map(|i| frame(&[i as f32 / 16.0])).collect();
                let mut calls = 0;
                while !stop.load(Ordering::Relaxed) {
                    let answers = slot
                        .get()
                        .is_hard_example_batch(&batch)
                        .expect("no call may fail during swaps");
                    assert_eq!(answers.len(), batch.len());
                    assert!(
                        answers.iter().all(|&a| a == answers[0]),
                        "a mix of versions: {answers:?}"
                    );
                    seen[answers[0] as usize].fetch_add(1, Ordering::Relaxed);
                    calls += 1;
                }
                calls
            })
        })
        .collect();

    for i in 1..=SWAPS {
        let answer = i % 2 == 1;
        slot.replace_with(&hostile, answering(answer), sandbox(1000))
            .unwrap();
        if i == SWAPS / 2 {
            // Two bad replacements in the middle: the current version keeps serving.
            let err = slot
                .replace_with(&hostile, params(&[("mode", "trap-init")]), sandbox(1000))
                .unwrap_err();
            assert!(matches!(err.cause, Cause::Trap(_)), "{err}");
            let err = slot.replace(&trigger_component()).unwrap_err();
            assert!(matches!(err.cause, Cause::WrongWorld { .. }), "{err}");
            assert_eq!(slot.get().is_hard_example(&frame(&[0.5])).unwrap(), answer);
        }
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let calls: usize = callers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(calls > 0);
    // Both versions answered while the swaps ran.
    assert!(seen[0].load(Ordering::Relaxed) > 0 && seen[1].load(Ordering::Relaxed) > 0);
    // The last swap (100, even) installed `answer = false`.
    assert!(!slot.get().is_hard_example(&frame(&[0.5])).unwrap());
}

#[test]
fn replace_keeps_the_slot_parameters() {
    let ibt = builtin("IBT");
    // threshold_box 0.1: a box scored 0.3 is confident, so the frame is not hard.
    let strict = params(&[("threshold_box", "0.1")]);
    let slot =
        Slot::new(Plugin::<Hem>::load(runtime(), &ibt, strict.clone(), sandbox(1000)).unwrap());
    assert!(!slot.get().is_hard_example(&frame(&[0.3])).unwrap());
    slot.replace(&ibt).unwrap();
    assert_eq!(slot.get().params(), strict.as_slice());
    assert!(!slot.get().is_hard_example(&frame(&[0.3])).unwrap());
    // A bad parameter refuses the replacement, naming the key; the old version serves on.
    let err = slot
        .replace_with(&ibt, params(&[("threshold_img", "2")]), sandbox(1000))
        .unwrap_err();
    assert!(
        matches!(&err.cause, Cause::Refused(m) if m.contains("threshold_img")),
        "{err}"
    );
    assert_eq!(slot.get().params(), strict.as_slice());
}

//! The plugin runtime's hot paths: a HEM decision, a cached load, an instantiation.
//!
//! `cargo bench -p sedna --bench plugin`. Targets (issue 2): a HEM call with 16 boxes
//! <= 2 us, a load from the precompiled cache <= 1 ms, instantiate <= 20 us (`init`, the
//! first call into a fresh instance, is measured apart).

use criterion::{Criterion, criterion_group, criterion_main};
use sedna::plugin::{
    Builtin, Detections, Hem, Plugin, Prediction, Runtime, RuntimeConfig, Sandbox,
};

fn frame(boxes: usize) -> Prediction {
    Prediction::Detections(Detections::from_rows((0..boxes).map(|i| {
        let x = i as f32;
        ([x, 0.0, x + 10.0, 10.0], (x * 0.37) % 1.0, (i % 4) as u32)
    })))
}

fn benches(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let source = Builtin::find("IBT").unwrap().source();
    let ibt = Plugin::<Hem>::load(&runtime, &source, Vec::new(), Sandbox::default()).unwrap();

    let empty = frame(0);
    c.bench_function("hem_call_0_boxes", |b| {
        b.iter(|| ibt.is_hard_example(&empty).unwrap())
    });
    let scores = Prediction::ClassScores(vec![0.5; 96]);
    c.bench_function("hem_call_96_class_scores", |b| {
        b.iter(|| ibt.is_hard_example(&scores).unwrap())
    });
    let one = frame(16);
    c.bench_function("hem_call_16_boxes", |b| {
        b.iter(|| ibt.is_hard_example(&one).unwrap())
    });
    let batch: Vec<Prediction> = (0..32).map(|_| frame(16)).collect();
    c.bench_function("hem_batch_32_frames_of_16_boxes", |b| {
        b.iter(|| ibt.is_hard_example_batch(&batch).unwrap())
    });
    c.bench_function("instantiate", |b| {
        b.iter(|| ibt.instantiate_uninitialised().unwrap())
    });
    c.bench_function("instantiate_and_init", |b| {
        b.iter(|| ibt.instantiate().unwrap())
    });
    c.bench_function("load_from_disk_cache", |b| {
        b.iter(|| {
            runtime.cache().forget_memory();
            Plugin::<Hem>::load(&runtime, &source, Vec::new(), Sandbox::default()).unwrap()
        })
    });
    c.bench_function("load_from_memory_cache", |b| {
        b.iter(|| Plugin::<Hem>::load(&runtime, &source, Vec::new(), Sandbox::default()).unwrap())
    });
}

criterion_group!(plugin, benches);
criterion_main!(plugin);

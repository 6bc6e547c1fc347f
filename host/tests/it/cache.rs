//! The precompiled-component cache: a second load hits it; a damaged entry is detected
//! and rebuilt, never trusted.

use std::fs;

use crate::support::*;
use sedna::plugin::{CacheOutcome, Hem, Plugin, Runtime, RuntimeConfig, Sandbox};

fn runtime_with_cache(dir: &std::path::Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.to_path_buf()),
        max_instances: 8,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

#[test]
fn a_second_load_hits_the_cache_and_damage_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture(FIXTURE_HEM_HOSTILE);
    let runtime = runtime_with_cache(dir.path());
    assert_eq!(runtime.compile(&source).unwrap().1, CacheOutcome::Compiled);
    assert_eq!(runtime.compile(&source).unwrap().1, CacheOutcome::Memory);

    // A new process (a new runtime) finds the precompiled file on disk.
    let runtime = runtime_with_cache(dir.path());
    assert_eq!(runtime.compile(&source).unwrap().1, CacheOutcome::Disk);
    let file = runtime
        .cache()
        .file_for(runtime.engine(), &source.sha256)
        .unwrap();
    let good = fs::read(&file).unwrap();

    let damages: [(&str, Vec<u8>); 3] = [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("checksum", {
            let mut flipped = good.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 0xff;
            flipped
        }),
        ("not a cache file", b"garbage".to_vec()),
    ];
    for (reason, bytes) in damages {
        fs::write(&file, bytes).unwrap();
        runtime.cache().forget_memory();
        match runtime.compile(&source).unwrap().1 {
            CacheOutcome::Rebuilt(why) => assert!(why.contains(reason), "{reason}: {why}"),
            other => panic!("{reason}: expected a rebuild, got {other:?}"),
        }
        assert_eq!(
            fs::read(&file).unwrap(),
            good,
            "the entry is rewritten whole"
        );
        // The rebuilt component works.
        let plugin = Plugin::<Hem>::load(
            &runtime,
            &source,
            params(&[("answer", "true")]),
            Sandbox::default(),
        )
        .unwrap();
        assert!(plugin.is_hard_example(&frame(&[0.5])).unwrap());
    }
}

#[test]
fn an_unwritable_cache_directory_only_costs_speed() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // A regular file where the directory should be: nothing can be cached.
    let runtime = runtime_with_cache(&file.path().join("cache"));
    let source = fixture(FIXTURE_HEM_HOSTILE);
    assert_eq!(runtime.compile(&source).unwrap().1, CacheOutcome::Compiled);
    runtime.cache().forget_memory();
    assert_eq!(runtime.compile(&source).unwrap().1, CacheOutcome::Compiled);
}

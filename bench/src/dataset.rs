//! The dataset monitor's check: 1,000 new lines appended to an index of 1,000,000 lines,
//! and to one of 10,000 (the cost must not grow with the index).

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use sedna::learn::dataset::DatasetMonitor;
use sedna::spec::Format;

use crate::median;

/// Lines appended before each check.
pub const NEW_LINES: usize = 1_000;

fn write_lines(path: &Path, from: usize, count: usize) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut out = BufWriter::new(file);
    for i in from..from + count {
        writeln!(
            out,
            "images/{}.jpg {},{},{},{},{} 5,5,60,80,1",
            i % 10,
            i % 7,
            i % 5,
            40 + i % 9,
            50 + i % 11,
            i % 4
        )
        .unwrap();
    }
}

fn median_check_ms(dir: &Path, index_lines: usize, rounds: usize) -> f64 {
    let index = dir.join(format!("index-{index_lines}.txt"));
    write_lines(&index, 0, index_lines);
    let mut monitor = DatasetMonitor::new(&index, Format::Txt);
    monitor.check().unwrap();
    let mut times = Vec::new();
    for round in 0..rounds {
        write_lines(&index, index_lines + round * NEW_LINES, NEW_LINES);
        let started = Instant::now();
        let check = monitor.check().unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(check.samples.len(), NEW_LINES);
    }
    median(&mut times)
}

/// The median check (ms) after 1,000 new lines, on an index of 10,000 lines and on one
/// of 1,000,000.
pub fn measure(rounds: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("images")).unwrap();
    for i in 0..10 {
        fs::write(dir.path().join(format!("images/{i}.jpg")), b"jpeg").unwrap();
    }
    (
        median_check_ms(dir.path(), 10_000, rounds),
        median_check_ms(dir.path(), 1_000_000, rounds),
    )
}

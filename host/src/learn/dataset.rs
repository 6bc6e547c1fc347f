//! The dataset monitor: reads only what was appended to a Sedna data index since the last
//! check.
//!
//! A `txt` index has one sample per line, paths relative to the index file:
//! `images/a.jpg x1,y1,x2,y2,class [x1,y1,x2,y2,class ...]` for detection, or
//! `images/a.jpg label` for classification. A `csv` index has a header line, then
//! `image,label` rows. Unlike Sedna, blank and `#` comment lines are not samples; a
//! malformed line or a missing image is reported with its line number and never stops
//! the job; a truncated or replaced index is noticed and read again from the start.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::media::{Label, Sample};
use crate::spec::Format;
use xxhash_rust::xxh3::xxh3_64;

/// How much of the index's beginning identifies it: a different beginning means the file
/// was replaced, and is read again from the start.
const HEAD: usize = 4096;

/// A line that is not a sample, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
}

/// Where the last check stopped; persisted with the job so that a restart goes on from
/// there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Bytes consumed: always just after a line break.
    pub offset: u64,
    /// Lines consumed.
    pub lines: u64,
    /// Hash of the first `min(HEAD, offset)` bytes when they were read.
    pub head: u64,
}

/// What one check found.
#[derive(Debug, Default, PartialEq)]
pub struct Check {
    pub samples: Vec<Sample>,
    pub rejected: Vec<Rejected>,
    /// The index was truncated or replaced, so it was read from the start.
    pub rescanned: bool,
}

pub struct DatasetMonitor {
    index: PathBuf,
    format: Format,
    cursor: Cursor,
}

impl DatasetMonitor {
    pub fn new(index: impl Into<PathBuf>, format: Format) -> Self {
        Self::resume(index, format, Cursor::default())
    }

    /// Goes on from a cursor saved by an earlier run.
    pub fn resume(index: impl Into<PathBuf>, format: Format, cursor: Cursor) -> Self {
        DatasetMonitor {
            index: index.into(),
            format,
            cursor,
        }
    }

    pub fn index(&self) -> &Path {
        &self.index
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Reads the complete lines appended since the last check. A last line without its
    /// line break is being written: it is left for the next check.
    pub fn check(&mut self) -> io::Result<Check> {
        let mut file = File::open(&self.index)?;
        let len = file.metadata()?.len();
        let mut check = Check::default();
        let consumed = self.cursor.offset > 0;
        if consumed
            && (len < self.cursor.offset
                || head_hash(&mut file, self.cursor.offset)? != self.cursor.head)
        {
            self.cursor = Cursor::default();
            check.rescanned = true;
        }
        file.seek(SeekFrom::Start(self.cursor.offset))?;
        let mut appended = Vec::with_capacity((len - self.cursor.offset) as usize);
        (&mut file)
            .take(len - self.cursor.offset)
            .read_to_end(&mut appended)?;
        let Some(end) = appended.iter().rposition(|&b| b == b'\n') else {
            return Ok(check);
        };
        let base = self.index.parent().unwrap_or(Path::new("."));
        for raw in appended[..end].split(|&b| b == b'\n') {
            self.cursor.lines += 1;
            let line = self.cursor.lines;
            let text = String::from_utf8_lossy(raw);
            let text = text.trim_end_matches('\r').trim();
            if text.is_empty() || text.starts_with('#') || (self.format == Format::Csv && line == 1)
            {
                continue;
            }
            match parse_line(text, self.format).and_then(|(image, label)| {
                let image = base.join(image);
                if image.is_file() {
                    Ok(Sample { line, image, label })
                } else {
                    Err(format!("image {} does not exist", image.display()))
                }
            }) {
                Ok(sample) => check.samples.push(sample),
                Err(reason) => check.rejected.push(Rejected { line, reason }),
            }
        }
        self.cursor.offset += end as u64 + 1;
        self.cursor.head = head_hash(&mut file, self.cursor.offset)?;
        Ok(check)
    }
}

/// The hash of the first `min(HEAD, upto)` bytes.
fn head_hash(file: &mut File, upto: u64) -> io::Result<u64> {
    let mut head = vec![0; HEAD.min(upto as usize)];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    Ok(xxh3_64(&head))
}

fn parse_line(text: &str, format: Format) -> Result<(&str, Label), String> {
    match format {
        Format::Csv => match text
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [image, label] if !image.is_empty() && !label.is_empty() => {
                Ok((image, Label::Class(label.to_string())))
            }
            _ => Err("expected `image,label`".to_string()),
        },
        Format::Txt => {
            let mut fields = text.split_whitespace();
            let image = fields.next().unwrap_or_default();
            let rest: Vec<&str> = fields.collect();
            match rest.as_slice() {
                [] => Err(format!("{image}: no label after the image path")),
                [single] if !single.contains(',') => Ok((image, Label::Class(single.to_string()))),
                boxes => boxes
                    .iter()
                    .map(|b| parse_box(b))
                    .collect::<Result<_, _>>()
                    .map(|boxes| (image, Label::Boxes(boxes))),
            }
        }
    }
}

fn parse_box(text: &str) -> Result<([f32; 4], u32), String> {
    let bad = || format!("box {text:?} is not x1,y1,x2,y2,class");
    let fields: Vec<&str> = text.split(',').collect();
    let [x1, y1, x2, y2, class] = fields.as_slice() else {
        return Err(bad());
    };
    let n = |s: &str| s.parse::<f32>().ok().filter(|v| v.is_finite());
    let corners = [n(x1), n(y1), n(x2), n(y2)];
    let (Some(x1), Some(y1), Some(x2), Some(y2)) = (corners[0], corners[1], corners[2], corners[3])
    else {
        return Err(bad());
    };
    let class = class.parse::<u32>().map_err(|_| bad())?;
    if x2 <= x1 || y2 <= y1 {
        return Err(format!("box {text:?} has x2 <= x1 or y2 <= y1"));
    }
    Ok(([x1, y1, x2, y2], class))
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    use super::*;

    struct Index {
        dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Index {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("images")).unwrap();
            for name in ["a.jpg", "b.jpg"] {
                fs::write(dir.path().join("images").join(name), b"jpeg").unwrap();
            }
            let path = dir.path().join("train_data.txt");
            fs::write(&path, "").unwrap();
            Index { dir, path }
        }

        fn append(&self, text: &str) {
            OpenOptions::new()
                .append(true)
                .open(&self.path)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
    }

    #[test]
    fn reads_only_what_was_appended() {
        let index = Index::new();
        let mut monitor = DatasetMonitor::new(&index.path, Format::Txt);
        assert_eq!(monitor.check().unwrap(), Check::default());
        index.append("images/a.jpg 1,2,30,40,0 5,5,9,9,2\nimages/b.jpg 0,0,10,10,1\n");
        let first = monitor.check().unwrap();
        assert_eq!(first.samples.len(), 2);
        assert_eq!(
            first.samples[0].label,
            Label::Boxes(vec![([1.0, 2.0, 30.0, 40.0], 0), ([5.0, 5.0, 9.0, 9.0], 2)])
        );
        assert_eq!(first.samples[1].line, 2);
        assert_eq!(
            first.samples[0].image,
            index.dir.path().join("images/a.jpg")
        );
        assert_eq!(
            monitor.check().unwrap(),
            Check::default(),
            "nothing new, nothing counted twice"
        );
        index.append("images/a.jpg cat\n");
        let second = monitor.check().unwrap();
        assert_eq!(second.samples.len(), 1);
        assert_eq!(second.samples[0].line, 3);
        assert_eq!(second.samples[0].label, Label::Class("cat".into()));
    }

    #[test]
    fn blank_comment_crlf_and_partial_lines() {
        let index = Index::new();
        let mut monitor = DatasetMonitor::new(&index.path, Format::Txt);
        index.append("\n# labelled on monday\r\nimages/a.jpg 1,1,5,5,0\r\n   \nimages/b.jpg 1,1,5");
        let check = monitor.check().unwrap();
        assert_eq!(check.samples.len(), 1, "{check:?}");
        assert_eq!(check.samples[0].line, 3);
        assert!(check.rejected.is_empty(), "{check:?}");
        // The half-written last line completes later and counts once.
        index.append(",5,1\n");
        let check = monitor.check().unwrap();
        assert_eq!(check.samples.len(), 1);
        assert_eq!(check.samples[0].line, 5);
        assert_eq!(
            check.samples[0].label,
            Label::Boxes(vec![([1.0, 1.0, 5.0, 5.0], 1)])
        );
    }

    #[test]
    fn malformed_lines_and_missing_images_are_reported_not_fatal() {
        let index = Index::new();
        let mut monitor = DatasetMonitor::new(&index.path, Format::Txt);
        index.append(
            "images/a.jpg 1,2,3\nimages/a.jpg\nimages/missing.jpg 1,1,5,5,0\nimages/a.jpg 5,5,1,1,0\nimages/a.jpg 1,1,5,5,x\nimages/b.jpg 1,1,5,5,3\n",
        );
        let check = monitor.check().unwrap();
        assert_eq!(check.samples.len(), 1);
        assert_eq!(check.samples[0].line, 6);
        let lines: Vec<u64> = check.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5]);
        assert!(
            check.rejected[0].reason.contains("x1,y1,x2,y2,class"),
            "{:?}",
            check.rejected
        );
        assert!(check.rejected[1].reason.contains("no label"));
        assert!(
            check.rejected[2]
                .reason
                .contains("missing.jpg does not exist")
        );
        assert!(check.rejected[3].reason.contains("x2 <= x1"));
    }

    #[test]
    fn truncation_and_replacement_rescan_from_the_start() {
        let index = Index::new();
        let mut monitor = DatasetMonitor::new(&index.path, Format::Txt);
        index.append("images/a.jpg 1,1,5,5,0\nimages/b.jpg 1,1,5,5,0\n");
        assert_eq!(monitor.check().unwrap().samples.len(), 2);

        fs::write(&index.path, "images/b.jpg 2,2,6,6,1\n").unwrap();
        let check = monitor.check().unwrap();
        assert!(check.rescanned);
        assert_eq!(check.samples.len(), 1);
        assert_eq!(check.samples[0].line, 1);

        // Same length, other content: replaced.
        fs::write(&index.path, "images/a.jpg 3,3,6,6,1\n").unwrap();
        let check = monitor.check().unwrap();
        assert!(check.rescanned);
        assert_eq!(
            check.samples[0].label,
            Label::Boxes(vec![([3.0, 3.0, 6.0, 6.0], 1)])
        );
    }

    #[test]
    fn a_saved_cursor_resumes_without_counting_twice() {
        let index = Index::new();
        let mut monitor = DatasetMonitor::new(&index.path, Format::Txt);
        index.append("images/a.jpg 1,1,5,5,0\n");
        monitor.check().unwrap();
        let saved = serde_json::to_string(monitor.cursor()).unwrap();
        index.append("images/b.jpg 1,1,5,5,0\n");
        let mut resumed = DatasetMonitor::resume(
            &index.path,
            Format::Txt,
            serde_json::from_str(&saved).unwrap(),
        );
        let check = resumed.check().unwrap();
        assert_eq!(check.samples.len(), 1);
        assert_eq!(check.samples[0].line, 2);
    }

    #[test]
    fn csv_skips_its_header() {
        let index = Index::new();
        let csv = index.dir.path().join("index.csv");
        fs::write(&csv, "image,label\nimages/a.jpg,cat\nimages/b.jpg\n").unwrap();
        let check = DatasetMonitor::new(&csv, Format::Csv).check().unwrap();
        assert_eq!(check.samples.len(), 1);
        assert_eq!(check.samples[0].label, Label::Class("cat".into()));
        assert_eq!(check.rejected[0].line, 3);
    }
}

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
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::media::{Label, Sample};
use crate::spec::Format;
use crate::storage::{Location, Storage, StorageError, read_local};
use xxhash_rust::xxh3::xxh3_64;

/// The longest index line taken as a sample (a path and its boxes); a longer one is
/// refused before it is parsed or stored.
pub const MAX_LINE: usize = 64 << 10;

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

/// How a monitor reaches object storage: an index there is read by ranges through
/// `storage`; images there (beside a remote index, or named by URL in any index) are
/// downloaded once into `mirror` (`<mirror>/s3/<bucket>/<key>`, ...), where training
/// reads them.
struct Remote {
    storage: Arc<Storage>,
    mirror: PathBuf,
}

pub struct DatasetMonitor {
    index: Location,
    format: Format,
    cursor: Cursor,
    remote: Option<Remote>,
    /// Where a local index's images may be (resolved); `None`: anywhere.
    confined: Option<Confinement>,
}

/// The directories a local index's images must be under: the index's own and the ones
/// its Dataset allows, each resolved (`..` and symbolic links) when the monitor starts.
struct Confinement {
    own: PathBuf,
    allowed: Vec<PathBuf>,
}

impl Confinement {
    fn admits(&self, image: &std::path::Path) -> bool {
        image.starts_with(&self.own) || self.allowed.iter().any(|d| image.starts_with(d))
    }
}

impl DatasetMonitor {
    pub fn new(index: impl Into<PathBuf>, format: Format) -> Self {
        Self::resume(index, format, Cursor::default())
    }

    /// Goes on from a cursor saved by an earlier run.
    pub fn resume(index: impl Into<PathBuf>, format: Format, cursor: Cursor) -> Self {
        DatasetMonitor {
            index: Location::Local(index.into()),
            format,
            cursor,
            remote: None,
            confined: None,
        }
    }

    /// A monitor of an index at `index` (a local path or an object), going on from
    /// `cursor`; remote images (beside a remote index, or named by `s3://` or `http(s)://`
    /// URL in its lines) are downloaded into `mirror`.
    pub fn at(
        index: Location,
        format: Format,
        cursor: Cursor,
        storage: Arc<Storage>,
        mirror: PathBuf,
    ) -> Self {
        DatasetMonitor {
            index,
            format,
            cursor,
            remote: Some(Remote { storage, mirror }),
            confined: None,
        }
    }

    /// Confines a local index's images to its own directory and the directories
    /// `allowed` (absolute): a line naming an image elsewhere (by `..`, an absolute path
    /// or a symbolic link out) is rejected, naming the Dataset field that would allow it.
    /// An index in object storage, and images named by URL, are not affected.
    pub fn confined(mut self, allowed: &[String]) -> Result<Self, String> {
        let Some(own) = self.index.local().and_then(|p| p.parent()) else {
            return Ok(self);
        };
        let own = if own.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            own
        };
        let resolve = |dir: &std::path::Path, what: &str| {
            dir.canonicalize()
                .map_err(|e| format!("{what} {}: {e}", dir.display()))
        };
        let own = resolve(own, "the index's directory")?;
        let allowed = allowed
            .iter()
            .map(|d| {
                let dir = std::path::Path::new(d);
                if !dir.is_absolute() {
                    return Err(format!(
                        "`spec.imageDirs` entry {d:?} is not an absolute path"
                    ));
                }
                resolve(dir, "`spec.imageDirs` entry")
            })
            .collect::<Result<_, _>>()?;
        self.confined = Some(Confinement { own, allowed });
        Ok(self)
    }

    pub fn index(&self) -> &Location {
        &self.index
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Goes back to `cursor` (one this monitor gave): what was read after it is read
    /// again by the next check, because it could not be kept.
    pub fn rewind(&mut self, cursor: Cursor) {
        self.cursor = cursor;
    }

    /// Reads the complete lines appended since the last check. A last line without its
    /// line break is being written: it is left for the next check. Reading an object
    /// costs its size, its first `min(4 KiB, offset)` bytes (to notice a replaced index)
    /// and what was appended.
    pub fn check(&mut self) -> io::Result<Check> {
        let len = self.len()?;
        let mut check = Check::default();
        let mut cursor = self.cursor.clone();
        // The index's first bytes, as far as they are known.
        let mut prefix = Vec::new();
        if cursor.offset > 0 {
            if len >= cursor.offset {
                prefix = self.read(0, Some(HEAD.min(cursor.offset as usize) as u64))?;
            }
            if len < cursor.offset || xxh3_64(&prefix) != cursor.head {
                cursor = Cursor::default();
                prefix.clear();
                check.rescanned = true;
            }
        }
        if len <= cursor.offset {
            self.cursor = cursor;
            return Ok(check);
        }
        let appended = self.read(cursor.offset, Some(len))?;
        let Some(end) = appended.iter().rposition(|&b| b == b'\n') else {
            self.cursor = cursor;
            return Ok(check);
        };
        for raw in appended[..end].split(|&b| b == b'\n') {
            cursor.lines += 1;
            let line = cursor.lines;
            if raw.len() > MAX_LINE {
                check.rejected.push(Rejected {
                    line,
                    reason: format!(
                        "{} bytes: an index line holds at most {MAX_LINE} (a path and its label)",
                        raw.len()
                    ),
                });
                continue;
            }
            let text = String::from_utf8_lossy(raw);
            let text = text.trim_end_matches('\r').trim();
            if text.is_empty() || text.starts_with('#') || (self.format == Format::Csv && line == 1)
            {
                continue;
            }
            let (image, label) = match parse_line(text, self.format) {
                Ok(parsed) => parsed,
                Err(reason) => {
                    check.rejected.push(Rejected { line, reason });
                    continue;
                }
            };
            match self.image(image) {
                Ok(image) => check.samples.push(Sample { line, image, label }),
                // The storage is down: stop here and read this line again next time.
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(e) => check.rejected.push(Rejected {
                    line,
                    reason: e.to_string(),
                }),
            }
        }
        let known = prefix.len();
        prefix.extend_from_slice(&appended[..(HEAD - known.min(HEAD)).min(appended.len())]);
        cursor.offset += end as u64 + 1;
        prefix.truncate(HEAD.min(cursor.offset as usize));
        cursor.head = xxh3_64(&prefix);
        self.cursor = cursor;
        Ok(check)
    }

    fn len(&self) -> io::Result<u64> {
        match (&self.index, &self.remote) {
            (Location::Local(path), _) => Ok(File::open(path)?.metadata()?.len()),
            (location, Some(remote)) => Ok(remote.storage.head(location)?.size),
            (_, None) => unreachable!("a remote index has its storage"),
        }
    }

    /// Bytes `from..to` of the index.
    fn read(&self, from: u64, to: Option<u64>) -> io::Result<Vec<u8>> {
        match (&self.index, &self.remote) {
            (Location::Local(path), _) => Ok(read_local(path, from, to)?.0.into()),
            (location, Some(remote)) => Ok(remote.storage.read(location, from, to)?.0.into()),
            (_, None) => unreachable!("a remote index has its storage"),
        }
    }

    /// The local file of an image the index names (relative to the index, or by URL):
    /// downloaded into the mirror the first time when it is remote.
    fn image(&self, named: &str) -> Result<PathBuf, StorageError> {
        let location = match Location::parse(named) {
            Ok(url) if url.is_remote() => url,
            _ => self.index.join(named)?,
        };
        let (Some(remote), true) = (&self.remote, location.is_remote()) else {
            let Some(path) = location.local() else {
                return Err(StorageError::Invalid {
                    location: location.to_string(),
                    message: "an image in object storage, in an index read without access to it"
                        .into(),
                });
            };
            let path = path.to_path_buf();
            if !path.is_file() {
                return Err(StorageError::Io {
                    path: format!("image {}", path.display()),
                    source: io::Error::new(io::ErrorKind::NotFound, "does not exist"),
                });
            }
            if let Some(confined) = &self.confined {
                let real = path.canonicalize().map_err(|source| StorageError::Io {
                    path: format!("image {}", path.display()),
                    source,
                })?;
                if !confined.admits(&real) {
                    return Err(StorageError::Invalid {
                        location: path.display().to_string(),
                        message: format!(
                            "the image is outside the index's directory {}{}: move it there, or list its directory in the Dataset's `spec.imageDirs`",
                            confined.own.display(),
                            if real != path {
                                format!(" (it resolves to {})", real.display())
                            } else {
                                String::new()
                            }
                        ),
                    });
                }
            }
            return Ok(path);
        };
        let local =
            remote.mirror.join(
                location
                    .mirror_path()
                    .ok_or_else(|| StorageError::Invalid {
                        location: location.to_string(),
                        message: "a URL without a host".into(),
                    })?,
            );
        if !local.is_file() {
            remote.storage.download(&location, &local, None)?;
        }
        Ok(local)
    }
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

    mod properties {
        use proptest::prelude::*;

        use super::super::{Format, parse_line};
        use crate::media::Label;

        proptest! {
            /// Any line, any format: an answer, never a panic; an accepted line names an
            /// image and, for boxes, well-formed finite ones.
            #[test]
            fn any_line_is_parsed_or_refused(line in "\\PC{0,200}", csv in any::<bool>()) {
                let format = if csv { Format::Csv } else { Format::Txt };
                if let Ok((image, label)) = parse_line(line.trim(), format) {
                    prop_assert!(!image.is_empty());
                    if let Label::Boxes(boxes) = label {
                        for ([x1, y1, x2, y2], _) in boxes {
                            prop_assert!([x1, y1, x2, y2].iter().all(|v| v.is_finite()));
                            prop_assert!(x2 > x1 && y2 > y1);
                        }
                    }
                }
            }

            /// Lines shaped like boxes, with numbers of every kind.
            #[test]
            fn box_lines_keep_exactly_their_good_boxes(
                boxes in prop::collection::vec(
                    (any::<f32>(), any::<f32>(), any::<f32>(), any::<f32>(), any::<u32>()), 1..6)
            ) {
                let text: Vec<String> = boxes
                    .iter()
                    .map(|(a, b, c, d, k)| format!("{a},{b},{c},{d},{k}"))
                    .collect();
                let line = format!("img.png {}", text.join(" "));
                let good = boxes.iter().all(|&(a, b, c, d, _)| {
                    [a, b, c, d].iter().all(|v| v.is_finite()) && c > a && d > b
                });
                prop_assert_eq!(parse_line(&line, Format::Txt).is_ok(), good, "{}", line);
            }
        }
    }

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
    fn images_outside_the_index_directory_are_rejected_unless_allowed() {
        let index = Index::new();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.jpg");
        fs::write(&secret, b"jpeg").unwrap();
        std::os::unix::fs::symlink(&secret, index.dir.path().join("images/link.jpg")).unwrap();
        let escape = pathdiff(outside.path(), index.dir.path());
        index.append(&format!(
            "images/a.jpg 0\n{}/secret.jpg 0\n{escape}/secret.jpg 0\nimages/link.jpg 0\nimages/../images/b.jpg 0\n",
            outside.path().display()
        ));
        let check = DatasetMonitor::new(&index.path, Format::Txt)
            .confined(&[])
            .unwrap()
            .check()
            .unwrap();
        let lines: Vec<u64> = check.samples.iter().map(|s| s.line).collect();
        assert_eq!(lines, [1, 5], "inside, by any path, is taken");
        let rejected: Vec<u64> = check.rejected.iter().map(|r| r.line).collect();
        assert_eq!(
            rejected,
            [2, 3, 4],
            "absolute, `..` and a symbolic link out"
        );
        for r in &check.rejected {
            assert!(r.reason.contains("`spec.imageDirs`"), "{}", r.reason);
        }
        assert!(
            check.rejected[2].reason.contains("resolves to"),
            "{}",
            check.rejected[2].reason
        );
        // A directory the Dataset allows; a relative one is refused.
        let allowed = outside.path().display().to_string();
        let check = DatasetMonitor::new(&index.path, Format::Txt)
            .confined(&[allowed])
            .unwrap()
            .check()
            .unwrap();
        assert_eq!(check.samples.len(), 5, "{:?}", check.rejected);
        let error = DatasetMonitor::new(&index.path, Format::Txt)
            .confined(&["images".into()])
            .err()
            .unwrap();
        assert!(error.contains("not an absolute path"), "{error}");
    }

    /// `to` as a path relative to `from` (through `..`).
    fn pathdiff(to: &std::path::Path, from: &std::path::Path) -> String {
        let ups = from.components().count() - 1;
        let mut path = "../".repeat(ups);
        path.push_str(&to.display().to_string()[1..]);
        path
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
                .contains("missing.jpg: does not exist")
        );
        assert!(check.rejected[3].reason.contains("x2 <= x1"));
    }

    #[test]
    fn a_line_too_long_to_be_a_sample_is_refused_and_the_next_read() {
        let index = Index::new();
        let mut monitor = DatasetMonitor::new(&index.path, Format::Txt);
        let huge = format!("images/a.jpg {}\n", "x".repeat(MAX_LINE));
        index.append(&format!("{huge}images/b.jpg 1,1,5,5,3\n"));
        let check = monitor.check().unwrap();
        assert_eq!(check.rejected.len(), 1);
        assert_eq!(check.rejected[0].line, 1);
        assert!(
            check.rejected[0].reason.contains("at most 65536"),
            "{:?}",
            check.rejected
        );
        assert_eq!(check.samples.len(), 1);
        assert_eq!(check.samples[0].line, 2);
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

//! Labelling interop: hard examples out to a labelling tool, corrected labels back into a
//! Sedna data index. Two formats labelling tools read and write:
//!
//! - YOLO: `images/<name>.png` and `labels/<name>.txt`, one box a line as
//!   `class cx cy w h` on [0, 1]; class names in `classes.txt`, one a line.
//! - COCO: `images/<name>.png` and `annotations.json` (`images`, `annotations` with
//!   `bbox: [x, y, width, height]` in pixels, `categories`).
//!
//! Export writes the model's predictions as pre-labels; import validates each label (a
//! known class, a box inside its image) and appends the accepted ones to the index.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::pipeline::hard_examples::{HardExampleRecord, INDEX};
use crate::plugin::Prediction;
use crate::plugin::json::prediction_from_json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LabelFormat {
    Yolo,
    Coco,
}

/// A label that was not imported: where it is and why.
#[derive(Debug, PartialEq)]
pub struct Reject {
    pub file: PathBuf,
    /// 1-based line (YOLO) or annotation number (COCO); 0 for the file as a whole.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file.display(), self.reason),
            line => write!(f, "{}:{line}: {}", self.file.display(), self.reason),
        }
    }
}

/// One hard example as the worker kept it.
struct HardExample {
    image: PathBuf,
    width: u32,
    height: u32,
    boxes: Vec<([f32; 4], u32)>,
}

/// Reads the hard-example store's `index.jsonl`; entries whose image is gone (the store
/// is bounded) or that are not detections are skipped.
fn hard_examples(dir: &Path) -> anyhow::Result<Vec<HardExample>> {
    let path = dir.join(INDEX);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}; name a hard-example directory", path.display()))?;
    let mut examples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let record: HardExampleRecord = match serde_json::from_str(line) {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!("{}:{}: skipped: {e}", path.display(), number + 1);
                continue;
            }
        };
        let image = dir.join(&record.image);
        if !image.is_file() {
            continue;
        }
        let Ok(Prediction::Detections(detections)) = prediction_from_json(&record.prediction)
        else {
            tracing::warn!(
                "{}:{}: skipped: not a detection (YOLO and COCO hold boxes)",
                path.display(),
                number + 1
            );
            continue;
        };
        examples.push(HardExample {
            image,
            width: record.width,
            height: record.height,
            boxes: detections.rows().map(|(b, _, class)| (b, class)).collect(),
        });
    }
    Ok(examples)
}

/// Class names: those given, else `0`, `1`, ... up to the largest class seen.
fn class_names(given: &[String], largest: Option<u32>) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    (0..largest.map_or(0, |c| c + 1))
        .map(|c| c.to_string())
        .collect()
}

/// Writes the hard examples in `hard_examples` to `out` in `format`, the predictions as
/// pre-labels. Returns how many examples were written.
pub fn export(
    hard_examples_dir: &Path,
    out: &Path,
    format: LabelFormat,
    classes: &[String],
) -> anyhow::Result<usize> {
    let examples = hard_examples(hard_examples_dir)?;
    let largest = examples.iter().flat_map(|e| &e.boxes).map(|b| b.1).max();
    let names = class_names(classes, largest);
    if let Some(class) = largest.filter(|c| *c as usize >= names.len()) {
        anyhow::bail!(
            "a prediction has class {class} but --classes names {}; name them all",
            names.len()
        );
    }
    std::fs::create_dir_all(out.join("images"))?;
    let file_name = |e: &HardExample| e.image.file_name().unwrap_or_default().to_owned();
    for example in &examples {
        std::fs::copy(&example.image, out.join("images").join(file_name(example)))?;
    }
    match format {
        LabelFormat::Yolo => {
            std::fs::create_dir_all(out.join("labels"))?;
            for e in &examples {
                let (w, h) = (e.width.max(1) as f32, e.height.max(1) as f32);
                let mut text = String::new();
                for ([x1, y1, x2, y2], class) in &e.boxes {
                    let (cx, cy) = ((x1 + x2) / 2.0 / w, (y1 + y2) / 2.0 / h);
                    let (bw, bh) = ((x2 - x1) / w, (y2 - y1) / h);
                    let _ = writeln!(text, "{class} {cx:.6} {cy:.6} {bw:.6} {bh:.6}");
                }
                let stem = e.image.file_stem().unwrap_or_default().to_string_lossy();
                crate::files::write_atomically(
                    &out.join("labels").join(format!("{stem}.txt")),
                    text.as_bytes(),
                )?;
            }
            crate::files::write_atomically(
                &out.join("classes.txt"),
                names
                    .iter()
                    .map(|n| format!("{n}\n"))
                    .collect::<String>()
                    .as_bytes(),
            )?;
        }
        LabelFormat::Coco => {
            let mut annotations = Vec::new();
            for (id, e) in examples.iter().enumerate() {
                for ([x1, y1, x2, y2], class) in &e.boxes {
                    annotations.push(json!({
                        "id": annotations.len() + 1,
                        "image_id": id + 1,
                        "category_id": class + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": (x2 - x1) * (y2 - y1),
                        "iscrowd": 0,
                    }));
                }
            }
            let document = json!({
                "images": examples.iter().enumerate().map(|(id, e)| json!({
                    "id": id + 1,
                    "file_name": format!("images/{}", file_name(e).to_string_lossy()),
                    "width": e.width,
                    "height": e.height,
                })).collect::<Vec<_>>(),
                "annotations": annotations,
                "categories": names.iter().enumerate().map(|(id, name)| json!({
                    "id": id + 1, "name": name,
                })).collect::<Vec<_>>(),
            });
            crate::files::write_atomically(
                &out.join("annotations.json"),
                serde_json::to_string_pretty(&document)?.as_bytes(),
            )?;
        }
    }
    Ok(examples.len())
}

/// An image with its validated boxes, ready to become an index line.
struct Labelled {
    image: PathBuf,
    /// Where the image is in the export folder, which is where it goes under `labelled/`:
    /// two images of one name in two folders stay two.
    relative: PathBuf,
    boxes: Vec<([f32; 4], u32)>,
}

/// `name` (an image path the labels give) as a path inside `dir`: relative, without `..`,
/// not through a link that leads out, and without blanks (an index line could not hold
/// it). Says why not.
fn inside(dir: &Path, name: &str) -> Result<PathBuf, String> {
    use std::path::Component;
    let relative: PathBuf = Path::new(name)
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    if !plain || relative.as_os_str().is_empty() {
        return Err(format!(
            "{name:?} is not a path inside the export folder: images must be under it, named relative to it"
        ));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!(
            "{name:?} has a blank in it, which a data index line cannot hold: rename the image"
        ));
    }
    let (real, root) = (dir.join(&relative).canonicalize(), dir.canonicalize());
    match (real, root) {
        (Ok(real), Ok(root)) if real.starts_with(&root) => Ok(relative),
        (Ok(_), Ok(_)) => Err(format!(
            "{name:?} leads out of the export folder (through a link): refused"
        )),
        (Err(e), _) | (_, Err(e)) => Err(format!("cannot read the image {name}: {e}")),
    }
}

/// What an import did.
#[derive(Debug)]
pub struct Imported {
    pub samples: usize,
    pub rejects: Vec<Reject>,
}

/// Reads the labels in `dir` (as [`export`] writes them, corrected by people), copies
/// their images beside `index` (in `labelled/`) and appends one line per image to it.
/// A label with an unknown class or a box outside its image is rejected, by file and
/// line, and the image's other labels are kept.
pub fn import(dir: &Path, format: LabelFormat, index: &Path) -> anyhow::Result<Imported> {
    let mut rejects = Vec::new();
    let labelled = match format {
        LabelFormat::Yolo => read_yolo(dir, &mut rejects)?,
        LabelFormat::Coco => read_coco(dir, &mut rejects)?,
    };
    let base = index.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(base.join("labelled"))?;
    let mut lines = String::new();
    let mut samples = 0;
    for sample in &labelled {
        if sample.boxes.is_empty() {
            rejects.push(Reject {
                file: sample.image.clone(),
                line: 0,
                reason: "no boxes: not added (a data index line needs at least one)".into(),
            });
            continue;
        }
        samples += 1;
        let target = base.join("labelled").join(&sample.relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&sample.image, &target)?;
        let name: Vec<String> = sample
            .relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        lines.push_str(&format!("labelled/{}", name.join("/")));
        for ([x1, y1, x2, y2], class) in &sample.boxes {
            let _ = write!(lines, " {x1:.1},{y1:.1},{x2:.1},{y2:.1},{class}");
        }
        lines.push('\n');
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(index)
        .map_err(|e| anyhow::anyhow!("{}: {e}", index.display()))?;
    file.write_all(lines.as_bytes())?;
    file.sync_all()?;
    Ok(Imported { samples, rejects })
}

/// Checks a pixel box against its image and the class against the known ones.
fn check_box(
    b: [f32; 4],
    class: i64,
    classes: usize,
    size: (u32, u32),
) -> Result<([f32; 4], u32), String> {
    if class < 0 || class as usize >= classes {
        return Err(format!("class {class} is not one of the {classes} classes"));
    }
    let [x1, y1, x2, y2] = b;
    let (w, h) = (size.0 as f32 + 0.5, size.1 as f32 + 0.5);
    let inside = x1 >= -0.5 && y1 >= -0.5 && x2 <= w && y2 <= h && x1 < x2 && y1 < y2;
    if !b.iter().all(|v| v.is_finite()) || !inside {
        return Err(format!(
            "box [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}] is not inside the {}x{} image",
            size.0, size.1
        ));
    }
    Ok((b, class as u32))
}

fn image_size(path: &Path) -> Result<(u32, u32), String> {
    image::image_dimensions(path)
        .map_err(|e| format!("cannot read the image {}: {e}", path.display()))
}

fn read_yolo(dir: &Path, rejects: &mut Vec<Reject>) -> anyhow::Result<Vec<Labelled>> {
    let classes_file = dir.join("classes.txt");
    let classes = std::fs::read_to_string(&classes_file)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; YOLO labels need their class names",
                classes_file.display()
            )
        })?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("labels"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("labels").display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let mut labelled = Vec::new();
    for file in files {
        let stem = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let image = ["png", "jpg", "jpeg"]
            .iter()
            .map(|x| format!("images/{stem}.{x}"))
            .find(|name| dir.join(name).is_file());
        let reject = |line, reason: String| Reject {
            file: file.clone(),
            line,
            reason,
        };
        let Some(name) = image else {
            rejects.push(reject(0, format!("no image images/{stem}.png (or .jpg)")));
            continue;
        };
        let relative = match inside(dir, &name) {
            Ok(relative) => relative,
            Err(reason) => {
                rejects.push(reject(0, reason));
                continue;
            }
        };
        let image = dir.join(&relative);
        let size = match image_size(&image) {
            Ok(size) => size,
            Err(e) => {
                rejects.push(reject(0, e));
                continue;
            }
        };
        let mut boxes = Vec::new();
        for (number, line) in std::fs::read_to_string(&file)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parsed = match fields.as_slice() {
                [class, cx, cy, w, h] => class.parse::<i64>().ok().zip(
                    [cx, cy, w, h]
                        .map(|v| v.parse::<f32>().ok())
                        .into_iter()
                        .collect::<Option<Vec<f32>>>(),
                ),
                _ => None,
            };
            let Some((class, v)) = parsed else {
                rejects.push(reject(
                    number + 1,
                    format!("{line:?} is not `class cx cy w h`"),
                ));
                continue;
            };
            let (iw, ih) = (size.0 as f32, size.1 as f32);
            let b = [
                (v[0] - v[2] / 2.0) * iw,
                (v[1] - v[3] / 2.0) * ih,
                (v[0] + v[2] / 2.0) * iw,
                (v[1] + v[3] / 2.0) * ih,
            ];
            match check_box(b, class, classes, size) {
                Ok(b) => boxes.push(b),
                Err(reason) => rejects.push(reject(number + 1, reason)),
            }
        }
        labelled.push(Labelled {
            image,
            relative,
            boxes,
        });
    }
    Ok(labelled)
}

fn read_coco(dir: &Path, rejects: &mut Vec<Reject>) -> anyhow::Result<Vec<Labelled>> {
    let file = dir.join("annotations.json");
    let text =
        std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let document: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not COCO JSON: {e}", file.display()))?;
    let reject = |line, reason: String| Reject {
        file: file.clone(),
        line,
        reason,
    };
    // Category ids map to class indices in id order (as export writes them: 1, 2, ...);
    // one id twice would shift every class after it, so the file is refused.
    let mut categories: Vec<i64> = document["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_i64())
        .collect();
    categories.sort_unstable();
    if let Some(twice) = categories.windows(2).find(|w| w[0] == w[1]) {
        anyhow::bail!(
            "{}: categories has the id {} twice: give each category its own id",
            file.display(),
            twice[0]
        );
    }
    let mut labelled = Vec::new();
    let mut by_id = std::collections::HashMap::new();
    for image in document["images"].as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (image["id"].as_i64(), image["file_name"].as_str()) else {
            rejects.push(reject(0, format!("image {image} has no id or file_name")));
            continue;
        };
        let relative = match inside(dir, name) {
            Ok(relative) => relative,
            Err(reason) => {
                rejects.push(reject(0, format!("image {id}: {reason}")));
                continue;
            }
        };
        let path = dir.join(&relative);
        match image_size(&path) {
            Ok(size) => {
                by_id.insert(id, (labelled.len(), size));
                labelled.push(Labelled {
                    image: path,
                    relative,
                    boxes: Vec::new(),
                });
            }
            Err(e) => rejects.push(reject(0, e)),
        }
    }
    for (number, annotation) in document["annotations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let number = number + 1;
        let Some(&(at, size)) = annotation["image_id"]
            .as_i64()
            .and_then(|id| by_id.get(&id))
        else {
            rejects.push(reject(
                number,
                "its image_id names no readable image".into(),
            ));
            continue;
        };
        let bbox: Vec<f32> = annotation["bbox"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_f64().map(|v| v as f32))
            .collect();
        let [x, y, w, h] = bbox[..] else {
            rejects.push(reject(number, "bbox is not [x, y, width, height]".into()));
            continue;
        };
        let class = annotation["category_id"]
            .as_i64()
            .and_then(|id| categories.iter().position(|c| *c == id))
            .map_or(-1, |i| i as i64);
        match check_box([x, y, x + w, y + h], class, categories.len(), size) {
            Ok(b) => labelled[at].boxes.push(b),
            Err(reason) if class < 0 => rejects.push(reject(
                number,
                format!(
                    "category_id {} is not in categories ({reason})",
                    annotation["category_id"]
                ),
            )),
            Err(reason) => rejects.push(reject(number, reason)),
        }
    }
    Ok(labelled)
}

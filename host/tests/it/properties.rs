//! Property tests of the parsers that read untrusted input: the job YAML, ONNX models and
//! COCO and YOLO labels. Whatever the input, an answer (the resources, or an error naming where),
//! never a panic or a hang. (The data index's lines: `learn::dataset`'s own tests.)
//! `PROPTEST_CASES` sets how many inputs each tries (256 by default).

use std::time::{Duration, Instant};

use proptest::prelude::*;
use sedna::media::Model;
use sedna::spec;

/// Pieces of YAML, put together at random: indentation, flow collections, quotes,
/// anchors, the keys of Sedna's resources.
fn yaml() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "\n",
        "  ",
        "- ",
        ": ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "'",
        "\"",
        "#",
        "&a ",
        "*a",
        "---\n",
        "kind",
        "Dataset",
        "IncrementalLearningJob",
        "apiVersion",
        "sedna.io/v1alpha1",
        "spec",
        "metadata",
        "name",
        "url",
        "trainProb",
        "0.8",
        "1e308",
        "-1",
        "~",
        "!!str ",
        "|\n",
        ">\n",
        "\t",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(piece, 0..200).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn any_yaml_is_read_or_refused_quickly(text in yaml()) {
        let started = Instant::now();
        let _ = spec::parse(std::path::Path::new("fuzz.yaml"), &text);
        prop_assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn any_bytes_are_a_model_or_a_clear_error(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        if let Err(e) = Model::from_bytes("fuzz.onnx", &bytes) {
            prop_assert!(e.to_string().contains("fuzz.onnx"), "{}", e);
        }
    }

    /// A real model with a few bytes changed or cut short.
    #[test]
    fn a_damaged_model_is_a_model_or_a_clear_error(
        changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = crate::support::models::classifier().to_bytes();
        for (at, value) in changes {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Err(e) = Model::from_bytes("damaged.onnx", &bytes) {
            prop_assert!(e.to_string().contains("damaged.onnx"), "{}", e);
        }
    }

    /// COCO annotations of any shape: imported or refused by annotation, never a panic.
    #[test]
    fn any_coco_annotations_are_imported_or_refused(
        ids in prop::collection::vec(-2i64..4, 0..4),
        boxes in prop::collection::vec(prop::collection::vec(-1e3f64..1e3, 0..6), 0..6),
        names in prop::collection::vec("\\PC{0,12}", 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels");
        std::fs::create_dir_all(labels.join("images")).unwrap();
        image::RgbImage::new(40, 30).save(labels.join("images/a.png")).unwrap();
        let mut images = vec![serde_json::json!({"id": 1, "file_name": "images/a.png"})];
        images.extend(names.iter().map(|n| serde_json::json!({"id": 2, "file_name": n})));
        let document = serde_json::json!({
            "images": images,
            "annotations": boxes.iter().enumerate().map(|(i, b)| serde_json::json!({
                "id": i, "image_id": 1 + (i % 2), "category_id": ids.get(i).copied().unwrap_or(1),
                "bbox": b,
            })).collect::<Vec<_>>(),
            "categories": ids.iter().map(|id| serde_json::json!({"id": id})).collect::<Vec<_>>(),
        });
        std::fs::write(labels.join("annotations.json"), document.to_string()).unwrap();
        let index = dir.path().join("index.txt");
        let _ = sedna::learn::labels::import(&labels, sedna::learn::labels::LabelFormat::Coco, &index);
    }

    /// YOLO label files of any text and class lists of any names: imported or refused
    /// by line, never a panic; what is appended to the index is well-formed boxes only.
    #[test]
    fn any_yolo_labels_are_imported_or_refused(
        lines in prop::collection::vec(
            prop_oneof![
                "\\PC{0,40}",
                (-2i64..5, -0.5f64..1.5, -0.5f64..1.5, -0.5f64..1.5, -0.5f64..1.5)
                    .prop_map(|(k, x, y, w, h)| format!("{k} {x} {y} {w} {h}")),
            ],
            0..8,
        ),
        classes in prop::collection::vec("[a-z]{0,6}", 0..4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels");
        std::fs::create_dir_all(labels.join("images")).unwrap();
        std::fs::create_dir_all(labels.join("labels")).unwrap();
        image::RgbImage::new(40, 30).save(labels.join("images/a.png")).unwrap();
        std::fs::write(labels.join("labels/a.txt"), lines.join("\n")).unwrap();
        std::fs::write(labels.join("classes.txt"), classes.join("\n")).unwrap();
        let index = dir.path().join("index.txt");
        let _ = sedna::learn::labels::import(&labels, sedna::learn::labels::LabelFormat::Yolo, &index);
        let written = std::fs::read_to_string(&index).unwrap_or_default();
        for line in written.lines().filter(|l| !l.starts_with('#')) {
            for b in line.split_whitespace().skip(1) {
                let v: Vec<f64> = b.split(',').filter_map(|n| n.parse().ok()).collect();
                prop_assert!(v.len() == 5 && v[2] > v[0] && v[3] > v[1], "{line}");
            }
        }
    }
}

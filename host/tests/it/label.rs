//! `sedna label export|import`: hard examples to YOLO and COCO and back into a data index,
//! with bad labels rejected by file and line and the good ones kept.

use std::path::Path;
use std::process::{Command, Output};

/// A hard-example directory as the worker writes it: frames and `index.jsonl`.
fn hard_examples(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut index = String::new();
    for (name, prediction) in [
        (
            "cam-0-000001",
            "[[10.0,5.0,30.0,25.0,0.4,1],[40.0,10.0,60.0,40.0,0.9,0]]",
        ),
        ("cam-0-000002", "[[0.0,0.0,64.0,48.0,0.3,2]]"),
    ] {
        image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 200]))
            .save(dir.join(format!("{name}.png")))
            .unwrap();
        index.push_str(&format!(
            "{{\"image\":\"{name}.png\",\"width\":64,\"height\":48,\"prediction\":{prediction}}}\n"
        ));
    }
    std::fs::write(dir.join("index.jsonl"), index).unwrap();
}

fn sedna(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sedna"))
        .args(args)
        .output()
        .unwrap()
}

/// `sedna label import LABELS --format coco --index INDEX`.
fn import_coco(labels: &Path, index: &Path) -> Output {
    sedna(&[
        "label",
        "import",
        labels.to_str().unwrap(),
        "--format",
        "coco",
        "--index",
        index.to_str().unwrap(),
    ])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn round_trip(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (hard, labels, data) = (
        dir.path().join("hard"),
        dir.path().join("labels"),
        dir.path().join("data"),
    );
    hard_examples(&hard);
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let out = sedna(&[
        "label",
        "export",
        &p(&hard),
        "--format",
        format,
        "--out",
        &p(&labels),
        "--classes",
        "person,helmet,helmet-on",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("exported 2 hard examples"));
    assert!(labels.join("images/cam-0-000001.png").is_file());

    std::fs::create_dir_all(&data).unwrap();
    let index = data.join("index.txt");
    std::fs::write(&index, "# labelled by people\n").unwrap();
    let out = sedna(&[
        "label",
        "import",
        &p(&labels),
        "--format",
        format,
        "--index",
        &p(&index),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = std::fs::read_to_string(&index)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "# labelled by people",
            "labelled/images/cam-0-000001.png 10.0,5.0,30.0,25.0,1 40.0,10.0,60.0,40.0,0",
            "labelled/images/cam-0-000002.png 0.0,0.0,64.0,48.0,2",
        ],
        "{format}"
    );
    assert!(data.join("labelled/images/cam-0-000002.png").is_file());
}

#[test]
fn hard_examples_go_out_as_yolo_and_come_back_as_index_lines() {
    round_trip("yolo");
}

#[test]
fn hard_examples_go_out_as_coco_and_come_back_as_index_lines() {
    round_trip("coco");
}

#[test]
fn bad_yolo_labels_are_rejected_by_file_and_line_and_good_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::create_dir_all(labels.join("labels")).unwrap();
    std::fs::create_dir_all(labels.join("images")).unwrap();
    std::fs::write(labels.join("classes.txt"), "person\nhelmet\n").unwrap();
    image::RgbImage::new(100, 50)
        .save(labels.join("images/a.png"))
        .unwrap();
    std::fs::write(
        labels.join("labels/a.txt"),
        "0 0.5 0.5 0.2 0.2\n1 0.5 0.5\n7 0.5 0.5 0.1 0.1\n1 0.95 0.5 0.3 0.2\n",
    )
    .unwrap();
    std::fs::write(labels.join("labels/orphan.txt"), "0 0.5 0.5 0.1 0.1\n").unwrap();
    let index = dir.path().join("index.txt");
    let out = sedna(&[
        "label",
        "import",
        labels.to_str().unwrap(),
        "--format",
        "yolo",
        "--index",
        index.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "rejects make the exit code 1");
    let stderr = text(&out.stderr);
    for expected in [
        "labels/a.txt:2: \"1 0.5 0.5\" is not `class cx cy w h`",
        "labels/a.txt:3: class 7 is not one of the 2 classes",
        "labels/a.txt:4: box [80.0, 20.0, 110.0, 30.0] is not inside the 100x50 image",
        "labels/orphan.txt: no image images/orphan.png",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&index).unwrap(),
        "labelled/images/a.png 40.0,20.0,60.0,30.0,0\n"
    );
}

#[test]
fn bad_coco_labels_are_rejected_by_annotation_and_a_broken_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::create_dir_all(labels.join("images")).unwrap();
    image::RgbImage::new(100, 50)
        .save(labels.join("images/a.png"))
        .unwrap();
    let coco = serde_json::json!({
        "images": [{"id": 1, "file_name": "images/a.png", "width": 100, "height": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 99, "bbox": [10, 10, 20, 20]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [90, 10, 20, 20]},
            {"id": 4, "image_id": 1, "category_id": 1},
            {"id": 5, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2]},
        ],
        "categories": [{"id": 1, "name": "person"}],
    });
    std::fs::write(labels.join("annotations.json"), coco.to_string()).unwrap();
    let index = dir.path().join("index.txt");
    let import = || import_coco(&labels, &index);
    let out = import();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for expected in [
        "annotations.json:2: category_id 99 is not in categories",
        "annotations.json:3: box [90.0, 10.0, 110.0, 30.0] is not inside the 100x50 image",
        "annotations.json:4: bbox is not [x, y, width, height]",
        "annotations.json:5: its image_id names no readable image",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(&index).unwrap(),
        "labelled/images/a.png 10.0,10.0,30.0,30.0,0\n"
    );

    std::fs::write(labels.join("annotations.json"), "{ not json").unwrap();
    let out = import();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("annotations.json: not COCO JSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn coco_images_keep_their_folders_stay_inside_the_export_and_ids_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    for sub in ["sub1", "sub2"] {
        std::fs::create_dir_all(labels.join(sub)).unwrap();
    }
    let shade = |v: u8| image::RgbImage::from_pixel(100, 50, image::Rgb([v, v, v]));
    shade(10).save(labels.join("sub1/x.png")).unwrap();
    shade(200).save(labels.join("sub2/x.png")).unwrap();
    let outside = dir.path().join("secret.png");
    shade(50).save(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, labels.join("sub1/link.png")).unwrap();
    let coco = |categories: serde_json::Value| {
        serde_json::json!({
            "images": [
                {"id": 1, "file_name": "sub1/x.png"},
                {"id": 2, "file_name": "sub2/x.png"},
                {"id": 3, "file_name": outside.to_str().unwrap()},
                {"id": 4, "file_name": "../secret.png"},
                {"id": 5, "file_name": "sub1/link.png"},
            ],
            "annotations": (1..=5).map(|image| serde_json::json!(
                {"id": image, "image_id": image, "category_id": 2, "bbox": [10, 10, 20, 20]}
            )).collect::<Vec<_>>(),
            "categories": categories,
        })
        .to_string()
    };
    let index = dir.path().join("data/index.txt");
    std::fs::create_dir_all(index.parent().unwrap()).unwrap();
    let import = || import_coco(&labels, &index);
    std::fs::write(
        labels.join("annotations.json"),
        coco(serde_json::json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 2, "name": "c"}])),
    )
    .unwrap();
    let out = import();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("categories has the id 2 twice"),
        "{}",
        text(&out.stderr)
    );
    assert!(!index.exists(), "nothing imported");

    std::fs::write(
        labels.join("annotations.json"),
        coco(serde_json::json!([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])),
    )
    .unwrap();
    let out = import();
    let stderr = text(&out.stderr);
    for refused in ["image 3:", "image 4:", "image 5:"] {
        assert!(stderr.contains(refused), "{refused}\n{stderr}");
    }
    assert!(
        stderr.contains("not a path inside the export folder"),
        "{stderr}"
    );
    assert!(
        stderr.contains("leads out of the export folder"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&index).unwrap(),
        "labelled/sub1/x.png 10.0,10.0,30.0,30.0,1\nlabelled/sub2/x.png 10.0,10.0,30.0,30.0,1\n"
    );
    let data = dir.path().join("data/labelled");
    let pixel = |p: &str| {
        image::open(data.join(p))
            .unwrap()
            .to_rgb8()
            .get_pixel(0, 0)
            .0
    };
    assert_eq!(
        (pixel("sub1/x.png"), pixel("sub2/x.png")),
        ([10; 3], [200; 3])
    );
    assert!(!data.join("secret.png").exists());
}

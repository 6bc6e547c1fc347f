//! MP4 (H.264) video: what the writer makes the reader gives back, frame by frame, and
//! files that are not such video are refused by name.

use std::path::Path;
use std::time::Duration;

use image::RgbImage;
use sedna::media::{ErrorKind, VideoReader, VideoWriter};

/// Frame `i`: a colour that changes with `i`, with a white square moving across it.
fn frame(i: u32, width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let square = (x / 8 == i % (width / 8)) && y < 8;
        if square {
            image::Rgb([255, 255, 255])
        } else {
            image::Rgb([(i * 40 % 256) as u8, 80, (255 - i * 40 % 256) as u8])
        }
    })
}

fn write_video(path: &Path, frames: u32, fps: u32) {
    let mut video = VideoWriter::create(path, 64, 48, fps).unwrap();
    for i in 0..frames {
        video.write(&frame(i, 64, 48)).unwrap();
    }
    assert_eq!(video.finish().unwrap(), u64::from(frames));
}

fn mean_abs_difference(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn frames_written_as_h264_come_back_in_order_at_the_frame_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    write_video(&path, 30, 10);

    let video = VideoReader::open(&path).unwrap();
    assert_eq!((video.width(), video.height()), (64, 48));
    assert_eq!(video.frame_period(), Duration::from_millis(100));
    let frames: Vec<_> = video.map(Result::unwrap).collect();
    assert_eq!(frames.len(), 30);
    for (i, decoded) in frames.iter().enumerate() {
        assert_eq!(decoded.index, i as u64);
        assert_eq!(decoded.time, Duration::from_millis(100 * i as u64));
        let original = frame(i as u32, 64, 48);
        let difference = mean_abs_difference(&decoded.image, &original);
        assert!(
            difference < 6.0,
            "frame {i} differs by {difference} on average"
        );
        // The frame is this one, not its neighbour (lossy coding keeps them apart).
        let neighbour = frame(i as u32 + 1, 64, 48);
        assert!(mean_abs_difference(&decoded.image, &neighbour) > 2.0 * difference);
    }
}

#[test]
fn files_that_are_not_h264_mp4_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.mp4");
    let error = VideoReader::open(&missing).err().unwrap();
    assert_eq!(error.kind, ErrorKind::NotFound);
    assert!(error.to_string().contains("missing.mp4"), "{error}");

    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video at all").unwrap();
    let error = VideoReader::open(&text).err().unwrap();
    assert!(error.to_string().contains("notes.mp4"), "{error}");
    assert!(error.to_string().contains("MP4"), "{error}");

    let clip = dir.path().join("clip.mp4");
    write_video(&clip, 5, 10);
    let bytes = std::fs::read(&clip).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let error = VideoReader::open(&truncated)
        .map(|video| video.filter_map(Result::err).next())
        .err()
        .unwrap();
    assert!(error.to_string().contains("truncated.mp4"), "{error}");
}

#[test]
fn a_damaged_frame_is_reported_and_the_frames_after_it_still_come() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    write_video(&path, 20, 10);
    // The writer puts the frames first (`mdat`) and the index last: damage one frame's
    // length prefix in the middle of the frames so it no longer parses.
    let mut bytes = std::fs::read(&path).unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap() + 4;
    let middle = mdat + (bytes.len() - mdat) / 3;
    bytes[middle..middle + 64].fill(0xff);
    std::fs::write(&path, &bytes).unwrap();

    let results: Vec<_> = VideoReader::open(&path).unwrap().collect();
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(!errors.is_empty(), "the damage is reported");
    assert!(errors[0].contains("clip.mp4"), "{errors:?}");
    assert!(
        results.len() >= 20,
        "every frame is accounted for, good or bad: {}",
        results.len()
    );
    assert!(results.last().unwrap().is_ok(), "frames after it decode");
}

#[test]
fn the_writer_refuses_odd_sizes_and_frames_of_another_size() {
    let dir = tempfile::tempdir().unwrap();
    let error = VideoWriter::create(&dir.path().join("odd.mp4"), 63, 48, 10)
        .err()
        .unwrap();
    assert!(error.to_string().contains("even"), "{error}");

    let path = dir.path().join("clip.mp4");
    let mut video = VideoWriter::create(&path, 64, 48, 10).unwrap();
    let error = video.write(&frame(0, 32, 32)).unwrap_err();
    assert!(error.to_string().contains("32x32"), "{error}");
    drop(video);
    assert!(!path.exists(), "an unfinished video never appears");
}

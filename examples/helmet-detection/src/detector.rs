//! The example's detector: a small YOLOv8-style network written by the project's own model
//! builder (`sedna::media::zoo::yolo`): Conv-BN-SiLU stages, C2f blocks, SPPF, an upsample
//! and concat neck, and the anchor-free `yolov8` head with its DFL, the layout and metadata
//! of an Ultralytics export. Every weight starts random; the base model is what the
//! project's training engine makes of it on the base scenes.
//!
//! Sizes, chosen for a round that fits three minutes on one of two cores while the other
//! streams: the 640x352 scenes are letterboxed to 320x192 (half size: a head is 13-27
//! pixels, a loose helmet 19x8, still two or more cells of the finest level), and the
//! channels are an eighth of YOLOv8s' (YOLOv8n's halved).

use sedna::media::zoo::{self, Yolo};
use sedna::media::{InferError, Model};

use crate::scene::CLASSES;

/// The model's input: the scenes at half size, letterboxed.
pub const INPUT: (usize, usize) = (192, 320);

/// The detector's sizes; `seed` seeds its random weights.
pub fn spec(seed: u64) -> Yolo {
    Yolo {
        name: "helmet-detector".into(),
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        height: INPUT.0,
        width: INPUT.1,
        channels: [8, 16, 32, 64, 128],
        depth: [1, 1, 1, 1],
        neck_depth: 1,
        head: (32, 32),
        seed,
        // He's initialisation: it trains from random weights.
        kernel_gain: 6.0,
    }
}

/// The detector with random weights.
pub fn untrained(seed: u64) -> Result<Model, InferError> {
    zoo::yolo(&spec(seed))
}

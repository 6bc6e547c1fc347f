//! Media on the host: the ONNX backends, models and sessions, tensors, images and their
//! pre-processing, video decode and encode, labelled samples. Large data (pixels, tensors,
//! sessions) stays here; plugins hold it by handle through the `inference` interface.
//!
//! Imports nothing of ours but [`crate::files`].

pub mod augment;
pub mod backend;
pub mod builder;
mod deadline;
pub mod image;
pub mod model;
pub mod rtsp;
pub mod sample;
pub mod tensor;
pub mod video;
pub mod zoo;

pub use augment::{Augmentation, Motion};
pub use backend::{Backend, BackendKind, backend};
pub use builder::{Attr, ModelBuilder};
pub use image::{Frame, Layout, Preprocess};
pub use model::{Model, Session, SessionOptions, ValueSpec};
pub use sample::{Label, Sample};
pub use tensor::Tensor;
pub use video::{H264Decoder, VideoFrame, VideoReader, VideoWriter};

/// What went wrong, in the categories of the `inference` interface's `error-code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A caller passed a bad argument: a shape, a name, an index.
    InvalidArgument,
    /// A model or an image could not be decoded.
    InvalidEncoding,
    /// The runtime failed while running a model.
    Runtime,
    /// The model or the operation is not supported.
    Unsupported,
    /// No file, model, tensor or sample by that name.
    NotFound,
    /// A tensor, a batch or a model too large for the caller's limits.
    TooLarge,
}

/// An inference error naming its subject (a model's path, an image's path, a tensor).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{subject}: {message}")]
pub struct InferError {
    pub kind: ErrorKind,
    pub subject: String,
    pub message: String,
}

/// Reads a whole file; the error names it and says whether it is missing.
pub(crate) fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, InferError> {
    std::fs::read(path).map_err(|e| read_failed(&path.display().to_string(), what, &e))
}

/// `subject`, the `what` (a model, an image), could not be read: not found, or why not.
pub(crate) fn read_failed(subject: &str, what: &str, error: &std::io::Error) -> InferError {
    let kind = match error.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::InvalidArgument,
    };
    InferError::new(kind, subject, format!("cannot read the {what}: {error}"))
}

impl InferError {
    pub fn new(kind: ErrorKind, subject: impl Into<String>, message: impl Into<String>) -> Self {
        InferError {
            kind,
            subject: subject.into(),
            message: message.into(),
        }
    }
}

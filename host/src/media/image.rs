//! Frames and their pre-processing into model inputs, natively: decode, resize or
//! letterbox (bilinear, half-pixel centres, as OpenCV's `INTER_LINEAR`), scale to [0, 1],
//! normalise per channel and lay out as NCHW or NHWC, in one pass over the output.

use std::path::Path;

use super::{ErrorKind, InferError, Tensor};

/// A decoded RGB image, with the bytes it was decoded from when it came from a file.
#[derive(Clone, Debug)]
pub struct Frame {
    name: String,
    image: image::RgbImage,
    /// The encoded image and its file extension (`png`, `jpg`): what a hard example
    /// keeps, rather than encoding the pixels again.
    encoded: Option<(Vec<u8>, &'static str)>,
}

impl Frame {
    /// Decodes the image file at `path` (PNG or JPEG).
    pub fn open(path: &Path) -> Result<Self, InferError> {
        let bytes = super::read_file(path, "image")?;
        Self::decode_owned(&path.display().to_string(), bytes)
    }

    /// Decodes an encoded image (PNG or JPEG) held in memory.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<Self, InferError> {
        Self::decode_owned(name, bytes.to_vec())
    }

    fn decode_owned(name: &str, bytes: Vec<u8>) -> Result<Self, InferError> {
        let error = |e: image::ImageError| {
            InferError::new(
                ErrorKind::InvalidEncoding,
                name,
                format!("cannot decode the image (PNG and JPEG are supported): {e}"),
            )
        };
        let format = image::guess_format(&bytes).map_err(error)?;
        let image = image::load_from_memory_with_format(&bytes, format).map_err(error)?;
        let extension = match format {
            image::ImageFormat::Png => Some("png"),
            image::ImageFormat::Jpeg => Some("jpg"),
            _ => None,
        };
        Ok(Frame {
            name: name.to_string(),
            image: image.into_rgb8(),
            encoded: extension.map(|x| (bytes, x)),
        })
    }

    /// A frame from a decoded image (a video decoder's output, say).
    pub fn from_image(name: &str, image: image::RgbImage) -> Self {
        Frame {
            name: name.to_string(),
            image,
            encoded: None,
        }
    }

    /// The bytes the frame was decoded from and their file extension, when it was.
    pub fn encoded(&self) -> Option<(&[u8], &'static str)> {
        self.encoded.as_ref().map(|(bytes, x)| (&bytes[..], *x))
    }

    /// A frame from packed RGB pixels.
    pub fn from_rgb(
        name: &str,
        width: u32,
        height: u32,
        pixels: Vec<u8>,
    ) -> Result<Self, InferError> {
        let image = image::RgbImage::from_raw(width, height, pixels).ok_or_else(|| {
            InferError::new(
                ErrorKind::InvalidArgument,
                name,
                format!(
                    "{width}x{height} RGB needs {} bytes",
                    width as usize * height as usize * 3
                ),
            )
        })?;
        Ok(Frame {
            name: name.to_string(),
            image,
            encoded: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn width(&self) -> u32 {
        self.image.width()
    }

    pub fn height(&self) -> u32 {
        self.image.height()
    }

    pub fn pixels(&self) -> &image::RgbImage {
        &self.image
    }

    /// The model input for this frame, as `spec` describes it.
    pub fn to_tensor(&self, spec: &Preprocess) -> Result<Tensor, InferError> {
        spec.check()
            .map_err(|why| InferError::new(ErrorKind::InvalidArgument, &self.name, why))?;
        if self.width() == 0 || self.height() == 0 {
            return Err(InferError::new(
                ErrorKind::InvalidArgument,
                &self.name,
                "the image is empty",
            ));
        }
        let (out_w, out_h) = (spec.width as usize, spec.height as usize);
        let fit = spec.fit(self.width(), self.height());
        let (fit_w, pad_x, pad_y) = (fit.width as usize, fit.pad_x as usize, fit.pad_y as usize);
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * spec.std[c]));
        let offset: [f32; 3] = std::array::from_fn(|c| -spec.mean[c] / spec.std[c]);
        let pad: [f32; 3] = std::array::from_fn(|c| PAD_VALUE * scale[c] + offset[c]);

        // Start from the padding colour (when any shows); then write the fitted area row
        // by row. Without padding every element is written once.
        let plane = out_w * out_h;
        let padded = fit.width != spec.width || fit.height != spec.height;
        let mut data = match (padded, spec.layout) {
            (false, _) => vec![0.0; plane * 3],
            (true, Layout::Nchw) => pad
                .iter()
                .flat_map(|&p| std::iter::repeat_n(p, plane))
                .collect(),
            (true, Layout::Nhwc) => pad.repeat(plane),
        };
        let columns = samples(fit.width, self.width());
        let rows = samples(fit.height, self.height());
        let same_width = fit.width == self.width();
        let src = self.image.as_raw();
        let stride = self.width() as usize * 3;
        let mut line = vec![0.0f32; fit_w * 3];
        for (i, row) in rows.iter().enumerate() {
            let top = &src[row.low * stride..][..stride];
            let bottom = &src[row.high * stride..][..stride];
            let y = pad_y + i;
            if same_width && row.weight == 0.0 && spec.layout == Layout::Nchw {
                // A row at the frame's own size: normalise straight from the bytes.
                for c in 0..3 {
                    let out = &mut data[c * plane + y * out_w + pad_x..][..fit_w];
                    for (value, rgb) in out.iter_mut().zip(top.chunks_exact(3)) {
                        *value = rgb[c] as f32 * scale[c] + offset[c];
                    }
                }
                continue;
            }
            // One output row of interpolated RGB, still on the 0-255 scale.
            if same_width && row.weight == 0.0 {
                for (value, &byte) in line.iter_mut().zip(top) {
                    *value = byte as f32;
                }
            } else {
                for (x, col) in columns.iter().enumerate() {
                    let (l, h) = (col.low * 3, col.high * 3);
                    for c in 0..3 {
                        let upper = lerp(top[l + c], top[h + c], col.weight);
                        let lower = lerp(bottom[l + c], bottom[h + c], col.weight);
                        line[x * 3 + c] = upper + (lower - upper) * row.weight;
                    }
                }
            }
            match spec.layout {
                Layout::Nchw => {
                    for c in 0..3 {
                        let out = &mut data[c * plane + y * out_w + pad_x..][..fit_w];
                        for (value, rgb) in out.iter_mut().zip(line.chunks_exact(3)) {
                            *value = rgb[c] * scale[c] + offset[c];
                        }
                    }
                }
                Layout::Nhwc => {
                    let out = &mut data[(y * out_w + pad_x) * 3..][..fit_w * 3];
                    for (value, (i, v)) in out.iter_mut().zip(line.iter().enumerate()) {
                        *value = v * scale[i % 3] + offset[i % 3];
                    }
                }
            }
        }
        let dims = match spec.layout {
            Layout::Nchw => vec![1, 3, out_h, out_w],
            Layout::Nhwc => vec![1, out_h, out_w, 3],
        };
        Ok(Tensor { dims, data })
    }
}

fn lerp(a: u8, b: u8, weight: f32) -> f32 {
    a as f32 + (b as f32 - a as f32) * weight
}

/// The grey YOLO exporters pad letterboxed images with.
const PAD_VALUE: f32 = 114.0;

/// Element order of an image tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// How a frame becomes a model input.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    /// Keep the aspect ratio and pad (centred) instead of stretching.
    pub letterbox: bool,
    /// Per channel (RGB), on the [0, 1] scale.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub layout: Layout,
}

/// Where the scaled image lies inside the model input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub width: u32,
    pub height: u32,
    pub pad_x: u32,
    pub pad_y: u32,
    pub scale_x: f32,
    pub scale_y: f32,
}

impl Fit {
    /// A point in model-input pixels, in the original image's pixels.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.pad_x as f32) / self.scale_x,
            (y - self.pad_y as f32) / self.scale_y,
        )
    }
}

impl Preprocess {
    /// The largest input side accepted (a guard against absurd allocations).
    pub const MAX_SIDE: u32 = 8192;

    pub fn check(&self) -> Result<(), String> {
        if !(1..=Self::MAX_SIDE).contains(&self.width)
            || !(1..=Self::MAX_SIDE).contains(&self.height)
        {
            return Err(format!(
                "input size {}x{} must be between 1 and {} on each side",
                self.width,
                self.height,
                Self::MAX_SIDE
            ));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(format!(
                "mean {:?} must be finite and std {:?} positive",
                self.mean, self.std
            ));
        }
        Ok(())
    }

    /// Where an image of `width` x `height` lands in the model input.
    pub fn fit(&self, width: u32, height: u32) -> Fit {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        if !self.letterbox {
            return Fit {
                width: self.width,
                height: self.height,
                pad_x: 0,
                pad_y: 0,
                scale_x: self.width as f32 / w,
                scale_y: self.height as f32 / h,
            };
        }
        let scale = (self.width as f32 / w).min(self.height as f32 / h);
        let fitted_w = ((w * scale).round() as u32).clamp(1, self.width);
        let fitted_h = ((h * scale).round() as u32).clamp(1, self.height);
        Fit {
            width: fitted_w,
            height: fitted_h,
            pad_x: (self.width - fitted_w) / 2,
            pad_y: (self.height - fitted_h) / 2,
            scale_x: fitted_w as f32 / w,
            scale_y: fitted_h as f32 / h,
        }
    }
}

/// A bilinear sample: the two neighbouring source indices and the weight of the second.
struct Sample {
    low: usize,
    high: usize,
    weight: f32,
}

/// Half-pixel-centre sample positions of `out` outputs over `src` source pixels.
fn samples(out: u32, src: u32) -> Vec<Sample> {
    let ratio = src as f32 / out as f32;
    let last = src as usize - 1;
    (0..out)
        .map(|i| {
            let at = ((i as f32 + 0.5) * ratio - 0.5).max(0.0);
            let low = (at.floor() as usize).min(last);
            Sample {
                low,
                high: (low + 1).min(last),
                weight: at - low as f32,
            }
        })
        .collect()
}

//! H.264 video in MP4 files with no system libraries: the `mp4` crate demuxes and muxes,
//! OpenH264 (compiled from Cisco's bundled source) decodes and encodes.
//!
//! MP4 stores each frame as length-prefixed NAL units with the parameter sets in the
//! track header; OpenH264 wants Annex B (start codes) with the parameter sets in the
//! stream, so the reader converts and puts SPS/PPS before each sync sample.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::RgbImage;
use openh264::OpenH264API;
use openh264::decoder::{Decoder, DecoderConfig, Flush};
use openh264::encoder::{Encoder, EncoderConfig, FrameRate, FrameType, QpRange, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};

use super::{ErrorKind, InferError};

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// One decoded frame: its number in the file (from 0) and when it is shown.
pub struct VideoFrame {
    pub index: u64,
    pub time: Duration,
    pub image: RgbImage,
}

/// Reads an MP4 file's H.264 track frame by frame. A sample that does not decode is
/// reported (as an `Err` item) and skipped; the frames after it still come.
pub struct VideoReader {
    path: PathBuf,
    mp4: mp4::Mp4Reader<BufReader<File>>,
    track: u32,
    samples: u32,
    next_sample: u32,
    length_size: usize,
    parameter_sets: Vec<u8>,
    decoder: H264Decoder,
    width: u32,
    height: u32,
    frame_period: Duration,
    decoded: VecDeque<RgbImage>,
    packet: Vec<u8>,
    frames_out: u64,
    flushed: bool,
}

impl VideoReader {
    pub fn open(path: &Path) -> Result<Self, InferError> {
        let fail =
            |kind, message: String| InferError::new(kind, path.display().to_string(), message);
        let io = |e: std::io::Error| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::InvalidArgument,
            };
            fail(kind, format!("cannot read the video: {e}"))
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mp4 = mp4::Mp4Reader::read_header(BufReader::new(file), size).map_err(|e| {
            fail(
                ErrorKind::InvalidEncoding,
                format!("not a readable MP4 file ({e}); give an MP4 with an H.264 video track"),
            )
        })?;
        let (track, avc) = mp4
            .tracks()
            .values()
            .find_map(|t| Some((t, t.trak.mdia.minf.stbl.stsd.avc1.as_ref()?)))
            .ok_or_else(|| {
                fail(
                    ErrorKind::Unsupported,
                    "has no H.264 (avc1) video track; re-encode it as H.264, e.g. \
                     `ffmpeg -i IN -c:v libx264 OUT.mp4`"
                        .into(),
                )
            })?;
        let mut parameter_sets = Vec::new();
        for unit in avc
            .avcc
            .sequence_parameter_sets
            .iter()
            .chain(&avc.avcc.picture_parameter_sets)
        {
            parameter_sets.extend_from_slice(&START_CODE);
            parameter_sets.extend_from_slice(&unit.bytes);
        }
        let frame_rate = track.frame_rate();
        let frame_period = if frame_rate.is_finite() && frame_rate > 0.0 {
            Duration::from_secs_f64(1.0 / frame_rate)
        } else {
            Duration::from_millis(40)
        };
        let decoder = H264Decoder::new().map_err(|e| fail(ErrorKind::Runtime, e))?;
        Ok(VideoReader {
            path: path.to_path_buf(),
            track: track.track_id(),
            samples: track.sample_count(),
            next_sample: 1,
            length_size: usize::from(avc.avcc.length_size_minus_one & 3) + 1,
            parameter_sets,
            decoder,
            width: u32::from(avc.width),
            height: u32::from(avc.height),
            frame_period,
            decoded: VecDeque::new(),
            packet: Vec::new(),
            frames_out: 0,
            flushed: false,
            mp4,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// How long each frame is shown (from the track's frame rate).
    pub fn frame_period(&self) -> Duration {
        self.frame_period
    }

    fn error(&self, message: String) -> InferError {
        InferError::new(
            ErrorKind::InvalidEncoding,
            self.path.display().to_string(),
            message,
        )
    }

    /// Decodes samples until a frame comes out (B-frames make the decoder hold some
    /// back) or the track ends, when the held frames are flushed.
    fn decode_more(&mut self) -> Result<(), InferError> {
        while self.decoded.is_empty() && self.next_sample <= self.samples {
            let number = self.next_sample;
            self.next_sample += 1;
            let sample = match self.mp4.read_sample(self.track, number) {
                Ok(Some(sample)) => sample,
                Ok(None) => continue,
                Err(e) => return Err(self.error(format!("sample {number} cannot be read: {e}"))),
            };
            self.packet.clear();
            if sample.is_sync {
                self.packet.extend_from_slice(&self.parameter_sets);
            }
            if !length_prefixed_to_annex_b(&sample.bytes, self.length_size, &mut self.packet) {
                return Err(self.error(format!(
                    "sample {number} is not a sequence of length-prefixed NAL units"
                )));
            }
            match self.decoder.decode(&self.packet) {
                Ok(Some(image)) => self.decoded.push_back(image),
                Ok(None) => {}
                Err(e) => return Err(self.error(format!("sample {number} does not decode: {e}"))),
            }
        }
        if self.decoded.is_empty() && self.next_sample > self.samples && !self.flushed {
            self.flushed = true;
            match self.decoder.flush() {
                Ok(held) => self.decoded.extend(held),
                Err(e) => {
                    let message = format!("the last frames do not decode: {e}");
                    return Err(self.error(message));
                }
            }
        }
        Ok(())
    }
}

impl Iterator for VideoReader {
    type Item = Result<VideoFrame, InferError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.decode_more() {
            return Some(Err(e));
        }
        let image = self.decoded.pop_front()?;
        let index = self.frames_out;
        self.frames_out += 1;
        Some(Ok(VideoFrame {
            index,
            time: self.frame_period.mul_f64(index as f64),
            image,
        }))
    }
}

/// OpenH264 over Annex B access units (start codes, parameter sets in the stream), as an
/// MP4 sample becomes once converted and as an RTSP camera's frames arrive.
pub struct H264Decoder {
    decoder: Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<Self, String> {
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| format!("cannot start the H.264 decoder: {e}"))?;
        Ok(H264Decoder { decoder })
    }

    /// Decodes one access unit; `None` while the decoder holds the frame back.
    pub fn decode(&mut self, annex_b: &[u8]) -> Result<Option<RgbImage>, String> {
        match self.decoder.decode(annex_b) {
            Ok(yuv) => Ok(yuv.map(|yuv| to_rgb(&yuv))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The frames the decoder still holds, at the end of a stream.
    pub fn flush(&mut self) -> Result<Vec<RgbImage>, String> {
        let held = self.decoder.flush_remaining().map_err(|e| e.to_string())?;
        Ok(held.iter().map(to_rgb).collect())
    }
}

fn to_rgb(yuv: &openh264::decoder::DecodedYUV<'_>) -> RgbImage {
    let (width, height) = yuv.dimensions();
    let mut rgb = vec![0; width * height * 3];
    yuv.write_rgb8(&mut rgb);
    RgbImage::from_raw(width as u32, height as u32, rgb).expect("the buffer fits the frame")
}

/// Appends `sample`'s NAL units to `out` with start codes instead of length prefixes.
/// Returns false when a length runs past the sample.
fn length_prefixed_to_annex_b(mut sample: &[u8], length_size: usize, out: &mut Vec<u8>) -> bool {
    while !sample.is_empty() {
        if sample.len() < length_size {
            return false;
        }
        let (prefix, rest) = sample.split_at(length_size);
        let length = prefix
            .iter()
            .fold(0usize, |n, byte| (n << 8) | usize::from(*byte));
        if length > rest.len() {
            return false;
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(&rest[..length]);
        sample = &rest[length..];
    }
    true
}

/// The NAL unit without its Annex B start code.
fn strip_start_code(unit: &[u8]) -> &[u8] {
    let zeros = unit.iter().take_while(|b| **b == 0).count();
    if zeros >= 2 && unit.get(zeros) == Some(&1) {
        &unit[zeros + 1..]
    } else {
        unit
    }
}

/// Writes RGB frames as an H.264 MP4 file at a fixed frame rate. The file appears (by
/// rename) only when [`VideoWriter::finish`] succeeds.
pub struct VideoWriter {
    path: PathBuf,
    temp: tempfile::NamedTempFile,
    encoder: Encoder,
    mp4: Option<mp4::Mp4Writer<BufWriter<File>>>,
    width: u32,
    height: u32,
    frame_ms: u32,
    frames: u64,
}

const TRACK: u32 = 1;

impl VideoWriter {
    /// Frames must be `width` x `height`, both even.
    pub fn create(path: &Path, width: u32, height: u32, fps: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(
            width.is_multiple_of(2) && height.is_multiple_of(2) && width > 0 && height > 0,
            "{}: H.264 needs an even, non-zero frame size, not {width}x{height}",
            path.display()
        );
        anyhow::ensure!(fps >= 1, "{}: give a frame rate >= 1", path.display());
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let temp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
        // Every frame kept (the encoder skips frames to hold a bitrate otherwise), at a
        // fixed quality rather than a bitrate.
        let config = EncoderConfig::new()
            .skip_frames(false)
            .rate_control_mode(RateControlMode::Off)
            .qp(QpRange::new(20, 26))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .debug(false);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
        Ok(VideoWriter {
            path: path.to_path_buf(),
            temp,
            encoder,
            mp4: None,
            width,
            height,
            frame_ms: 1000 / fps,
            frames: 0,
        })
    }

    pub fn write(&mut self, frame: &RgbImage) -> anyhow::Result<()> {
        anyhow::ensure!(
            frame.dimensions() == (self.width, self.height),
            "{}: frame {} is {}x{}, the video is {}x{}",
            self.path.display(),
            self.frames,
            frame.width(),
            frame.height(),
            self.width,
            self.height
        );
        let dims = (self.width as usize, self.height as usize);
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(frame.as_raw(), dims));
        let stream = self.encoder.encode(&yuv)?;
        let is_sync = stream.frame_type() == FrameType::IDR;
        let (mut sps, mut pps, mut sample) = (None, None, Vec::new());
        for layer in (0..stream.num_layers()).filter_map(|i| stream.layer(i)) {
            for unit in (0..layer.nal_count()).filter_map(|i| layer.nal_unit(i)) {
                let unit = strip_start_code(unit);
                match unit.first().map(|b| b & 0x1f) {
                    Some(7) => sps = Some(unit.to_vec()),
                    Some(8) => pps = Some(unit.to_vec()),
                    Some(_) => {
                        sample.extend_from_slice(&(unit.len() as u32).to_be_bytes());
                        sample.extend_from_slice(unit);
                    }
                    None => {}
                }
            }
        }
        let mp4 = match &mut self.mp4 {
            Some(mp4) => mp4,
            None => {
                let (Some(sps), Some(pps)) = (sps, pps) else {
                    anyhow::bail!("the encoder's first frame has no parameter sets");
                };
                self.mp4.insert(self.start(sps, pps)?)
            }
        };
        mp4.write_sample(
            TRACK,
            &mp4::Mp4Sample {
                start_time: self.frames * u64::from(self.frame_ms),
                duration: self.frame_ms,
                rendering_offset: 0,
                is_sync,
                bytes: sample.into(),
            },
        )?;
        self.frames += 1;
        Ok(())
    }

    fn start(&self, sps: Vec<u8>, pps: Vec<u8>) -> anyhow::Result<mp4::Mp4Writer<BufWriter<File>>> {
        let config = mp4::Mp4Config {
            major_brand: str::parse("isom")?,
            minor_version: 512,
            compatible_brands: ["isom", "iso2", "avc1", "mp41"]
                .iter()
                .map(|b| str::parse(b))
                .collect::<Result<_, _>>()?,
            timescale: 1000,
        };
        let mut mp4 =
            mp4::Mp4Writer::write_start(BufWriter::new(self.temp.as_file().try_clone()?), &config)?;
        mp4.add_track(&mp4::TrackConfig::from(mp4::MediaConfig::AvcConfig(
            mp4::AvcConfig {
                width: self.width as u16,
                height: self.height as u16,
                seq_param_set: sps,
                pic_param_set: pps,
            },
        )))?;
        Ok(mp4)
    }

    /// Writes the index and moves the file into place; returns the frame count.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        let mut mp4 = self
            .mp4
            .take()
            .ok_or_else(|| anyhow::anyhow!("{}: no frames written", self.path.display()))?;
        mp4.write_end()?;
        let mut file = mp4.into_writer();
        std::io::Write::flush(&mut file)?;
        file.get_ref().sync_all()?;
        self.temp.persist(&self.path)?;
        Ok(self.frames)
    }
}

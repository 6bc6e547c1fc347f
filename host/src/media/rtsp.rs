//! Live cameras over RTSP: retina (a pure-Rust client) speaks RTSP and depacketises H.264
//! from RTP (interleaved on the RTSP connection, or UDP); each frame comes out as an
//! Annex B access unit, parameter sets before each key frame, for [`H264Decoder`].
//!
//! The password never leaves this module in text: the URL handed to retina has no
//! credentials (they go separately, used only when the camera asks), and
//! [`CameraUrl::redacted`] is what logs, errors and status show.
//!
//! [`H264Decoder`]: super::video::H264Decoder

use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};

/// A camera's `rtsp://[user:password@]host[:port]/path`, split into what retina is given
/// and what people are shown.
#[derive(Clone)]
pub struct CameraUrl {
    /// Without credentials.
    url: url::Url,
    credentials: Option<Credentials>,
    redacted: String,
}

impl CameraUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let redacted = redact(text);
        let mut url = url::Url::parse(text.trim()).map_err(|e| {
            format!("{redacted}: not a URL ({e}): give rtsp://[user:password@]host[:port]/path")
        })?;
        if url.scheme() != "rtsp" {
            return Err(format!(
                "{redacted}: the scheme is `{}`; cameras are read over rtsp:// (rtsps is not supported yet)",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{redacted}: no host: give rtsp://host[:port]/path"));
        }
        let credentials = (!url.username().is_empty()).then(|| Credentials {
            username: decode(url.username()),
            password: decode(url.password().unwrap_or("")),
        });
        // Both succeed on a URL with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(CameraUrl {
            url,
            credentials,
            redacted,
        })
    }

    /// The URL with the password replaced by `***`, for logs, errors and status.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }
}

/// A URL's user or password as written, percent-decoded (a `+` stays a `+`).
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// `text` with the password of any `scheme://user:password@` replaced by `***`; text
/// that is not such a URL comes back as it is.
pub fn redact(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_string();
    };
    let Some((user, _password)) = rest[..at].split_once(':') else {
        return text.to_string();
    };
    format!("{}{user}:***{}", &text[..authority_start], &rest[at..])
}

/// How RTP packets travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Interleaved on the RTSP connection: passes firewalls and NAT; the default.
    Tcp,
    /// UDP, on a LAN; lost packets are lost frames.
    Udp,
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "tcp" => Ok(Transport::Tcp),
            "udp" => Ok(Transport::Udp),
            other => Err(format!("{other:?}: give \"tcp\" or \"udp\"")),
        }
    }
}

/// Why a camera's stream stopped or never started.
#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    #[error("{camera}: cannot connect: {reason}")]
    Connect { camera: String, reason: String },
    #[error(
        "{camera}: the camera refused the credentials (401 Unauthorized): check the user and password in `video_url`"
    )]
    Credentials { camera: String },
    #[error("{camera}: {reason}")]
    Codec { camera: String, reason: String },
    #[error("{camera}: no frame for {} s: the stream stalled", .after.as_secs_f32())]
    Stalled { camera: String, after: Duration },
    #[error("{camera}: the camera ended the stream")]
    Ended { camera: String },
    #[error("{camera}: the stream broke: {reason}")]
    Broken { camera: String, reason: String },
}

/// One H.264 frame as it arrived.
pub struct AccessUnit {
    /// Annex B, with SPS and PPS before each key frame.
    pub data: Vec<u8>,
    /// A key frame: decoding can start (again) here.
    pub key: bool,
    /// RTP packets lost before this frame.
    pub loss: u16,
    /// When the camera captured it, by the camera's clock, once its RTCP sender reports
    /// have tied its RTP timestamps to that clock (`None` before the first one).
    pub captured: Option<SystemTime>,
}

/// The sender's clock as its last RTCP sender report gave it: an RTP timestamp and the
/// wall-clock time it stands for.
#[derive(Clone, Copy)]
struct SenderClock {
    rtp: retina::Timestamp,
    wall: SystemTime,
}

impl SenderClock {
    /// The clock of a sender report; `None` for other RTCP packets and for times before
    /// the Unix epoch.
    fn of(rtcp: &retina::rtcp::ReceivedCompoundPacket) -> Option<Self> {
        let rtp = rtcp.rtp_timestamp()?;
        let report = rtcp.pkts().next()?.as_sender_report().ok()??;
        let since_epoch = report.ntp_timestamp().0.checked_sub(retina::UNIX_EPOCH.0)?;
        let seconds = since_epoch >> 32;
        let nanos = ((since_epoch & 0xFFFF_FFFF) * 1_000_000_000) >> 32;
        let wall = SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos as u32);
        Some(SenderClock { rtp, wall })
    }

    /// The wall-clock time of RTP timestamp `at` (same clock rate).
    fn wall(&self, at: retina::Timestamp) -> Option<SystemTime> {
        let rate = f64::from(at.clock_rate().get());
        let offset = (at.timestamp() - self.rtp.timestamp()) as f64 / rate;
        let delta = Duration::try_from_secs_f64(offset.abs()).ok()?;
        if offset >= 0.0 {
            self.wall.checked_add(delta)
        } else {
            self.wall.checked_sub(delta)
        }
    }
}

/// A playing RTSP session's H.264 video. Call from a tokio runtime; drop it there too
/// (dropping sends the TEARDOWN).
pub struct RtspStream {
    camera: String,
    demuxed: Demuxed,
    stall: Duration,
    sender: Option<SenderClock>,
}

impl RtspStream {
    /// DESCRIBE, SETUP of the first video stream and PLAY, each bounded by `timeout`.
    /// A camera whose video is not H.264 is refused with its codec named.
    pub async fn connect(
        url: &CameraUrl,
        transport: Transport,
        timeout: Duration,
        stall: Duration,
    ) -> Result<Self, RtspError> {
        let camera = url.redacted.clone();
        let fail = |e: retina::Error| {
            if e.status_code() == Some(401) {
                RtspError::Credentials {
                    camera: camera.clone(),
                }
            } else {
                RtspError::Connect {
                    camera: camera.clone(),
                    reason: e.to_string(),
                }
            }
        };
        let late = |step: &str| RtspError::Connect {
            camera: camera.clone(),
            reason: format!("no answer to {step} within {} s", timeout.as_secs_f32()),
        };
        let options = SessionOptions::default()
            .creds(url.credentials.clone())
            .user_agent(format!("sedna/{}", env!("CARGO_PKG_VERSION")));
        let mut session =
            tokio::time::timeout(timeout, Session::describe(url.url.clone(), options))
                .await
                .map_err(|_| late("DESCRIBE"))?
                .map_err(fail)?;
        let streams = session.streams();
        let Some(video) = streams.iter().position(|s| s.media() == "video") else {
            let media: Vec<String> = streams
                .iter()
                .map(|s| format!("{} ({})", s.media(), s.encoding_name()))
                .collect();
            return Err(RtspError::Codec {
                camera,
                reason: format!(
                    "the camera sends no video (only {}): point `video_url` at a video stream",
                    if media.is_empty() {
                        "nothing".to_string()
                    } else {
                        media.join(", ")
                    }
                ),
            });
        };
        let codec = streams[video].encoding_name().to_ascii_uppercase();
        if codec != "H264" {
            return Err(RtspError::Codec {
                camera,
                reason: format!(
                    "the camera's video is {codec}, which the host cannot decode: set the camera (or its substream) to H.264"
                ),
            });
        }
        let transport = match transport {
            Transport::Tcp => retina::client::Transport::Tcp(TcpTransportOptions::default()),
            Transport::Udp => retina::client::Transport::Udp(UdpTransportOptions::default()),
        };
        let setup = SetupOptions::default()
            .transport(transport)
            .frame_format(FrameFormat::SIMPLE);
        tokio::time::timeout(timeout, session.setup(video, setup))
            .await
            .map_err(|_| late("SETUP"))?
            .map_err(fail)?;
        let playing = tokio::time::timeout(timeout, session.play(PlayOptions::default()))
            .await
            .map_err(|_| late("PLAY"))?
            .map_err(fail)?;
        let demuxed = playing.demuxed().map_err(fail)?;
        Ok(RtspStream {
            camera,
            demuxed,
            stall,
            sender: None,
        })
    }

    /// The next video frame; an error when none comes within the stall time, the
    /// camera ends the stream or the connection breaks.
    pub async fn next(&mut self) -> Result<AccessUnit, RtspError> {
        loop {
            let item = tokio::time::timeout(self.stall, self.demuxed.next())
                .await
                .map_err(|_| RtspError::Stalled {
                    camera: self.camera.clone(),
                    after: self.stall,
                })?;
            match item {
                None => {
                    return Err(RtspError::Ended {
                        camera: self.camera.clone(),
                    });
                }
                Some(Err(e)) => {
                    return Err(RtspError::Broken {
                        camera: self.camera.clone(),
                        reason: e.to_string(),
                    });
                }
                Some(Ok(CodecItem::VideoFrame(frame))) => {
                    return Ok(AccessUnit {
                        key: frame.is_random_access_point(),
                        loss: frame.loss(),
                        captured: self.sender.and_then(|c| c.wall(frame.timestamp())),
                        data: frame.into_data(),
                    });
                }
                Some(Ok(CodecItem::Rtcp(rtcp))) => {
                    if let Some(clock) = SenderClock::of(&rtcp) {
                        self.sender = Some(clock);
                    }
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_camera_url_keeps_its_password_out_of_sight() {
        let url = CameraUrl::parse("rtsp://admin:s%40cret@10.0.0.7:8554/cam/1").unwrap();
        assert_eq!(url.redacted(), "rtsp://admin:***@10.0.0.7:8554/cam/1");
        let credentials = url.credentials.clone().unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("admin", "s@cret")
        );
        assert_eq!(url.url.as_str(), "rtsp://10.0.0.7:8554/cam/1");
        assert!(
            CameraUrl::parse("rtsp://10.0.0.7/cam")
                .unwrap()
                .credentials
                .is_none()
        );
        let plus = CameraUrl::parse("rtsp://u:a+b%2Bc@h/cam").unwrap();
        assert_eq!(plus.credentials.unwrap().password, "a+b+c");
    }

    #[test]
    fn sender_reports_give_the_capture_time_of_each_frame() {
        use std::num::NonZeroU32;
        let rate = NonZeroU32::new(90_000).unwrap();
        let at = |rtp: i64| retina::Timestamp::new(rtp, rate, 0).unwrap();
        // A sender report: RTP 180000 is 1_700_000_000.5 s after the Unix epoch.
        let ntp: u64 = ((1_700_000_000u64 + 2_208_988_800) << 32) | 0x8000_0000;
        let mut report = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
        report.extend_from_slice(&ntp.to_be_bytes());
        report.extend_from_slice(&180_000u32.to_be_bytes());
        report.extend_from_slice(&[0; 8]);
        let rtcp = retina::rtcp::ReceivedCompoundPacket::dummy(Some(at(180_000)), &report);
        let clock = SenderClock::of(&rtcp).expect("a sender report");
        let seconds = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        // Half a second later, and a tenth of a second before it.
        let later = seconds(clock.wall(at(225_000)).unwrap());
        assert!((later - 1_700_000_001.0).abs() < 1e-6, "{later}");
        let earlier = seconds(clock.wall(at(171_000)).unwrap());
        assert!((earlier - 1_700_000_000.4).abs() < 1e-6, "{earlier}");
        // A receiver report carries no clock.
        let receiver =
            retina::rtcp::ReceivedCompoundPacket::dummy(None, &[0x80, 201, 0, 1, 0, 0, 0, 1]);
        assert!(SenderClock::of(&receiver).is_none());
    }

    #[test]
    fn redaction_leaves_other_text_alone() {
        assert_eq!(redact("rtsp://u:p@h/x@y"), "rtsp://u:***@h/x@y");
        assert_eq!(redact("rtsp://u@h/x"), "rtsp://u@h/x");
        assert_eq!(redact("rtsp://h:554/x"), "rtsp://h:554/x");
        assert_eq!(redact("/videos/a@b.mp4"), "/videos/a@b.mp4");
    }

    #[test]
    fn bad_camera_urls_say_what_to_give() {
        let e = CameraUrl::parse("rtsp://u:hunter2@").err().unwrap();
        assert!(!e.contains("hunter2"), "{e}");
        let e = CameraUrl::parse("http://u:hunter2@cam/x").err().unwrap();
        assert!(e.contains("rtsp://") && !e.contains("hunter2"), "{e}");
        assert!("udp".parse::<Transport>().is_ok());
        assert!("quic".parse::<Transport>().unwrap_err().contains("tcp"));
    }
}

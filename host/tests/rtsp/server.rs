//! The RTSP test server (`serve.py`, GStreamer's RTSP server) as the camera tests and the
//! camera bench start it: on 127.0.0.1, streaming an MP4 in a loop, killed when dropped.
//! Included by both with `#[path]`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

// Both servers' files include it, and the tests' binary both files.
#[allow(clippy::duplicate_mod)]
#[path = "../python.rs"]
mod python;

/// Whether the server can run here ([`python::imports`]).
pub fn server_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        python::imports(
            "/usr/bin/python3",
            "import gi; gi.require_version('GstRtspServer', '1.0')",
            "GStreamer's RTSP server is not installed: run `bash host/tests/rtsp/install.sh`",
        )
    })
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server; killed when dropped.
pub struct Server {
    child: Child,
}

impl Server {
    /// Serves `video` at `rtsp://127.0.0.1:<port>/cam`, with `serve.py`'s `extra` options
    /// (`--codec h265`, `--user U --password P`, `--stall-after S`); returns once it listens.
    pub fn start(port: u16, video: &Path, extra: &[&str]) -> Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rtsp/serve.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &port.to_string(), "--file"])
            .arg(video)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready "), "the server said {line:?}");
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

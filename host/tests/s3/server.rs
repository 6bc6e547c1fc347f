//! The S3 test server (`serve.py`: moto, checking signatures) as the storage tests and
//! the storage bench start it: on 127.0.0.1, with a user, its key and the buckets asked
//! for; killed when dropped. Included by both with `#[path]`.

use std::io::{BufRead as _, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sedna::storage::{
    ACCESS_KEY_ID, Credentials, S3_ENDPOINT_URL, S3_USE_HTTPS, SECRET_ACCESS_KEY,
};

// Both servers' files include it, and the tests' binary both files.
#[allow(clippy::duplicate_mod)]
#[path = "../python.rs"]
mod python;

/// Whether the server can run here ([`python::imports`]).
pub fn server_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        python::imports(
            "python3",
            "import moto.server, boto3, flask_cors",
            "moto's S3 server is not installed: run `python3 -m pip install 'moto==5.2.6' flask flask-cors`",
        )
    })
}

/// A server with `buckets`, or `None` (and the caller skips) where moto is missing.
pub fn started(buckets: &[&str]) -> Option<S3Server> {
    server_available().then(|| S3Server::start(buckets))
}

/// A running server; killed when dropped.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Server {
    /// A server on a free port with `buckets`; returns once it serves.
    pub fn start(buckets: &[&str]) -> S3Server {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/serve.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(buckets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("the server said {line:?}: {e}"));
        S3Server {
            child,
            port: ready["port"].as_u64().unwrap() as u16,
            access_key_id: ready["access_key_id"].as_str().unwrap().into(),
            secret_access_key: ready["secret_access_key"].as_str().unwrap().into(),
        }
    }

    /// Sedna's variables for this server (as a Secret's data or the environment holds
    /// them), with `secret` in place of the right one when given.
    pub fn vars(&self, secret: Option<&str>) -> Vec<(&'static str, String)> {
        self.vars_at(self.port, secret)
    }

    /// The variables for reaching this server through `port` (a [`Link`]).
    pub fn vars_at(&self, port: u16, secret: Option<&str>) -> Vec<(&'static str, String)> {
        vec![
            (ACCESS_KEY_ID, self.access_key_id.clone()),
            (
                SECRET_ACCESS_KEY,
                secret.unwrap_or(&self.secret_access_key).to_string(),
            ),
            (S3_ENDPOINT_URL, format!("127.0.0.1:{port}")),
            (S3_USE_HTTPS, "0".into()),
        ]
    }

    pub fn credentials(&self, secret: Option<&str>) -> Credentials {
        credentials(&self.vars(secret))
    }

    /// Credentials for reaching this server through a [`Link`].
    pub fn credentials_via(&self, link: &Link) -> Credentials {
        credentials(&self.vars_at(link.port, None))
    }

    /// Credentials for a server on `port` that is no longer there.
    pub fn credentials_for(port: u16) -> Credentials {
        credentials(&[
            (ACCESS_KEY_ID, "gone".into()),
            (SECRET_ACCESS_KEY, "gone".into()),
            (S3_ENDPOINT_URL, format!("127.0.0.1:{port}")),
            (S3_USE_HTTPS, "0".into()),
        ])
    }
}

fn credentials(vars: &[(&'static str, String)]) -> Credentials {
    Credentials::from_vars(
        |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        },
        "the test's variables",
    )
    .unwrap()
    .unwrap()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP path to the server with the faults of a network: cut and restored (open
/// connections shut, new ones closed at once), a throttling front answering `503 Slow
/// Down`, a response cut short. The server itself (and what it holds) stays up.
pub struct Link {
    pub port: u16,
    faults: Arc<Faults>,
}

#[derive(Default)]
struct Faults {
    down: AtomicBool,
    /// Connections still to answer with a 503.
    throttled: AtomicUsize,
    /// Bytes of the next connection's responses before it is cut (0: none cut).
    truncate: AtomicUsize,
    open: Mutex<Vec<TcpStream>>,
}

impl Link {
    pub fn to(server: &S3Server) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let target = server.port;
        std::thread::spawn({
            let faults = faults.clone();
            move || {
                for mut client in listener.incoming().flatten() {
                    if faults.down.load(Ordering::SeqCst) {
                        continue;
                    }
                    let take = |n: &AtomicUsize| n.swap(0, Ordering::SeqCst);
                    let throttled = faults.throttled.load(Ordering::SeqCst);
                    if throttled > 0 {
                        faults.throttled.store(throttled - 1, Ordering::SeqCst);
                        slow_down(&mut client);
                        continue;
                    }
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    let limit = match take(&faults.truncate) {
                        0 => u64::MAX,
                        bytes => bytes as u64,
                    };
                    let mut open = faults.open.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(upstream.try_clone().unwrap());
                    for (from, mut to, limit) in [
                        (
                            client.try_clone().unwrap(),
                            upstream.try_clone().unwrap(),
                            u64::MAX,
                        ),
                        (upstream, client, limit),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut std::io::Read::take(&from, limit), &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        Link { port, faults }
    }

    /// Shuts the open connections, so that the next request makes a new one.
    fn drop_connections(&self) {
        for stream in self.faults.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn cut(&self) {
        self.faults.down.store(true, Ordering::SeqCst);
        self.drop_connections();
    }

    pub fn restore(&self) {
        self.faults.down.store(false, Ordering::SeqCst);
    }

    /// The next `connections` are answered `503 Slow Down`, as a throttling server does.
    pub fn throttle(&self, connections: usize) {
        self.faults.throttled.store(connections, Ordering::SeqCst);
        self.drop_connections();
    }

    /// Faults set and not yet met: 503s still to answer, and whether a cut is waiting.
    pub fn faults_left(&self) -> (usize, bool) {
        (
            self.faults.throttled.load(Ordering::SeqCst),
            self.faults.truncate.load(Ordering::SeqCst) > 0,
        )
    }

    /// The next connection's responses stop after `bytes` bytes.
    pub fn truncate_next(&self, bytes: usize) {
        self.faults.truncate.store(bytes, Ordering::SeqCst);
        self.drop_connections();
    }
}

/// Reads a request's head and answers S3's throttling error.
fn slow_down(client: &mut TcpStream) {
    use std::io::{Read as _, Write as _};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let body =
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let _ = write!(
        client,
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Both);
}

//! Which ONNX backend runs the models: ONNX Runtime when its library can be found, the
//! pure-Rust tract otherwise. Chosen once per process (ort holds one API table).

use std::ffi::CStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::sys::{ORT_API_VERSION, OrtApiBase};

/// The environment variable that forces a backend: `onnxruntime`, `tract` or `auto`.
pub const BACKEND_ENV: &str = "SEDNA_ONNX_BACKEND";
/// Where ONNX Runtime's shared library is, when it is not found on its own.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";
/// ONNX Runtime's oldest release whose C API this host uses.
pub const ORT_MIN_VERSION: &str = "1.31";
/// The ONNX Runtime release `sedna doctor --install-onnxruntime` installs (the one the
/// tests run against).
pub const ORT_RELEASE: &str = "1.31.1";
pub const HOW_TO_GET_ORT: &str = "`sedna doctor --install-onnxruntime` (or `python3 -m pip install onnxruntime` >= 1.31, or ORT_DYLIB_PATH set to libonnxruntime.so)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    OnnxRuntime,
    Tract,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::OnnxRuntime => "onnxruntime",
            BackendKind::Tract => "tract",
        })
    }
}

/// The active backend, for logs and `sedna doctor`.
pub struct Backend {
    pub kind: BackendKind,
    pub version: String,
    /// ONNX Runtime's library, when it is the backend.
    pub library: Option<PathBuf>,
    /// Why ONNX Runtime is not the backend, when it is not.
    pub fallback: Option<String>,
    environment: ort::environment::Environment,
}

impl Backend {
    pub(crate) fn environment(&self) -> &ort::environment::Environment {
        &self.environment
    }
}

static BACKEND: OnceLock<Result<Backend, String>> = OnceLock::new();
/// The data directory whose `onnxruntime/` is searched (the CLI's `--home`).
static HOME: OnceLock<PathBuf> = OnceLock::new();

/// Where `sedna doctor --install-onnxruntime` puts ONNX Runtime under the data directory
/// `home`, and where the backend looks for it.
pub fn install_dir(home: &Path) -> PathBuf {
    home.join("onnxruntime")
}

/// Looks for ONNX Runtime under the data directory `home` (else the default one). Call
/// before the first model loads; later calls change nothing.
pub fn use_home(home: &Path) {
    let _ = HOME.set(home.to_path_buf());
}

impl Backend {
    /// One line for a person: the backend, and on tract how to get the faster one.
    pub fn summary(&self) -> String {
        match (&self.kind, &self.fallback) {
            (BackendKind::Tract, Some(why)) => format!(
                "ONNX backend: tract {} (pure Rust, several times slower; {why}). For ONNX Runtime: {HOW_TO_GET_ORT}",
                self.version
            ),
            (BackendKind::Tract, None) => {
                format!("ONNX backend: tract {} (as asked)", self.version)
            }
            (BackendKind::OnnxRuntime, _) => format!(
                "ONNX backend: onnxruntime {} ({})",
                self.version,
                self.library
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string())
            ),
        }
    }
}

/// The process's backend, chosen on first use from `SEDNA_ONNX_BACKEND` (default `auto`).
pub fn backend() -> Result<&'static Backend, String> {
    BACKEND
        .get_or_init(|| {
            let choice = std::env::var(BACKEND_ENV).unwrap_or_default();
            let backend = choose(&choice)?;
            tracing::info!("{}", backend.summary());
            Ok(backend)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn choose(choice: &str) -> Result<Backend, String> {
    match choice.trim() {
        "" | "auto" => Ok(
            match find_onnxruntime().and_then(|path| load_onnxruntime(&path)) {
                Ok(backend) => backend,
                Err(why) => tract(Some(why))?,
            },
        ),
        "onnxruntime" | "ort" => {
            let path = find_onnxruntime()?;
            load_onnxruntime(&path)
        }
        "tract" => tract(None),
        other => Err(format!(
            "{BACKEND_ENV}={other:?} is not a backend: use `onnxruntime`, `tract` or `auto`"
        )),
    }
}

fn tract(fallback: Option<String>) -> Result<Backend, String> {
    ort::set_api(ort_tract::api());
    Ok(Backend {
        kind: BackendKind::Tract,
        version: "0.23".to_string(),
        library: None,
        fallback,
        environment: environment()?,
    })
}

fn environment() -> Result<ort::environment::Environment, String> {
    ort::init()
        .with_name("sedna")
        .build()
        .map_err(|e| format!("cannot start the ONNX environment: {e}"))
}

/// `ORT_DYLIB_PATH`, then beside the executable, then the data directory's (`sedna doctor
/// --install-onnxruntime`), then a pip-installed `onnxruntime`.
fn find_onnxruntime() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(DYLIB_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{DYLIB_ENV}={} is not a file", path.display()))
        };
    }
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(library_in));
    let home = HOME
        .get()
        .cloned()
        .unwrap_or_else(crate::files::default_home);
    beside_exe
        .or_else(|| library_in(&install_dir(&home).join("onnxruntime/capi")))
        .or_else(pip_package)
        .ok_or_else(|| "ONNX Runtime was not found".to_string())
}

/// `libonnxruntime.so[.VERSION]` in `dir`, the newest if there are several.
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == "libonnxruntime.so"
                    || n.starts_with("libonnxruntime.so.")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll"
            })
        })
        .collect();
    found.sort();
    found.pop()
}

/// The library inside the `onnxruntime` package of `python3` (the PyPI wheel ships it).
fn pip_package() -> Option<PathBuf> {
    let python = std::env::var_os("VIRTUAL_ENV")
        .map(|venv| PathBuf::from(venv).join("bin/python3"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"));
    let output = Command::new(python)
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); print(s.submodule_search_locations[0] if s else '')",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let package = String::from_utf8(output.stdout).ok()?;
    let package = package.trim();
    (!package.is_empty()).then(|| library_in(&Path::new(package).join("capi")))?
}

fn load_onnxruntime(path: &Path) -> Result<Backend, String> {
    let shown = path.display();
    // SAFETY: loading ONNX Runtime runs its initialisers; it is the library the user
    // pointed to or the one its Python package ships.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot open ONNX Runtime at {shown}: {e}"))?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let api_base: *const OrtApiBase = unsafe {
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const OrtApiBase> = library
            .get(b"OrtGetApiBase")
            .map_err(|e| format!("{shown} is not ONNX Runtime: {e}"))?;
        get()
    };
    if api_base.is_null() {
        return Err(format!("{shown} returned no API"));
    }
    // SAFETY: the base is ONNX Runtime's static table; the version string is static too.
    let (api, version) = unsafe {
        let base = &*api_base;
        let version = CStr::from_ptr((base.GetVersionString)())
            .to_string_lossy()
            .into_owned();
        ((base.GetApi)(ORT_API_VERSION), version)
    };
    if api.is_null() {
        return Err(format!(
            "ONNX Runtime {version} at {shown} is too old: this host needs {ORT_MIN_VERSION} or newer"
        ));
    }
    // SAFETY: a non-null table for the version we asked for; the library stays loaded
    // for the life of the process (leaked below), so its function pointers stay valid.
    ort::set_api(unsafe { std::ptr::read(api) });
    std::mem::forget(library);
    Ok(Backend {
        kind: BackendKind::OnnxRuntime,
        version,
        library: Some(path.to_path_buf()),
        fallback: None,
        environment: environment()?,
    })
}

/// Installs ONNX Runtime's PyPI wheel (its library alone, no Python dependencies) into
/// [`install_dir`] with pip, where the backend finds it from then on; returns the library.
pub fn install_onnxruntime(home: &Path) -> Result<PathBuf, String> {
    let dir = install_dir(home);
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--upgrade",
            "--target",
        ])
        .arg(&dir)
        .arg(format!("onnxruntime=={ORT_RELEASE}"))
        .status()
        .map_err(|e| {
            format!(
                "cannot run `python3 -m pip` ({e}): install Python 3 and pip (Debian: `apt install python3-pip`), or set ORT_DYLIB_PATH to a libonnxruntime.so you have"
            )
        })?;
    if !status.success() {
        return Err(format!(
            "`python3 -m pip install --target {} onnxruntime=={ORT_RELEASE}` failed ({status}): see pip's message above",
            dir.display()
        ));
    }
    library_in(&dir.join("onnxruntime/capi")).ok_or_else(|| {
        format!(
            "pip installed onnxruntime into {} but no libonnxruntime is in its capi/ folder",
            dir.display()
        )
    })
}

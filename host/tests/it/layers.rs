//! The host's layers, as `host/src/lib.rs` lists them, checked on the source: no file
//! imports a layer above its own, and no two files of `host/src` import each other, even
//! through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer: a module may import its own layer and those below.
const LAYERS: &[(&str, u8)] = &[
    ("spec", 0),
    ("files", 0),
    ("metrics", 0),
    ("threads", 0),
    ("media", 1),
    ("storage", 1),
    ("net", 1),
    ("train", 2),
    ("plugin", 3),
    ("pipeline", 4),
    ("learn", 5),
    ("cluster", 6),
    ("server", 6),
    ("cli", 7),
];

type Module = Vec<String>;

struct Source {
    files: BTreeMap<Module, PathBuf>,
    /// `parent::Name` re-exported by `parent/mod.rs` from `parent::child`.
    reexports: BTreeMap<Module, Module>,
}

fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    (parts != ["lib"] && parts != ["main"]).then_some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments, string literals and its `mod tests` (tests may
/// reach anywhere).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after each `crate::` and `super::` in `code`, with `{a, b}` groups expanded
/// one level: `(root, segments)`.
fn paths(code: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut found = Vec::new();
    for root in ["crate", "super"] {
        let needle = format!("{root}::");
        let mut rest = code;
        while let Some(at) = rest.find(&needle) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + needle.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut segments = Vec::new();
            let mut tail = rest;
            loop {
                let end = tail
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                if end == 0 {
                    break;
                }
                segments.push(tail[..end].to_string());
                tail = &tail[end..];
                match tail.strip_prefix("::") {
                    Some(more) => tail = more,
                    None => break,
                }
            }
            if let Some(group) = tail.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let item = item.trim().split("::").next().unwrap_or("").trim();
                    if !item.is_empty() && item != "self" {
                        let mut path = segments.clone();
                        path.push(item.to_string());
                        found.push((root, path));
                    }
                }
            }
            found.push((root, segments));
        }
    }
    found
}

impl Source {
    fn read(src: &Path) -> Self {
        let mut paths_found = Vec::new();
        rust_files(src, &mut paths_found);
        let files: BTreeMap<Module, PathBuf> = paths_found
            .into_iter()
            .filter_map(|p| Some((module_of(src, &p)?, p)))
            .collect();
        let mut reexports = BTreeMap::new();
        for (module, path) in &files {
            if !path.ends_with("mod.rs") {
                continue;
            }
            let text = code(&std::fs::read_to_string(path).unwrap());
            for statement in text.split(';').map(str::trim) {
                let Some(used) = statement.strip_prefix("pub use ") else {
                    continue;
                };
                let (child, items) = used.split_once("::").unwrap_or((used, ""));
                let items = items.trim_start_matches('{').trim_end_matches('}');
                for item in items.split(',') {
                    let name = item.trim().rsplit(' ').next().unwrap_or("").to_string();
                    let mut from = module.clone();
                    from.push(name);
                    let mut to = module.clone();
                    to.push(child.to_string());
                    reexports.insert(from, to);
                }
            }
        }
        Source { files, reexports }
    }

    /// The file a path names: its longest prefix that is a file, through re-exports.
    fn resolve(&self, path: &[String]) -> Option<Module> {
        (1..=path.len()).rev().find_map(|n| {
            let found = path[..n].to_vec();
            self.files.contains_key(&found).then(|| {
                let mut named = found.clone();
                named.extend(path.get(n).cloned());
                self.reexports.get(&named).cloned().unwrap_or(found)
            })
        })
    }

    /// Which files each file imports (a `mod.rs` re-exporting its children imports
    /// nothing by that).
    fn imports(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut imports: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for (module, path) in &self.files {
            let is_mod = path.ends_with("mod.rs");
            let text = code(&std::fs::read_to_string(path).unwrap());
            let reexported: BTreeSet<String> = text
                .split(';')
                .filter_map(|s| s.trim().strip_prefix("pub use "))
                .filter_map(|s| s.split("::").next())
                .map(str::to_string)
                .collect();
            for (root, segments) in paths(&text) {
                let full: Module = match root {
                    "crate" => segments,
                    _ => {
                        // `super`: the parent module (of a mod.rs and of a file alike).
                        let mut base = module.clone();
                        base.pop();
                        base.extend(segments);
                        base
                    }
                };
                let Some(target) = self.resolve(&full) else {
                    continue;
                };
                let own_child = is_mod
                    && target.starts_with(module)
                    && target.len() == module.len() + 1
                    && reexported.contains(&target[module.len()]);
                if target != *module && !own_child {
                    imports.entry(module.clone()).or_default().insert(target);
                }
            }
        }
        imports
    }
}

fn layer(module: &Module) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| module.first().is_some_and(|m| m == name))
        .map_or_else(
            || panic!("{module:?} is in no layer: add it to LAYERS"),
            |l| l.1,
        )
}

fn source() -> Source {
    Source::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn no_file_imports_a_layer_above_its_own() {
    let mut upward = Vec::new();
    for (from, targets) in source().imports() {
        for to in targets {
            let sideways = from[0] != to[0] && layer(&from) == layer(&to) && layer(&from) > 0;
            if layer(&to) > layer(&from) || sideways {
                upward.push(format!("{} -> {}", from.join("/"), to.join("/")));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other() {
    let imports = source().imports();
    assert!(
        imports.len() > 40,
        "the checker found too few imports to be reading the code"
    );
    // Depth-first: a file met again while its own imports are being followed is a loop.
    fn visit(
        module: &Module,
        imports: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
        loops: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            let cycle: Vec<String> = path[at..]
                .iter()
                .chain([module])
                .map(|m| m.join("/"))
                .collect();
            loops.push(cycle.join(" -> "));
            return;
        }
        if !done.insert(module.clone()) {
            return;
        }
        path.push(module.clone());
        for next in imports.get(module).into_iter().flatten() {
            visit(next, imports, path, done, loops);
        }
        path.pop();
    }
    let (mut done, mut loops) = (BTreeSet::new(), Vec::new());
    for module in imports.keys() {
        visit(module, &imports, &mut Vec::new(), &mut done, &mut loops);
    }
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

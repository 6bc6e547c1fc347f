//! The example's data on disk: scenes rendered to PNG with a Sedna data index.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use sedna::media::{Label, Sample};

use crate::scene::{self, Look};

/// Renders the scenes `seeds` of `look` into `dir/images/` (an image already there is
/// kept: the generator is deterministic) and writes their index `dir/<name>.txt`.
pub fn write_set(
    dir: &Path,
    name: &str,
    look: Look,
    seeds: Range<u64>,
) -> anyhow::Result<Arc<[Sample]>> {
    std::fs::create_dir_all(dir.join("images"))?;
    let mut index = String::new();
    let mut samples = Vec::new();
    for (line, seed) in seeds.enumerate() {
        let relative = format!("images/{}-{seed:05}.png", look.name());
        let path = dir.join(&relative);
        let scene = scene::render(look, seed);
        if !path.exists() {
            scene.image.save(&path)?;
        }
        index.push_str(&scene::index_line(&relative, &scene.objects));
        index.push('\n');
        samples.push(Sample {
            line: line as u64 + 1,
            image: path,
            label: Label::Boxes(
                scene
                    .objects
                    .iter()
                    .map(|o| (o.corners, o.class as u32))
                    .collect(),
            ),
        });
    }
    sedna::files::write_atomically(&dir.join(format!("{name}.txt")), index.as_bytes())?;
    Ok(samples.into())
}

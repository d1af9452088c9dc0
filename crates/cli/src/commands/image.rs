//! `sandpit image ...`: the image store, used directly (no server needed).

use std::path::{Path, PathBuf};

use anyhow::Context;
use sandpit_image::{DEFAULT_IMAGE, ImageInfo, ImageStore, RECIPE_LABEL, recipe};

use crate::cli::{ImageCommand, ImagesDir};
use crate::progress::StageProgress;

/// The image directory from `--images-dir` or `<data-dir>/images`.
pub fn images_dir(flag: &ImagesDir, data_dir: &Path) -> PathBuf {
    flag.images_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("images"))
}

pub async fn run(command: ImageCommand, dir: PathBuf) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || run_blocking(command, &dir)).await?
}

fn run_blocking(command: ImageCommand, dir: &Path) -> anyhow::Result<()> {
    let store = ImageStore::open(dir)?;
    match command {
        ImageCommand::Build { force } => {
            let info = build_default(&store, force)?;
            println!(
                "{} ready ({}) in {}",
                info.name,
                human_size(info.size_bytes),
                store.root().display()
            );
        }
        ImageCommand::Import { file, name } => {
            let progress = StageProgress::new();
            let result = store.import_tar(&file, &name, &progress);
            progress.finish();
            let info = result.with_context(|| format!("importing {}", file.display()))?;
            println!("{} imported ({})", info.name, human_size(info.size_bytes));
        }
        ImageCommand::Ls { json: true } => {
            println!("{}", serde_json::to_string_pretty(&store.list()?)?)
        }
        ImageCommand::Ls { json: false } => print_images(&store.list()?),
        ImageCommand::Rm { name } => {
            store.remove(&name)?;
            println!("removed {name}");
        }
    }
    Ok(())
}

/// Returns the default image, building it (with progress) if it is missing. An image of an
/// older recipe is kept (rebuilding takes minutes), with a hint to `sandpit image build`.
pub fn ensure_default(store: &ImageStore) -> anyhow::Result<ImageInfo> {
    match store.info(DEFAULT_IMAGE) {
        Ok(info) => {
            if !is_current(&info) {
                eprintln!(
                    "note: the default image in {0} is from an older recipe; `sandpit image \
                     build --images-dir {0}` updates it (running sandboxes keep the old one)",
                    store.root().display()
                );
            }
            Ok(info)
        }
        Err(_) => build_default(store, false),
    }
}

fn is_current(info: &ImageInfo) -> bool {
    info.config.labels.get(RECIPE_LABEL) == Some(&recipe())
}

/// Builds the default image unless the one there is of the current recipe (and not `force`);
/// the one there is replaced atomically, at the same path.
fn build_default(store: &ImageStore, force: bool) -> anyhow::Result<ImageInfo> {
    match store.info(DEFAULT_IMAGE) {
        Ok(info) if is_current(&info) && !force => return Ok(info),
        Ok(_) => eprintln!(
            "rebuilding the default image in {} (takes a few minutes; the current one serves \
             meanwhile)",
            store.root().display()
        ),
        Err(_) => eprintln!(
            "building the default image in {} (once; takes a few minutes)",
            store.root().display()
        ),
    }
    let progress = StageProgress::new();
    let result = match force {
        true => store.rebuild_default(&progress),
        false => store.build_default(&progress),
    };
    progress.finish();
    result.context("building the default image")
}

fn print_images(images: &[ImageInfo]) {
    if images.is_empty() {
        println!("no images");
        return;
    }
    let width = images
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:width$}  {:>9}  {:11}  CREATED", "NAME", "SIZE", "SOURCE");
    for image in images {
        println!(
            "{:width$}  {:>9}  {:11}  {}",
            image.name,
            human_size(image.size_bytes),
            image.source,
            image.created_at
        );
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}

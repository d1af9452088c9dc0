//! sandpit-image: the images sandboxes run on.
//!
//! An [`ImageStore`] keeps one directory per image: `<root>/<name>/rootfs/` plus
//! `<root>/<name>/image.json`. The metadata file is written last and atomically, so it doubles
//! as the "ready" marker: a directory without it is an interrupted build and is never served.
//! Images come from two places: [`ImageStore::build_default`] (Debian bookworm via debootstrap,
//! plus a current Node LTS) and [`ImageStore::import_tar`] (OCI layout or `docker save`
//! tarballs, unpacked by our own path-safe layer applier).
//!
//! The API is blocking; async callers wrap it in `spawn_blocking`.

mod debian;
mod error;
mod fsutil;
mod import;
mod lock;
mod name;
mod progress;
mod store;
mod unpack;

pub use debian::mirror::{AptSource, parse_deb822, parse_sources_list};
pub use debian::status::{AptStatus, parse_apt_status, parse_debootstrap_line};
pub use debian::{NODE_VERSION, RECIPE_LABEL, recipe};
pub use error::ImageError;
pub use name::validate_name;
pub use progress::{NoProgress, Progress};
pub use sandpit_protocol::control::DEFAULT_IMAGE;
pub use store::{
    ImageConfig, ImageInfo, ImageStore, ImportLimits, SOURCE_DEBOOTSTRAP, SOURCE_DIR,
    SOURCE_DOCKER_SAVE, SOURCE_OCI,
};

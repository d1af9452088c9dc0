mod disk;
mod harness;
mod image_versions;
mod isolation;
mod lifecycle;
mod limits;
mod network;

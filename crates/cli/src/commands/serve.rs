//! `sandpit serve`.

use std::path::PathBuf;

use anyhow::Context;
use sandpit_image::ImageStore;
use sandpit_server::{ServeConfig, Server};

use crate::cli::ServeArgs;

pub async fn run(args: ServeArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    let mut config = ServeConfig::new(data_dir.clone());
    config.listen = args.listen;
    config.images_dir = super::image::images_dir(&args.images, &data_dir);
    config.preview_domain = args.preview_domain;
    config.preview_scheme = args.preview_scheme;
    config.preview_port = args.preview_port;

    let images_dir = config.images_dir.clone();
    tokio::task::spawn_blocking(move || {
        let store = ImageStore::open(&images_dir)?;
        super::image::ensure_default(&store)
    })
    .await??;

    let server = Server::start(config).await.context("starting the server")?;
    let url = format!("http://{}", server.addr());
    println!("sandpit listening on {url}");
    println!("admin key stored in {}", server.key_file().display());
    println!("try: SANDPIT_URL={url} sandpit exec demo -- echo hello");
    // Until ctrl-c or SIGTERM; then running sandboxes are put to sleep.
    server.wait().await
}

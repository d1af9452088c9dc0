//! The test server is a real S3 endpoint: a real client signs, uploads (multipart), lists,
//! reads and deletes through it; a wrong secret is refused.
// Helpers outside #[test] fns unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

fn client(server: &sandpit_s3_test_server::S3TestServer, secret: &str) -> impl ObjectStore {
    // object_store's reqwest uses rustls without a built-in provider: ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_bucket_name("s3-it")
        .with_region(&server.region)
        .with_access_key_id(&server.access_key)
        .with_secret_access_key(secret)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap()
}

#[tokio::test]
async fn s3_roundtrip_multipart_list_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = sandpit_s3_test_server::start(dir.path()).unwrap();
    server.create_bucket("s3-it").unwrap();
    let store = client(&server, &server.secret_key);

    store
        .put(
            &Path::from("small/a.txt"),
            PutPayload::from_static(b"hello"),
        )
        .await
        .unwrap();

    let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let upload = store.put_multipart(&Path::from("big/blob")).await.unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    for chunk in data.chunks(1 << 20) {
        w.write(chunk);
    }
    w.finish().await.unwrap();

    let got = store
        .get(&Path::from("big/blob"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data[..]);

    let mut names: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    assert_eq!(
        names,
        vec!["big/blob".to_string(), "small/a.txt".to_string()]
    );

    store.delete(&Path::from("small/a.txt")).await.unwrap();
    assert!(matches!(
        store.get(&Path::from("small/a.txt")).await,
        Err(object_store::Error::NotFound { .. })
    ));

    let bad = client(&server, "wrong-secret");
    assert!(bad.get(&Path::from("big/blob")).await.is_err());
    server.stop();
}

//! Directory keys for FUSE clients: s3s-fs keeps a key `a/b/` (a "directory marker", what
//! s3fs-fuse writes for `mkdir`) as the directory `a/b`, and a HEAD or GET of a key that is a
//! directory on its disk fails with 500 (it tries to hash the directory). Real S3 answers a
//! marker with an empty object and `a/b` (no slash) with 404, and s3fs relies on that. This
//! wrapper answers those two cases the S3 way and passes everything else to s3s-fs.

use std::path::{Path, PathBuf};

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

/// The content type S3 tools give directory markers.
const DIRECTORY: &str = "application/x-directory";

pub(crate) struct DirAware {
    inner: s3s_fs::FileSystem,
    root: PathBuf,
}

impl DirAware {
    pub(crate) fn new(inner: s3s_fs::FileSystem, root: &Path) -> Self {
        DirAware {
            inner,
            root: root.to_path_buf(),
        }
    }

    /// `Some(is a marker key)` when `bucket/key` is a directory on disk (plain keys only).
    fn directory(&self, bucket: &str, key: &str) -> Option<(bool, std::fs::Metadata)> {
        let plain = |s: &str| !s.split('/').any(|c| c == ".." || c == ".");
        if !plain(bucket) || !plain(key) || bucket.contains('/') {
            return None;
        }
        let meta = std::fs::metadata(self.root.join(bucket).join(key)).ok()?;
        meta.is_dir().then(|| (key.ends_with('/'), meta))
    }
}

fn modified(meta: &std::fs::Metadata) -> Option<Timestamp> {
    meta.modified().ok().map(Timestamp::from)
}

#[async_trait::async_trait]
impl S3 for DirAware {
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        match self.directory(&req.input.bucket, &req.input.key) {
            Some((true, meta)) => Ok(S3Response::new(HeadObjectOutput {
                content_length: Some(0),
                content_type: Some(DIRECTORY.into()),
                last_modified: modified(&meta),
                e_tag: Some(ETag::Strong("d41d8cd98f00b204e9800998ecf8427e".into())),
                ..Default::default()
            })),
            Some((false, _)) => Err(s3_error!(NoSuchKey)),
            None => self.inner.head_object(req).await,
        }
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        match self.directory(&req.input.bucket, &req.input.key) {
            Some((true, meta)) => Ok(S3Response::new(GetObjectOutput {
                content_length: Some(0),
                content_type: Some(DIRECTORY.into()),
                last_modified: modified(&meta),
                body: Some(StreamingBlob::from(s3s::Body::empty())),
                ..Default::default()
            })),
            Some((false, _)) => Err(s3_error!(NoSuchKey)),
            None => self.inner.get_object(req).await,
        }
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.inner.copy_object(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.inner.delete_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.inner.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.inner.delete_objects(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.inner.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.inner.put_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.inner.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.inner.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.inner.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.inner.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.inner.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.inner.abort_multipart_upload(req).await
    }
}

//! Objects in any S3-compatible service, through aws-sdk-s3.
//!
//! Every key is stored as `{key_prefix}{key}`, so tenants (and tests) can share a
//! bucket. Checksums are only calculated and validated where S3 requires them:
//! the SDK's default CRC32 trailers and presigned checksum parameters are not
//! understood by every S3-compatible server.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart as S3CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::local::validated_content_type;
use super::op_metrics::observe;
use super::{
    unquote_etag, validate_completed_parts, validate_expiry, validate_key, validate_part_number, validate_prefix,
    ByteRange, ByteStream, CompletedPart, GetResult, ObjectMeta, ObjectStore, PresignedRequest, StoreError,
    UploadBinding, UploadedPart, MAX_PART_NUMBER, MAX_PART_SIZE, MAX_SINGLE_PUT_SIZE,
};

const BACKEND: &str = "s3";
/// Bodies up to this size are one `PutObject`; larger ones are uploaded in parts of
/// this size, holding at most one part in memory.
pub const S3_PART_SIZE: usize = 8 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One HTTP attempt (an 8 MiB part over a slow link included).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// The whole operation, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(180);
const MAX_ATTEMPTS: u32 = 3;
/// `DeleteObjects` takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// How to build an [`S3Store`].
#[derive(Clone, Default)]
pub struct S3StoreConfig {
    /// Custom endpoint (MinIO, s3s, R2...), e.g. `http://127.0.0.1:9000`. `None` for AWS.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Static credentials. Leave both empty to use the AWS default chain
    /// (environment, profile, web identity / IRSA, instance metadata).
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `http://host/bucket/key` instead of `http://bucket.host/key`; most
    /// self-hosted servers need it.
    pub force_path_style: bool,
    /// Prepended to every key (e.g. `reelhouse/` or `test-<uuid>/`); empty for none.
    pub key_prefix: String,
    /// Sent with every upload, e.g. `AES256` or `aws:kms`.
    pub server_side_encryption: Option<String>,
}

impl std::fmt::Debug for S3StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3StoreConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field("force_path_style", &self.force_path_style)
            .field("key_prefix", &self.key_prefix)
            .field("server_side_encryption", &self.server_side_encryption)
            .finish()
    }
}

/// Objects in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    key_prefix: String,
    sse: Option<ServerSideEncryption>,
}

impl S3Store {
    /// Build the client. Makes no request: use [`ObjectStore::check`] for readiness.
    pub async fn new(config: S3StoreConfig) -> Result<Self, StoreError> {
        if config.bucket.trim().is_empty() {
            return Err(StoreError::Config("the S3 bucket is empty".into()));
        }
        if config.region.trim().is_empty() {
            return Err(StoreError::Config("the S3 region is empty".into()));
        }
        if !config.key_prefix.is_empty() {
            validate_prefix(&config.key_prefix)
                .map_err(|_| StoreError::Config("the S3 key prefix is not a valid key prefix".into()))?;
        }
        let region = Region::new(config.region.clone());
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(region.clone())
            .force_path_style(config.force_path_style)
            .timeout_config(timeouts)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        match (config.access_key_id.is_empty(), config.secret_access_key.is_empty()) {
            (false, false) => {
                builder = builder.credentials_provider(Credentials::new(
                    config.access_key_id,
                    config.secret_access_key,
                    None,
                    None,
                    "reelhouse-settings",
                ));
            }
            (true, true) => {
                let shared = aws_config::defaults(BehaviorVersion::latest()).region(region).load().await;
                let provider = shared.credentials_provider().ok_or_else(|| {
                    StoreError::Config("no S3 credentials configured and none found in the environment".into())
                })?;
                builder.set_credentials_provider(Some(provider));
            }
            _ => {
                return Err(StoreError::Config(
                    "set both the S3 access key id and secret access key, or neither".into(),
                ))
            }
        }
        if let Some(endpoint) = config.endpoint.filter(|e| !e.trim().is_empty()) {
            url::Url::parse(&endpoint).map_err(|_| StoreError::Config("the S3 endpoint is not a valid URL".into()))?;
            builder = builder.endpoint_url(endpoint);
        }
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket,
            key_prefix: config.key_prefix,
            sse: config
                .server_side_encryption
                .filter(|s| !s.is_empty())
                .map(|s| ServerSideEncryption::from(s.as_str())),
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    async fn put_object(&self, key: &str, body: Bytes, content_type: Option<&str>) -> Result<ObjectMeta, StoreError> {
        let size = body.len() as u64;
        let output = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_content_type(content_type.map(str::to_owned))
            .set_server_side_encryption(self.sse.clone())
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .body(body.into())
            .send()
            .await
            .map_err(|err| map_sdk_error("put", key, err))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            content_type: content_type.map(str::to_owned),
            etag: output.e_tag().map(|e| unquote_etag(e).to_owned()),
            last_modified: None,
        })
    }

    async fn create_upload(&self, key: &str, content_type: Option<&str>) -> Result<String, StoreError> {
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_content_type(content_type.map(str::to_owned))
            .set_server_side_encryption(self.sse.clone())
            .send()
            .await
            .map_err(|err| map_sdk_error("create_multipart", key, err))?;
        output.upload_id().map(str::to_owned).ok_or_else(|| StoreError::Backend {
            op: "create_multipart",
            source: "the response carried no upload id".into(),
        })
    }

    async fn send_part(&self, key: &str, upload_id: &str, part_number: i32, body: Bytes) -> Result<String, StoreError> {
        let len = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .part_number(part_number)
            .content_length(len)
            .body(body.into())
            .send()
            .await
            .map_err(|err| map_sdk_error("upload_part", key, err))?;
        output
            .e_tag()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Backend { op: "upload_part", source: "the response carried no ETag".into() })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<Option<String>, StoreError> {
        let parts =
            parts.iter().map(|p| S3CompletedPart::builder().part_number(p.number).e_tag(&p.etag).build()).collect();
        let output = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|err| map_sdk_error("complete_multipart", key, err))?;
        Ok(output.e_tag().map(|e| unquote_etag(e).to_owned()))
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|err| map_sdk_error("abort_multipart", key, err))?;
        Ok(())
    }

    /// The multipart half of `put`: `buffer` already holds more than one part.
    async fn put_multipart(
        &self,
        key: &str,
        upload_id: &str,
        mut buffer: BytesMut,
        mut body: ByteStream,
    ) -> Result<(u64, Option<String>), StoreError> {
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut ended = false;
        loop {
            while !ended && buffer.len() < S3_PART_SIZE {
                match body.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(err)) => return Err(StoreError::Body(err)),
                    None => ended = true,
                }
            }
            if buffer.is_empty() {
                break;
            }
            let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
            if number > MAX_PART_NUMBER {
                return Err(StoreError::TooLarge { limit: S3_PART_SIZE as u64 * MAX_PART_NUMBER as u64 });
            }
            let part = buffer.split_to(S3_PART_SIZE.min(buffer.len())).freeze();
            size += part.len() as u64;
            let etag = self.send_part(key, upload_id, number, part).await?;
            parts.push(CompletedPart { number, etag });
            if ended && buffer.is_empty() {
                break;
            }
        }
        let etag = self.complete_upload(key, upload_id, &parts).await?;
        Ok((size, etag))
    }

    /// A presigned PUT of `key`. What `signing` names is signed too: S3 refuses a
    /// body of another length, or whose SHA-256 differs (BadDigest).
    async fn presign_put_signing(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        signing: Signing<'_>,
    ) -> Result<PresignedRequest, StoreError> {
        observe(BACKEND, "presign_put", key, async {
            let config = self.presign("presign_put", key, expires_in)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            let length = signing.length.map(|l| bound_length(l, MAX_SINGLE_PUT_SIZE)).transpose()?;
            let checksum = signing.sha256.map(sha256_base64).transpose()?;
            let result = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .set_content_length(length)
                .set_checksum_sha256(checksum)
                .set_content_type(content_type)
                .set_server_side_encryption(self.sse.clone())
                .presigned(config)
                .await;
            presigned("presign_put", key, expires_in, result)
        })
        .await
    }

    /// A presigned upload of one part, signing what `signing` names (as
    /// [`Self::presign_put_signing`]).
    async fn presign_part_signing(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
        signing: Signing<'_>,
    ) -> Result<PresignedRequest, StoreError> {
        observe(BACKEND, "presign_upload_part", key, async {
            validate_part_number(part_number)?;
            let config = self.presign("presign_upload_part", key, expires_in)?;
            let length = signing.length.map(|l| bound_length(l, MAX_PART_SIZE)).transpose()?;
            let checksum = signing.sha256.map(sha256_base64).transpose()?;
            let result = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .upload_id(upload_id)
                .part_number(part_number)
                .set_content_length(length)
                .set_checksum_sha256(checksum)
                .presigned(config)
                .await;
            presigned("presign_upload_part", key, expires_in, result)
        })
        .await
    }

    fn presign(&self, op: &'static str, key: &str, expires_in: Duration) -> Result<PresigningConfig, StoreError> {
        validate_key(key)?;
        validate_expiry(expires_in)?;
        PresigningConfig::expires_in(expires_in).map_err(|err| {
            tracing::debug!(error = %err, op, "presigning configuration refused");
            StoreError::InvalidRequest("presigned URL expiry is out of range".into())
        })
    }
}

fn presigned(
    op: &'static str,
    key: &str,
    expires_in: Duration,
    result: Result<
        aws_sdk_s3::presigning::PresignedRequest,
        SdkError<impl std::error::Error + ProvideErrorMetadata + Send + Sync + 'static, HttpResponse>,
    >,
) -> Result<PresignedRequest, StoreError> {
    let request = result.map_err(|err| map_sdk_error(op, key, err))?;
    let expires_at = Utc::now() + chrono::Duration::from_std(expires_in).unwrap_or_else(|_| chrono::Duration::zero());
    Ok(PresignedRequest {
        method: request.method().to_owned(),
        url: request.uri().to_owned(),
        headers: request.headers().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        expires_at,
    })
}

#[async_trait]
impl ObjectStore for S3Store {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(name = "storage put", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn put(&self, key: &str, mut body: ByteStream, content_type: Option<&str>) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "put", key, async {
            validate_key(key)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            let content_type = content_type.as_deref();
            // Read up to one part: a body that fits is a single PutObject.
            let mut buffer = BytesMut::new();
            loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        buffer.extend_from_slice(&chunk);
                        if buffer.len() > S3_PART_SIZE {
                            break;
                        }
                    }
                    Some(Err(err)) => return Err(StoreError::Body(err)),
                    None => return self.put_object(key, buffer.freeze(), content_type).await,
                }
            }

            let upload_id = self.create_upload(key, content_type).await?;
            match self.put_multipart(key, &upload_id, buffer, body).await {
                Ok((size, etag)) => Ok(ObjectMeta {
                    key: key.to_owned(),
                    size,
                    content_type: content_type.map(str::to_owned),
                    etag,
                    last_modified: None,
                }),
                Err(err) => {
                    if let Err(abort_err) = self.abort_upload(key, &upload_id).await {
                        tracing::warn!(error = ?abort_err, "could not abort a failed multipart upload");
                    }
                    Err(err)
                }
            }
        })
        .await
    }

    #[tracing::instrument(name = "storage put bytes", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn put_bytes(&self, key: &str, bytes: Bytes, content_type: Option<&str>) -> Result<ObjectMeta, StoreError> {
        if bytes.len() <= S3_PART_SIZE {
            return observe(BACKEND, "put", key, async {
                validate_key(key)?;
                let content_type = content_type.map(validated_content_type).transpose()?;
                self.put_object(key, bytes, content_type.as_deref()).await
            })
            .await;
        }
        self.put(key, futures::stream::once(async move { Ok(bytes) }).boxed(), content_type).await
    }

    #[tracing::instrument(name = "storage get", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResult, StoreError> {
        observe(BACKEND, "get", key, async {
            validate_key(key)?;
            if range.is_some_and(ByteRange::is_never_satisfiable) {
                return Err(StoreError::RangeNotSatisfiable { size: None });
            }
            let range = match range.map(ByteRange::within_i64) {
                None => None,
                Some(Some(range)) => Some(range),
                Some(None) => {
                    let size = self.head(key).await?.size;
                    return Err(StoreError::RangeNotSatisfiable { size: Some(size) });
                }
            };
            let result = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .set_range(range.map(ByteRange::to_header))
                .send()
                .await;
            let output = match result.map_err(|err| map_sdk_error("get", key, err)) {
                Ok(output) => output,
                Err(StoreError::RangeNotSatisfiable { .. }) => {
                    // S3 does not say how big the object is; the HTTP layer wants it.
                    let size = self.head(key).await.ok().map(|meta| meta.size);
                    return Err(StoreError::RangeNotSatisfiable { size });
                }
                Err(err) => return Err(err),
            };
            let body_len = output.content_length().and_then(|len| u64::try_from(len).ok()).unwrap_or(0);
            let (resolved, size) = match output.content_range().and_then(parse_content_range) {
                Some((first, last, size)) => (Some((first, last)), size),
                None => (None, body_len),
            };
            let meta = ObjectMeta {
                key: key.to_owned(),
                size,
                content_type: output.content_type().map(str::to_owned),
                etag: output.e_tag().map(|e| unquote_etag(e).to_owned()),
                last_modified: output.last_modified().and_then(to_chrono),
            };
            Ok(GetResult { meta, range: resolved, body: sdk_body_stream(output.body) })
        })
        .await
    }

    #[tracing::instrument(name = "storage head", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "head", key, async {
            validate_key(key)?;
            let output = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .send()
                .await
                .map_err(|err| map_sdk_error("head", key, err))?;
            Ok(ObjectMeta {
                key: key.to_owned(),
                size: output.content_length().and_then(|len| u64::try_from(len).ok()).unwrap_or(0),
                content_type: output.content_type().map(str::to_owned),
                etag: output.e_tag().map(|e| unquote_etag(e).to_owned()),
                last_modified: output.last_modified().and_then(to_chrono),
            })
        })
        .await
    }

    #[tracing::instrument(name = "storage delete", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        observe(BACKEND, "delete", key, async {
            validate_key(key)?;
            let result = self.client.delete_object().bucket(&self.bucket).key(self.full_key(key)).send().await;
            match result.map_err(|err| map_sdk_error("delete", key, err)) {
                Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                Err(err) => Err(err),
            }
        })
        .await
    }

    #[tracing::instrument(name = "storage delete prefix", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %prefix))]
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        observe(BACKEND, "delete_prefix", prefix, async {
            validate_prefix(prefix)?;
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .into_paginator()
                .send();
            let mut batch = Vec::with_capacity(DELETE_BATCH);
            let mut deleted = 0;
            while let Some(page) = pages.next().await {
                let page = page.map_err(|err| map_sdk_error("delete_prefix", prefix, err))?;
                for object in page.contents() {
                    if let Some(key) = object.key() {
                        batch.push(key.to_owned());
                    }
                    if batch.len() == DELETE_BATCH {
                        deleted += self.delete_batch(prefix, std::mem::take(&mut batch)).await?;
                    }
                }
            }
            if !batch.is_empty() {
                deleted += self.delete_batch(prefix, batch).await?;
            }
            Ok(deleted)
        })
        .await
    }

    async fn presign_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
    ) -> Result<PresignedRequest, StoreError> {
        self.presign_put_signing(key, expires_in, content_type, Signing::default()).await
    }

    async fn presign_checked_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        length: u64,
        sha256: &str,
    ) -> Result<PresignedRequest, StoreError> {
        let signing = Signing { length: Some(length), sha256: Some(sha256) };
        self.presign_put_signing(key, expires_in, content_type, signing).await
    }

    #[tracing::instrument(name = "storage create multipart", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn create_checked_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, StoreError> {
        observe(BACKEND, "create_multipart", key, async {
            validate_key(key)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            // SHA256: S3 keeps each part's checksum (checked as the part arrives)
            // and the object's composite one (a checksum of the part checksums).
            let output = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .set_content_type(content_type)
                .set_server_side_encryption(self.sse.clone())
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
                .send()
                .await
                .map_err(|err| map_sdk_error("create_multipart", key, err))?;
            output.upload_id().map(str::to_owned).ok_or_else(|| StoreError::Backend {
                op: "create_multipart",
                source: "the response carried no upload id".into(),
            })
        })
        .await
    }

    async fn presign_checked_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
        length: u64,
        sha256: &str,
    ) -> Result<PresignedRequest, StoreError> {
        let signing = Signing { length: Some(length), sha256: Some(sha256) };
        self.presign_part_signing(key, upload_id, part_number, expires_in, signing).await
    }

    #[tracing::instrument(name = "storage complete multipart", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn complete_checked_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        sha256s: &[String],
    ) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "complete_multipart", key, async {
            validate_key(key)?;
            validate_completed_parts(&parts)?;
            if sha256s.len() != parts.len() {
                return Err(StoreError::InvalidRequest("every part needs its SHA-256".into()));
            }
            let mut completed = Vec::with_capacity(parts.len());
            for (part, sha256) in parts.iter().zip(sha256s) {
                completed.push(
                    S3CompletedPart::builder()
                        .part_number(part.number)
                        .e_tag(&part.etag)
                        .checksum_sha256(sha256_base64(sha256)?)
                        .build(),
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .upload_id(upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
                .send()
                .await
                .map_err(|err| map_sdk_error("complete_multipart", key, err))?;
            self.head(key).await
        })
        .await
    }

    async fn stored_sha256(&self, key: &str) -> Result<Option<String>, StoreError> {
        observe(BACKEND, "head", key, async {
            validate_key(key)?;
            let output = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(self.full_key(key))
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send()
                .await
                .map_err(|err| map_sdk_error("head", key, err))?;
            // A whole-object SHA-256 (a multipart upload's is `…-N`, a checksum of checksums).
            Ok(output
                .checksum_sha256()
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .filter(|digest| digest.len() == 32)
                .map(hex::encode))
        })
        .await
    }

    async fn presign_bound_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        binding: UploadBinding,
    ) -> Result<PresignedRequest, StoreError> {
        let signing = Signing { length: Some(binding.length), sha256: None };
        self.presign_put_signing(key, expires_in, content_type, signing).await
    }

    async fn presign_bound_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
        binding: UploadBinding,
    ) -> Result<PresignedRequest, StoreError> {
        let signing = Signing { length: Some(binding.length), sha256: None };
        self.presign_part_signing(key, upload_id, part_number, expires_in, signing).await
    }

    #[tracing::instrument(name = "storage rename", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %to))]
    async fn rename(&self, from: &str, to: &str) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "rename", to, async {
            validate_key(from)?;
            validate_key(to)?;
            if from == to {
                return self.head(to).await;
            }
            let meta = self.head(from).await?;
            if meta.size > MAX_SINGLE_PUT_SIZE {
                return Err(StoreError::TooLarge { limit: MAX_SINGLE_PUT_SIZE });
            }
            // Copy exactly the version we looked at: a concurrent PUT to `from`
            // makes the copy fail instead of moving other bytes.
            let mut copy = self
                .client
                .copy_object()
                .bucket(&self.bucket)
                .key(self.full_key(to))
                .copy_source(copy_source(&self.bucket, &self.full_key(from)))
                .set_server_side_encryption(self.sse.clone());
            if let Some(etag) = &meta.etag {
                copy = copy.copy_source_if_match(format!("\"{etag}\""));
            }
            copy.send().await.map_err(|err| map_sdk_error("rename", from, err))?;
            let result = self.client.delete_object().bucket(&self.bucket).key(self.full_key(from)).send().await;
            match result.map_err(|err| map_sdk_error("rename", from, err)) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "could not delete a renamed object's old key; the upload sweeper will")
                }
            }
            self.head(to).await
        })
        .await
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<PresignedRequest, StoreError> {
        observe(BACKEND, "presign_get", key, async {
            let config = self.presign("presign_get", key, expires_in)?;
            let result = self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).presigned(config).await;
            presigned("presign_get", key, expires_in, result)
        })
        .await
    }

    #[tracing::instrument(name = "storage create multipart", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn create_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, StoreError> {
        observe(BACKEND, "create_multipart", key, async {
            validate_key(key)?;
            let content_type = content_type.map(validated_content_type).transpose()?;
            self.create_upload(key, content_type.as_deref()).await
        })
        .await
    }

    #[tracing::instrument(name = "storage upload part", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        observe(BACKEND, "upload_part", key, async {
            validate_key(key)?;
            validate_part_number(part_number)?;
            if body.len() as u64 > MAX_PART_SIZE {
                return Err(StoreError::TooLarge { limit: MAX_PART_SIZE });
            }
            self.send_part(key, upload_id, part_number, body).await
        })
        .await
    }

    async fn presign_upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
    ) -> Result<PresignedRequest, StoreError> {
        self.presign_part_signing(key, upload_id, part_number, expires_in, Signing::default()).await
    }

    #[tracing::instrument(name = "storage complete multipart", skip_all, fields(otel.kind = "client", storage.backend = "s3", storage.key = %key))]
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<ObjectMeta, StoreError> {
        observe(BACKEND, "complete_multipart", key, async {
            validate_key(key)?;
            validate_completed_parts(&parts)?;
            let etag = self.complete_upload(key, upload_id, &parts).await?;
            // CompleteMultipartUpload reports neither size nor type.
            let mut meta = self.head(key).await?;
            if meta.etag.is_none() {
                meta.etag = etag;
            }
            Ok(meta)
        })
        .await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        observe(BACKEND, "abort_multipart", key, async {
            validate_key(key)?;
            self.abort_upload(key, upload_id).await
        })
        .await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<UploadedPart>, StoreError> {
        observe(BACKEND, "list_parts", key, async {
            validate_key(key)?;
            let mut parts = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let output = self
                    .client
                    .list_parts()
                    .bucket(&self.bucket)
                    .key(self.full_key(key))
                    .upload_id(upload_id)
                    .set_part_number_marker(marker.clone())
                    .send()
                    .await
                    .map_err(|err| map_sdk_error("list_parts", key, err))?;
                for part in output.parts() {
                    let Some(number) = part.part_number() else { continue };
                    // S3 always reports the ETag; some compatible servers (s3s-fs) do
                    // not, and do not check it on completion either.
                    let etag = part.e_tag().map(unquote_etag).unwrap_or_default().to_owned();
                    let size = u64::try_from(part.size().unwrap_or(0)).unwrap_or(0);
                    parts.push(UploadedPart { number, etag, size });
                }
                match (output.is_truncated(), output.next_part_number_marker()) {
                    (Some(true), Some(next)) if Some(next) != marker.as_deref() => marker = Some(next.to_owned()),
                    _ => break,
                }
            }
            parts.sort_by_key(|p| p.number);
            Ok(parts)
        })
        .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        observe(BACKEND, "check", "", async {
            let result = self.client.head_bucket().bucket(&self.bucket).send().await;
            match result.map_err(|err| map_sdk_error("check", "", err)) {
                Ok(_) => Ok(()),
                // HeadBucket has no body: a missing bucket is a bare 404.
                Err(StoreError::NotFound { .. }) => {
                    Err(StoreError::Backend { op: "check", source: "the configured bucket does not exist".into() })
                }
                Err(err) => Err(err),
            }
        })
        .await
    }
}

impl S3Store {
    /// Delete up to [`DELETE_BATCH`] full keys in one request.
    async fn delete_batch(&self, prefix: &str, keys: Vec<String>) -> Result<u64, StoreError> {
        let count = keys.len() as u64;
        let objects = keys
            .into_iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| StoreError::Backend { op: "delete_prefix", source: Box::new(err) })?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|err| StoreError::Backend { op: "delete_prefix", source: Box::new(err) })?;
        let output = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|err| map_sdk_error("delete_prefix", prefix, err))?;
        if let Some(first) = output.errors().first() {
            return Err(StoreError::Backend {
                op: "delete_prefix",
                source: format!(
                    "{} of {count} objects were not deleted, first: {}",
                    output.errors().len(),
                    first.code().unwrap_or("unknown error")
                )
                .into(),
            });
        }
        Ok(count)
    }
}

/// Sort an SDK error into the variants callers act on. The SDK error (which may
/// name the endpoint) stays the source: logged, never shown.
fn map_sdk_error<E>(op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    if matches!(err, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)) {
        return StoreError::Unavailable { op, source: Box::new(err) };
    }
    let status = err.raw_response().map(|response| response.status().as_u16());
    let code = err.code().map(str::to_owned);
    match (code.as_deref(), status) {
        // A missing bucket is our misconfiguration, not a missing object.
        (Some("NoSuchBucket"), _) => StoreError::Backend { op, source: Box::new(err) },
        (Some("NoSuchUpload"), _) => StoreError::UploadNotFound,
        (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => StoreError::not_found(key),
        (Some("InvalidRange"), _) | (_, Some(416)) => StoreError::RangeNotSatisfiable { size: None },
        (Some("EntityTooSmall"), _) => {
            StoreError::InvalidRequest("a part other than the last is smaller than 5 MiB".into())
        }
        (Some("InvalidPart"), _) => {
            StoreError::InvalidRequest("a part was not uploaded or its ETag does not match".into())
        }
        (Some("BadDigest" | "InvalidDigest"), _) => {
            StoreError::InvalidRequest("a body does not match its signed checksum".into())
        }
        (Some("InvalidPartOrder"), _) => StoreError::InvalidRequest("parts must be listed in ascending order".into()),
        (Some("EntityTooLarge"), _) => StoreError::TooLarge { limit: MAX_PART_SIZE },
        (Some("SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" | "Throttling"), _)
        | (_, Some(500..=599)) => StoreError::Unavailable { op, source: Box::new(err) },
        _ => StoreError::Backend { op, source: Box::new(err) },
    }
}

/// What a presigned upload URL signs besides the key (and content type): the
/// body's exact length and SHA-256 (hex).
#[derive(Debug, Default, Clone, Copy)]
struct Signing<'a> {
    length: Option<u64>,
    sha256: Option<&'a str>,
}

/// A hex SHA-256 as S3's checksum headers carry it (base64 of the 32 bytes).
fn sha256_base64(sha256: &str) -> Result<String, StoreError> {
    let digest = hex::decode(sha256)
        .ok()
        .filter(|d| d.len() == 32)
        .ok_or_else(|| StoreError::InvalidRequest("a SHA-256 is 64 hex digits".into()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// A bound URL carries between 1 and `max` bytes; as the SDK's `i64`.
fn bound_length(length: u64, max: u64) -> Result<i64, StoreError> {
    if length == 0 || length > max {
        return Err(StoreError::InvalidRequest(format!("a bound upload URL carries between 1 and {max} bytes")));
    }
    i64::try_from(length).map_err(|_| StoreError::InvalidRequest("the upload length is out of range".into()))
}

/// `x-amz-copy-source`: `bucket/key`, URL-encoded except for the slashes.
fn copy_source(bucket: &str, full_key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + full_key.len() + 8);
    for byte in bucket.bytes().chain(std::iter::once(b'/')).chain(full_key.bytes()) {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `bytes first-last/size` → `(first, last, size)`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((first.parse().ok()?, last.parse().ok()?, size.parse().ok()?))
}

fn to_chrono(time: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

fn sdk_body_stream(body: aws_sdk_s3::primitives::ByteStream) -> ByteStream {
    futures::stream::try_unfold(body, |mut body| async move {
        match body.try_next().await {
            Ok(Some(chunk)) => Ok(Some((chunk, body))),
            Ok(None) => Ok(None),
            Err(err) => Err(std::io::Error::other(err)),
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_encoded_except_slashes() {
        assert_eq!(copy_source("b", "p/users/1/a b+c"), "b/p/users/1/a%20b%2Bc");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-0/10"), Some((0, 0, 10)));
        assert_eq!(parse_content_range("bytes 5-9/10"), Some((5, 9, 10)));
        assert_eq!(parse_content_range("bytes */10"), None);
    }

    #[tokio::test]
    async fn config_is_checked_and_secrets_redacted() {
        let config = S3StoreConfig {
            bucket: "b".into(),
            region: "us-east-1".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
            ..S3StoreConfig::default()
        };
        assert!(!format!("{config:?}").contains("very-secret"));
        assert!(S3Store::new(config.clone()).await.is_ok());
        let half = S3StoreConfig { secret_access_key: String::new(), ..config.clone() };
        assert!(matches!(S3Store::new(half).await, Err(StoreError::Config(_))));
        let bad_prefix = S3StoreConfig { key_prefix: "../x/".into(), ..config };
        assert!(matches!(S3Store::new(bad_prefix).await, Err(StoreError::Config(_))));
    }
}

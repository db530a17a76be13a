//! The `storage` circuit breaker around a remote object store (S3).
//!
//! Every call that goes over the network asks the breaker first; while it is open
//! the call fails at once with [`StoreError::CircuitOpen`] (`UNAVAILABLE` with
//! `Retry-After`) instead of waiting for the SDK's timeouts and retries. Only
//! [`StoreError::Unavailable`] (no connection, timeouts, 5xx, throttling) counts as
//! a failure: a missing object or a refused request is an answer. Presigning is
//! local computation and is not guarded. The SDK retries beneath (with its own
//! jittered backoff, `storage::s3`), so nothing is retried again here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    ByteRange, ByteStream, CompletedPart, GetResult, LocalFile, ObjectMeta, ObjectStore, PresignedRequest, StoreError,
    UploadBinding, UploadedPart,
};
use crate::breaker::Breaker;

pub struct GuardedStore {
    inner: Arc<dyn ObjectStore>,
    breaker: Arc<Breaker>,
}

impl GuardedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, breaker: Arc<Breaker>) -> Self {
        Self { inner, breaker }
    }

    async fn guard<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|rejected| StoreError::CircuitOpen { retry_after_secs: rejected.retry_after_secs() })?;
        let result = call.await;
        match &result {
            Err(StoreError::Unavailable { source, .. }) => permit.failure(failure_category(source.as_ref())),
            _ => permit.success(),
        }
        result
    }
}

/// A short category for a storage outage, from the SDK error's text (no host or
/// key is kept: only one of these fixed strings).
fn failure_category(source: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut text = String::new();
    let mut next = Some(source);
    while let Some(err) = next {
        text.push_str(&format!("{err:?} "));
        next = err.source();
    }
    let text = text.to_ascii_lowercase();
    if text.contains("timeout") || text.contains("timed out") {
        "timed out"
    } else if text.contains("refused") {
        "connection refused"
    } else if text.contains("reset") || text.contains("closed") || text.contains("broken pipe") {
        "connection reset"
    } else if text.contains("dispatch") || text.contains("connect") || text.contains("io error") {
        "connection failed"
    } else {
        "server error"
    }
}

#[async_trait]
impl ObjectStore for GuardedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn put(&self, key: &str, body: ByteStream, content_type: Option<&str>) -> Result<ObjectMeta, StoreError> {
        self.guard(self.inner.put(key, body, content_type)).await
    }

    async fn put_bytes(&self, key: &str, bytes: Bytes, content_type: Option<&str>) -> Result<ObjectMeta, StoreError> {
        self.guard(self.inner.put_bytes(key, bytes, content_type)).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetResult, StoreError> {
        self.guard(self.inner.get(key, range)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.guard(self.inner.head(key)).await
    }

    async fn local_file(&self, key: &str) -> Result<Option<LocalFile>, StoreError> {
        self.inner.local_file(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.guard(self.inner.delete(key)).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        self.guard(self.inner.delete_prefix(prefix)).await
    }

    async fn presign_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
    ) -> Result<PresignedRequest, StoreError> {
        self.inner.presign_put(key, expires_in, content_type).await
    }

    async fn presign_bound_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        binding: UploadBinding,
    ) -> Result<PresignedRequest, StoreError> {
        self.inner.presign_bound_put(key, expires_in, content_type, binding).await
    }

    async fn presign_bound_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
        binding: UploadBinding,
    ) -> Result<PresignedRequest, StoreError> {
        self.inner.presign_bound_part(key, upload_id, part_number, expires_in, binding).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<ObjectMeta, StoreError> {
        self.guard(self.inner.rename(from, to)).await
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<PresignedRequest, StoreError> {
        self.inner.presign_get(key, expires_in).await
    }

    async fn presign_checked_put(
        &self,
        key: &str,
        expires_in: Duration,
        content_type: Option<&str>,
        length: u64,
        sha256: &str,
    ) -> Result<PresignedRequest, StoreError> {
        self.inner.presign_checked_put(key, expires_in, content_type, length, sha256).await
    }

    async fn create_checked_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, StoreError> {
        self.guard(self.inner.create_checked_multipart(key, content_type)).await
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
        self.inner.presign_checked_part(key, upload_id, part_number, expires_in, length, sha256).await
    }

    async fn complete_checked_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        sha256s: &[String],
    ) -> Result<ObjectMeta, StoreError> {
        self.guard(self.inner.complete_checked_multipart(key, upload_id, parts, sha256s)).await
    }

    async fn stored_sha256(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.guard(self.inner.stored_sha256(key)).await
    }

    async fn create_multipart(&self, key: &str, content_type: Option<&str>) -> Result<String, StoreError> {
        self.guard(self.inner.create_multipart(key, content_type)).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.guard(self.inner.upload_part(key, upload_id, part_number, body)).await
    }

    async fn presign_upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: i32,
        expires_in: Duration,
    ) -> Result<PresignedRequest, StoreError> {
        self.inner.presign_upload_part(key, upload_id, part_number, expires_in).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<ObjectMeta, StoreError> {
        self.guard(self.inner.complete_multipart(key, upload_id, parts)).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.guard(self.inner.abort_multipart(key, upload_id)).await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<UploadedPart>, StoreError> {
        self.guard(self.inner.list_parts(key, upload_id)).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.guard(self.inner.check()).await
    }

    fn supports_staged(&self) -> bool {
        self.inner.supports_staged()
    }

    async fn open_staged(&self, key: &str, upload_id: &str, offset: u64) -> Result<super::StagedWriter, StoreError> {
        self.guard(self.inner.open_staged(key, upload_id, offset)).await
    }

    async fn staged_len(&self, key: &str, upload_id: &str) -> Result<Option<u64>, StoreError> {
        self.guard(self.inner.staged_len(key, upload_id)).await
    }

    async fn complete_staged(&self, key: &str, upload_id: &str, size: u64) -> Result<ObjectMeta, StoreError> {
        self.guard(self.inner.complete_staged(key, upload_id, size)).await
    }
}

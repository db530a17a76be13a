//! The HTTP side of [`LocalStore`]'s signed URLs: `PUT`, `GET` and `HEAD` on
//! `/storage/{key}`. The URL format is documented on the `local` module.
//!
//! Requests carry no credentials: the signature in the query string is the whole
//! authorization, checked before any byte is read or written. Bodies are streamed
//! both ways; nothing holds a whole object in memory.

use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures::StreamExt;

use super::local::{
    SignedParams, QUERY_CONTENT_TYPE, QUERY_EXPIRES, QUERY_LENGTH, QUERY_METHOD, QUERY_PART, QUERY_SESSION,
    QUERY_SIGNATURE, QUERY_UPLOAD_ID,
};
use super::{
    validate_key, ByteStream, LocalStore, ObjectMeta, ObjectStore, StoreError, UploadGate, MAX_PART_SIZE,
    MAX_SINGLE_PUT_SIZE,
};
use crate::error::AppError;

/// Chunks in flight between the connection and the disk writer.
const PUT_CHANNEL_CHUNKS: usize = 8;

/// Mount the signed routes. Expects `web::Data<Arc<LocalStore>>` in app data.
pub fn configure_signed_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/storage/{key:.*}")
            .route(web::put().to(signed_put))
            .route(web::get().to(signed_get))
            .route(web::head().to(signed_get)),
    );
}

/// Read the signed parameters; anything missing, repeated or malformed is an
/// invalid signature (403), not a bad request: we do not help anyone probe.
fn parse_signed_query(query: &str) -> Result<SignedParams, StoreError> {
    let mut params = SignedParams::default();
    let (mut method, mut expires, mut signature) = (None, None, None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        let slot_was_empty = match name.as_ref() {
            QUERY_METHOD => method.replace(value).is_none(),
            QUERY_EXPIRES => expires.replace(value.parse::<i64>().map_err(|_| StoreError::InvalidSignature)?).is_none(),
            QUERY_CONTENT_TYPE => params.content_type.replace(value).is_none(),
            QUERY_UPLOAD_ID => params.upload_id.replace(value).is_none(),
            QUERY_PART => {
                params.part.replace(value.parse::<i32>().map_err(|_| StoreError::InvalidSignature)?).is_none()
            }
            QUERY_SESSION => params.session.replace(value).is_none(),
            QUERY_LENGTH => {
                params.length.replace(value.parse::<u64>().map_err(|_| StoreError::InvalidSignature)?).is_none()
            }
            QUERY_SIGNATURE => signature.replace(value).is_none(),
            _ => true,
        };
        if !slot_was_empty {
            return Err(StoreError::InvalidSignature);
        }
    }
    params.method = method.ok_or(StoreError::InvalidSignature)?;
    params.expires = expires.ok_or(StoreError::InvalidSignature)?;
    params.signature = signature.ok_or(StoreError::InvalidSignature)?;
    if params.upload_id.is_some() != params.part.is_some() || params.session.is_some() != params.length.is_some() {
        return Err(StoreError::InvalidSignature);
    }
    Ok(params)
}

/// Validate the key and the signature for this request's method.
fn authorize(req: &HttpRequest, store: &LocalStore, key: &str) -> Result<SignedParams, StoreError> {
    validate_key(key)?;
    let params = parse_signed_query(req.query_string())?;
    store.verify_signed(req.method().as_str(), key, &params)?;
    Ok(params)
}

/// Hand the (single-threaded, `!Send`) actix payload to the `Send` world of
/// [`ByteStream`] through a small bounded channel. Run the returned future next
/// to the consumer; it stops when the payload ends or the consumer goes away.
fn bridge_payload(mut payload: web::Payload) -> (ByteStream, impl std::future::Future<Output = ()>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(PUT_CHANNEL_CHUNKS);
    let pump = async move {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|err| std::io::Error::other(err.to_string()));
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    };
    (tokio_stream::wrappers::ReceiverStream::new(rx).boxed(), pump)
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

#[tracing::instrument(skip_all, fields(key = %key.as_str()))]
async fn signed_put(
    req: HttpRequest,
    key: web::Path<String>,
    payload: web::Payload,
    store: web::Data<Arc<LocalStore>>,
) -> Result<HttpResponse, AppError> {
    let key = key.into_inner();
    let params = authorize(&req, &store, &key)?;

    let sent_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let content_type = match (params.content_type.as_deref(), sent_type) {
        // As with S3, a signed content type must be sent, and sent unchanged.
        (Some(signed), Some(sent)) if signed == sent => Some(signed.to_owned()),
        (Some(_), _) => return Err(AppError::forbidden("the Content-Type header does not match the signed URL")),
        (None, sent) => sent.map(str::to_owned),
    };

    // A URL bound to an upload session works only while that session is OPEN (asked
    // before a byte is read) and carries exactly the signed length.
    if let Some(session) = params.session.as_deref() {
        let session = uuid::Uuid::parse_str(session).map_err(|_| StoreError::InvalidSignature)?;
        let gate = req.app_data::<web::Data<Arc<dyn UploadGate>>>().ok_or(StoreError::UploadClosed)?;
        gate.check(session, &key).await?;
    }
    let limit = match params.length {
        Some(length) => length,
        None if params.upload_id.is_some() => MAX_PART_SIZE,
        None => MAX_SINGLE_PUT_SIZE,
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(StoreError::TooLarge { limit }.into());
    }
    if let (Some(length), Some(declared)) = (params.length, declared) {
        if declared != length {
            return Err(StoreError::InvalidRequest(format!(
                "this URL accepts exactly {length} bytes, the request declares {declared}"
            ))
            .into());
        }
    }

    let (body, pump) = bridge_payload(payload);
    let etag = match (params.upload_id.as_deref(), params.part) {
        (Some(upload_id), Some(part)) => {
            let (etag, ()) = futures::join!(store.upload_part_stream(&key, upload_id, part, body, params.length), pump);
            etag?
        }
        _ => {
            let meta = match params.length {
                Some(length) => {
                    let put = store.put_exact(&key, body, content_type.as_deref(), length);
                    let (meta, ()) = futures::join!(put, pump);
                    meta
                }
                None => {
                    let put = store.put_limited(&key, body, content_type.as_deref(), Some(limit));
                    let (meta, ()) = futures::join!(put, pump);
                    meta
                }
            };
            meta?.etag.unwrap_or_default()
        }
    };
    Ok(HttpResponse::Ok().insert_header((header::ETAG, quoted(&etag))).finish())
}

#[tracing::instrument(skip_all, fields(key = %key.as_str()))]
async fn signed_get(
    req: HttpRequest,
    key: web::Path<String>,
    store: web::Data<Arc<LocalStore>>,
) -> Result<HttpResponse, AppError> {
    let key = key.into_inner();
    let params = authorize(&req, &store, &key)?;
    if params.upload_id.is_some() {
        return Err(StoreError::InvalidSignature.into());
    }

    if req.method() == Method::HEAD {
        let meta = store.head(&key).await?;
        let mut response = object_response(StatusCode::OK, &meta);
        // HEAD sends no body; the sized empty stream only carries Content-Length.
        return Ok(
            response.body(SizedStream::new(meta.size, futures::stream::empty::<Result<Bytes, std::io::Error>>()))
        );
    }

    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(super::ByteRange::parse_header);
    match store.get(&key, range).await {
        Ok(result) => {
            let len = result.body_len();
            let mut response = match result.range {
                Some((first, last)) => {
                    let mut response = object_response(StatusCode::PARTIAL_CONTENT, &result.meta);
                    response
                        .insert_header((header::CONTENT_RANGE, format!("bytes {first}-{last}/{}", result.meta.size)));
                    response
                }
                None => object_response(StatusCode::OK, &result.meta),
            };
            Ok(response.body(SizedStream::new(len, result.body)))
        }
        Err(StoreError::RangeNotSatisfiable { size }) => Ok(crate::error::range_not_satisfiable(size)),
        Err(err) => Err(err.into()),
    }
}

fn object_response(status: StatusCode, meta: &ObjectMeta) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        // Uploaded bytes are served from the API's origin: never let them run as a page.
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"))
        .insert_header((header::CONTENT_TYPE, meta.content_type.as_deref().unwrap_or("application/octet-stream")));
    if let Some(etag) = &meta.etag {
        response.insert_header((header::ETAG, quoted(etag)));
    }
    if let Some(modified) = meta.last_modified {
        response.insert_header((header::LAST_MODIFIED, modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string()));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_query_needs_every_field_once() {
        let ok = "X-Reelhouse-Method=GET&X-Reelhouse-Expires=10&X-Reelhouse-Signature=ab";
        assert!(parse_signed_query(ok).is_ok());
        assert!(parse_signed_query("X-Reelhouse-Method=GET&X-Reelhouse-Expires=10").is_err());
        assert!(parse_signed_query(&format!("{ok}&X-Reelhouse-Method=PUT")).is_err());
        assert!(parse_signed_query(&format!("{ok}&X-Reelhouse-Part=1")).is_err());
        assert!(parse_signed_query(&format!("{ok}&X-Reelhouse-Length=1")).is_err());
        assert!(parse_signed_query(&format!("{ok}&X-Reelhouse-Session=a&X-Reelhouse-Length=1")).is_ok());
        assert!(parse_signed_query(&format!("{ok}&X-Reelhouse-Session=a&X-Reelhouse-Length=x")).is_err());
        assert!(parse_signed_query("X-Reelhouse-Method=GET&X-Reelhouse-Expires=x&X-Reelhouse-Signature=ab").is_err());
    }
}

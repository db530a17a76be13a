//! Apollo automatic persisted queries: a client sends
//! `extensions.persistedQuery = { version: 1, sha256Hash }` and, once the server
//! knows the hash, no document at all; the server keeps the parsed document, so a
//! hot query is not parsed again. Over POST and GET (GraphQL over HTTP) and the
//! WebSocket alike.
//!
//! The wire format is Apollo's: an unknown hash is answered with one error, message
//! `PersistedQueryNotFound`, code `PERSISTED_QUERY_NOT_FOUND`; the client then sends
//! the document with its hash, which is checked (SHA-256 of the exact text) before
//! it is kept. With `graphql.persisted_queries_capacity = 0` every such request is
//! answered `PersistedQueryNotSupported` (`PERSISTED_QUERY_NOT_SUPPORTED`), which
//! makes Apollo clients send whole documents from then on.
//!
//! What stays as strict as for a document sent in full (it is the same code path:
//! only the parse is skipped):
//! - the document limits (aliases, directives, depth: `limits::DocumentLimits` runs
//!   on the kept document in the parse hook), the parser's recursion limit,
//!   validation with complexity, and the introspection rules (per request);
//! - GET runs queries only: a hash naming a mutation or subscription is refused
//!   over GET (`http::graphql` marks GET requests with [`OverGet`]), since the
//!   handler's own check cannot see a document that is not in the URL.
//!
//! Validation is not skipped: it depends on the variables and charges complexity
//! to the caller's budget (`limits::QueryCost`), so it runs for every request.
//! Bounded: at most `graphql.persisted_queries_capacity` documents, least recently
//! used dropped first.

use std::any::TypeId;
use std::sync::Arc;

use async_graphql::extensions::apollo_persisted_queries::{CacheStorage, LruCacheStorage};
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest};
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{ErrorExtensionValues, Request, ServerError, ServerResult, Value};
use sha2::{Digest, Sha256};

use crate::error::ErrorCode;

/// Request data set by `GET /graphql`: only queries may run.
#[derive(Debug, Clone, Copy)]
pub struct OverGet;

/// The extension; [`PersistedQueries::new`] with capacity 0 refuses every hash.
#[derive(Clone)]
pub struct PersistedQueries {
    storage: Option<LruCacheStorage>,
}

impl PersistedQueries {
    pub fn new(capacity: usize) -> Self {
        Self { storage: (capacity > 0).then(|| LruCacheStorage::new(capacity)) }
    }
}

impl ExtensionFactory for PersistedQueries {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

fn error(message: &str, code: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", Value::from(code));
    error.extensions = Some(extensions);
    error
}

fn bad_input(message: &str) -> ServerError {
    error(message, ErrorCode::BadUserInput.as_str())
}

fn outcome(outcome: &'static str) {
    metrics::counter!("reelhouse_persisted_queries_total", "outcome" => outcome).increment(1);
}

/// The hash as Apollo sends it: 64 lowercase hex digits.
fn well_formed(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[async_trait::async_trait]
impl Extension for PersistedQueries {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let Some(value) = request.extensions.remove("persistedQuery") else {
            return next.run(ctx, request).await;
        };
        let Some(storage) = &self.storage else {
            outcome("unsupported");
            return Err(error("PersistedQueryNotSupported", "PERSISTED_QUERY_NOT_SUPPORTED"));
        };
        let json = value.into_json().map_err(|_| bad_input("invalid `persistedQuery` extension"))?;
        let version = json.get("version").and_then(serde_json::Value::as_i64);
        if version != Some(1) {
            return Err(bad_input("only version 1 of the `persistedQuery` extension is supported"));
        }
        let Some(hash) = json.get("sha256Hash").and_then(serde_json::Value::as_str).filter(|h| well_formed(h)) else {
            return Err(bad_input("`persistedQuery.sha256Hash` must be 64 lowercase hexadecimal digits"));
        };
        let document = if request.query.is_empty() {
            match storage.get(hash.to_string()).await {
                Some(document) => {
                    outcome("hit");
                    document
                }
                None => {
                    outcome("miss");
                    return Err(error("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND"));
                }
            }
        } else {
            if format!("{:x}", Sha256::digest(request.query.as_bytes())) != hash {
                return Err(bad_input("`persistedQuery.sha256Hash` is not the SHA-256 of the query"));
            }
            // A document that does not parse is not kept: the executor reports it.
            let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
                return next.run(ctx, request).await;
            };
            storage.set(hash.to_string(), document.clone()).await;
            outcome("registered");
            document
        };
        if request.data.contains_key(&TypeId::of::<OverGet>()) && !only_queries(&document, &request) {
            return Err(bad_input(
                "only queries may be sent with GET; send mutations with POST and subscriptions over /graphql/ws",
            ));
        }
        request.set_parsed_query(document);
        next.run(ctx, request).await
    }
}

/// Does the operation the request names (or the only one) read only? An unknown
/// name is left to the executor, which reports it.
fn only_queries(document: &async_graphql::parser::types::ExecutableDocument, request: &Request) -> bool {
    let ty = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => {
            ops.iter().find(|(n, _)| n.as_str() == name).map(|(_, op)| op.node.ty)
        }
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
        (DocumentOperations::Multiple(_), None) => None,
    };
    ty.is_none_or(|ty| ty == OperationType::Query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_apollo_shaped() {
        let hash = format!("{:x}", Sha256::digest(b"{ serverInfo { version } }"));
        assert!(well_formed(&hash));
        assert!(!well_formed(&hash.to_uppercase()));
        assert!(!well_formed(&hash[1..]));
        assert!(!well_formed("../../etc/passwd"));
    }
}

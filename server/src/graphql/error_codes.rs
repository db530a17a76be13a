//! Every GraphQL error carries a typed `extensions.code`, including the ones
//! async-graphql makes itself before or around our resolvers: syntax errors,
//! validation errors (unknown fields and arguments, missing or mistyped arguments,
//! unused variables, duplicate operation names), the parser's recursion limit,
//! input values that do not coerce (`Failed to parse "Date"`), and a subscription
//! sent over HTTP. Found by the fuzzer (`reelhouse-fuzz`): they reached clients with
//! a message only, so a client could not tell a bad request from a failure.
//!
//! Errors without a path (the request as a whole) and input coercion errors are
//! the caller's: `BAD_USER_INPUT`. Anything else without a code would be a
//! resolver error that escaped the error mapping: `INTERNAL`, logged.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe};
use async_graphql::{Response, ServerError};
use futures_util::stream::{BoxStream, StreamExt};

use crate::error::ErrorCode;

#[derive(Debug, Clone, Copy)]
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

/// The code an error without one gets.
pub fn default_code(error: &ServerError) -> ErrorCode {
    if error.path.is_empty() || error.message.starts_with("Failed to parse") {
        ErrorCode::BadUserInput
    } else {
        ErrorCode::Internal
    }
}

/// Give every error of `response` that has no `code` one.
pub fn type_errors(mut response: Response) -> Response {
    for error in &mut response.errors {
        let has_code = error.extensions.as_ref().is_some_and(|e| e.get("code").is_some());
        if has_code {
            continue;
        }
        let code = default_code(error);
        if code == ErrorCode::Internal {
            tracing::warn!(message = %error.message, path = ?error.path, "a GraphQL error without a code");
        }
        error.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
    }
    response
}

#[async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        type_errors(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream).map(type_errors).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_errors_are_the_callers_and_stray_resolver_errors_internal() {
        let request = ServerError::new("Unknown field \"x\"", None);
        assert_eq!(default_code(&request), ErrorCode::BadUserInput);
        let mut coercion = ServerError::new("Failed to parse \"Date\": expected a date", None);
        coercion.path = vec![async_graphql::PathSegment::Field("videoStats".into())];
        assert_eq!(default_code(&coercion), ErrorCode::BadUserInput);
        let mut stray = ServerError::new("boom", None);
        stray.path = vec![async_graphql::PathSegment::Field("me".into())];
        assert_eq!(default_code(&stray), ErrorCode::Internal);
        let typed = type_errors(Response::from_errors(vec![ServerError::new("x", None)]));
        let code = typed.errors[0].extensions.as_ref().and_then(|e| e.get("code").cloned());
        assert_eq!(code, Some(async_graphql::Value::from("BAD_USER_INPUT")));
    }
}

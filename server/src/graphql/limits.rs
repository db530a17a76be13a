//! Document limits async-graphql does not have built in: aliases and directives
//! per document. Checked right after parsing, before validation and before any
//! resolver runs, for HTTP and WebSocket alike. (Depth and complexity are
//! async-graphql's own `limit_depth`/`limit_complexity`, set in `build_schema`.)

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Pos, Positioned, ServerError, ServerResult, ValidationResult, Variables};

use crate::auth::principal::ClientInfo;
use crate::startup::AppState;

/// Complexity points that cost one extra request of the caller's `api` budget.
pub const COMPLEXITY_PER_REQUEST: usize = 25;

#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    pub max_aliases: usize,
    pub max_directives: usize,
}

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

#[derive(Default, Debug, PartialEq, Eq)]
pub struct DocumentCounts {
    pub aliases: usize,
    pub directives: usize,
}

/// Count aliases and directives over every operation and fragment definition.
pub fn count(document: &ExecutableDocument) -> DocumentCounts {
    fn walk(set: &Positioned<SelectionSet>, counts: &mut DocumentCounts) {
        for selection in &set.node.items {
            match &selection.node {
                Selection::Field(field) => {
                    counts.aliases += usize::from(field.node.alias.is_some());
                    counts.directives += field.node.directives.len();
                    walk(&field.node.selection_set, counts);
                }
                Selection::FragmentSpread(spread) => counts.directives += spread.node.directives.len(),
                Selection::InlineFragment(inline) => {
                    counts.directives += inline.node.directives.len();
                    walk(&inline.node.selection_set, counts);
                }
            }
        }
    }
    let mut counts = DocumentCounts::default();
    for (_, operation) in document.operations.iter() {
        counts.directives += operation.node.directives.len();
        walk(&operation.node.selection_set, &mut counts);
    }
    for fragment in document.fragments.values() {
        counts.directives += fragment.node.directives.len();
        walk(&fragment.node.selection_set, &mut counts);
    }
    counts
}

fn refuse(message: String) -> ServerError {
    let mut error = ServerError::new(message, Some(Pos::default()));
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", crate::error::ErrorCode::BadUserInput.as_str());
    error.extensions = Some(extensions);
    error
}

#[async_trait::async_trait]
impl Extension for DocumentLimits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let counts = count(&document);
        if counts.aliases > self.max_aliases {
            return Err(refuse(format!(
                "the document has {} aliases; at most {} are allowed",
                counts.aliases, self.max_aliases
            )));
        }
        if counts.directives > self.max_directives {
            return Err(refuse(format!(
                "the document has {} directives; at most {} are allowed",
                counts.directives, self.max_directives
            )));
        }
        Ok(document)
    }
}

/// Charges a document's complexity to the caller's `api` rate-limit bucket (the
/// HTTP middleware has charged one request already), so a few expensive queries
/// use up the budget as fast as many cheap ones.
#[derive(Debug, Clone, Copy)]
pub struct QueryCost;

impl ExtensionFactory for QueryCost {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryCost)
    }
}

#[async_trait::async_trait]
impl Extension for QueryCost {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let extra = u32::try_from(result.complexity / COMPLEXITY_PER_REQUEST).unwrap_or(u32::MAX);
        if extra == 0 {
            return Ok(result);
        }
        let Some(state) = ctx.data_opt::<AppState>() else {
            return Ok(result);
        };
        // Every door (HTTP, WebSocket) supplies ClientInfo; a missing one is charged
        // to a shared bucket rather than let through free.
        let ip = ctx.data_opt::<ClientInfo>().and_then(|c| c.ip.clone()).unwrap_or_else(|| "unknown".into());
        match crate::limits::enforce(state, crate::limits::Policy::Api, crate::limits::ip_subject(&ip), extra).await {
            Ok(_) => Ok(result),
            Err(err) => Err(vec![err.to_graphql().into_server_error(Pos::default())]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_aliases_and_directives_in_operations_and_fragments() {
        let document = async_graphql::parser::parse_query(
            "query Q @a { x: serverInfo { y: version @skip(if: false) ...F ... on ServerInfo @include(if: true) { z: mode } } }
             fragment F on ServerInfo { w: instance }",
        )
        .unwrap();
        assert_eq!(count(&document), DocumentCounts { aliases: 4, directives: 3 });
    }
}

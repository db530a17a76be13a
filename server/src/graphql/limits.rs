//! Document limits checked right after parsing, before validation and before any
//! resolver runs, for HTTP and WebSocket alike: aliases and directives per
//! document, and depth. Depth is ours rather than async-graphql's `limit_depth`
//! because the standard introspection query of graphql-js (what GraphiQL,
//! graphql-codegen, Apollo and Altair send) nests 15 levels inside `__schema`: the
//! inside of `__schema`/`__type` has its own, fixed bound, everything else
//! `graphql.max_depth`. (Complexity is async-graphql's `limit_complexity`.)

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Pos, Positioned, ServerError, ServerResult, ValidationResult, Variables};

use crate::auth::principal::ClientInfo;
use crate::state::AppState;

/// Complexity points that cost one extra request of the caller's `api` budget.
pub const COMPLEXITY_PER_REQUEST: usize = 25;

#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    pub max_aliases: usize,
    pub max_directives: usize,
    /// Fields nested in fields, outside introspection.
    pub max_depth: usize,
}

/// How deep a selection may nest inside `__schema` or `__type` (counted from the
/// operation's root): graphql-js's introspection query needs 15; the schema's own
/// types bound what is useful, so more is refused like any deep query.
pub const INTROSPECTION_MAX_DEPTH: usize = 20;

/// How deep a document nests.
#[derive(Default, Debug, PartialEq, Eq, Clone, Copy)]
pub struct Depths {
    /// Counting only fields outside `__schema`/`__type` subtrees.
    pub ordinary: usize,
    /// Counting every field.
    pub total: usize,
}

/// The depths of `document`, fragments inlined (each fragment walked once per
/// context, so fragments spread many times cost nothing extra; a fragment cycle,
/// which validation refuses later, is cut).
pub fn depths(document: &ExecutableDocument) -> Depths {
    use std::collections::HashMap;
    struct Walk<'a> {
        document: &'a ExecutableDocument,
        /// (fragment, inside introspection) -> depths of its selection set.
        memo: HashMap<(&'a str, bool), Depths>,
        active: Vec<&'a str>,
    }
    impl<'a> Walk<'a> {
        fn set(&mut self, set: &'a Positioned<SelectionSet>, inside: bool) -> Depths {
            let mut out = Depths::default();
            for selection in &set.node.items {
                let depths = match &selection.node {
                    Selection::Field(field) => {
                        let name = field.node.name.node.as_str();
                        let enters = inside || name == "__schema" || name == "__type";
                        let below = self.set(&field.node.selection_set, enters);
                        Depths { ordinary: if enters { 0 } else { below.ordinary + 1 }, total: below.total + 1 }
                    }
                    Selection::FragmentSpread(spread) => {
                        let name = spread.node.fragment_name.node.as_str();
                        self.fragment(name, inside)
                    }
                    Selection::InlineFragment(inline) => self.set(&inline.node.selection_set, inside),
                };
                out.ordinary = out.ordinary.max(depths.ordinary);
                out.total = out.total.max(depths.total);
            }
            out
        }

        fn fragment(&mut self, name: &'a str, inside: bool) -> Depths {
            if let Some(depths) = self.memo.get(&(name, inside)) {
                return *depths;
            }
            let Some((key, fragment)) = self.document.fragments.get_key_value(name) else {
                return Depths::default();
            };
            if self.active.contains(&name) {
                return Depths::default();
            }
            self.active.push(key.as_str());
            let depths = self.set(&fragment.node.selection_set, inside);
            self.active.pop();
            self.memo.insert((key.as_str(), inside), depths);
            depths
        }
    }
    let mut walk = Walk { document, memo: HashMap::new(), active: Vec::new() };
    let mut out = Depths::default();
    for (_, operation) in document.operations.iter() {
        let depths = walk.set(&operation.node.selection_set, false);
        out.ordinary = out.ordinary.max(depths.ordinary);
        out.total = out.total.max(depths.total);
    }
    out
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
        let depths = depths(&document);
        if depths.ordinary > self.max_depth || depths.total > INTROSPECTION_MAX_DEPTH.max(self.max_depth) {
            return Err(refuse(format!(
                "the query is nested too deep: {} levels; at most {} are allowed ({} inside __schema and __type)",
                depths.total,
                self.max_depth,
                INTROSPECTION_MAX_DEPTH.max(self.max_depth)
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
        // A shared subscription's event rendered for its subscribers: the operation
        // was admitted (and charged) when it started.
        if ctx.data_opt::<crate::graphql::shared_frames::RenderOne>().is_some() {
            return Ok(result);
        }
        // Every door (HTTP, WebSocket) supplies ClientInfo; a missing one is charged
        // to a shared bucket rather than let through free.
        let ip = ctx.data_opt::<ClientInfo>().and_then(|c| c.ip.clone()).unwrap_or_else(|| "unknown".into());
        match state.limiter.enforce(crate::limits::Policy::Api, crate::limits::ip_subject(&ip), extra).await {
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

    fn depths_of(query: &str) -> Depths {
        depths(&async_graphql::parser::parse_query(query).unwrap())
    }

    #[test]
    fn depth_counts_fragments_once_and_introspection_apart() {
        assert_eq!(depths_of("{ a { b { c } } }"), Depths { ordinary: 3, total: 3 });
        // Through named and inline fragments, the deepest path counts.
        assert_eq!(
            depths_of("{ a { ...F ... on T { x { y { z } } } } } fragment F on T { b { c } }"),
            Depths { ordinary: 4, total: 4 }
        );
        // Inside __schema / __type only the total grows.
        assert_eq!(
            depths_of("{ me { id } __schema { types { fields { type { name } } } } }"),
            Depths { ordinary: 2, total: 5 }
        );
        assert_eq!(depths_of("{ a { __type(name: \"T\") { fields { name } } } }"), Depths { ordinary: 1, total: 4 });
        // A cycle (refused by validation later) ends; a fragment spread many times is
        // walked once.
        assert_eq!(depths_of("{ ...A } fragment A on Q { a { ...B } } fragment B on Q { b { ...A } }").total, 2);
        let wide = format!("{{ {} }} fragment F on Q {{ a {{ b }} }}", "...F ".repeat(10_000));
        assert_eq!(depths_of(&wide), Depths { ordinary: 2, total: 2 });
    }

    /// graphql-js's `getIntrospectionQuery()` (v16, with descriptions, specifiedByURL,
    /// directive repeatability and schema description): what GraphiQL and codegen send.
    pub const GRAPHQL_JS_INTROSPECTION: &str = include_str!("introspection_query.graphql");

    #[test]
    fn the_standard_introspection_query_fits() {
        let depths = depths_of(GRAPHQL_JS_INTROSPECTION);
        assert!(depths.ordinary == 0 && depths.total > 12 && depths.total <= INTROSPECTION_MAX_DEPTH, "{depths:?}");
    }
}

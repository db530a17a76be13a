// Typed GraphQL documents. `graphql()` parses each operation against the
// server's schema (../schema.graphql, turned into src/graphql-env.d.ts by
// `gql.tada generate-output` before every type check), so a field, argument or
// variable that the schema does not have is a type error, and the result and
// variable types of every request come from the schema, not from hand-written
// interfaces.

import { initGraphQLTada } from 'gql.tada';
import type { introspection } from './graphql-env.d.ts';

export const graphql = initGraphQLTada<{
  introspection: introspection;
  // RFC 3339 strings (DateTime) and ISO dates (Date) on the wire.
  scalars: { DateTime: string; Date: string };
  // Fragments only share field lists here; their fields are read directly.
  disableMasking: true;
}>();

export type { ResultOf, TadaDocumentNode, VariablesOf } from 'gql.tada';

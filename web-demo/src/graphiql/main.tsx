// GraphiQL served by reelhouse itself at GET /graphql: everything it loads
// (React, GraphiQL, Monaco and its workers, fonts) is in this build, so the
// explorer works on a machine without internet access and under a
// Content-Security-Policy that allows nothing but the server.
//
// Queries and mutations go over POST /graphql with the headers typed in the
// header editor. Subscriptions go over /graphql/ws (graphql-transport-ws), and
// the same headers become the `connection_init` payload, which is where the
// server reads credentials (`{"Authorization": "Bearer …"}` or
// `{"X-API-Key": "…"}`): a subscription run from here is authenticated like a
// query.

// Monaco's editor, JSON and GraphQL workers, built by Vite as files of their own.
import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import '@graphiql/plugin-explorer/style.css';

import { explorerPlugin } from '@graphiql/plugin-explorer';
import { createGraphiQLFetcher, type Fetcher } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import { createClient, type Client } from 'graphql-ws';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

import './graphiql.css';

const HTTP_URL = '/graphql';
const WS_URL = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql/ws`;

const DEFAULT_QUERY = `# Welcome to the reelhouse API.
#
# Signed out, you see what anyone may see. To act as yourself, get an access
# token (the login mutation below answers one) and put it in the Headers tab:
#
#   {"Authorization": "Bearer <accessToken>"}
#
# (or {"X-API-Key": "<key>"}). The same headers authenticate subscriptions:
# they are sent as the WebSocket's connection_init payload.

query Me {
  me {
    id
    email
    displayName
  }
}

# mutation Login {
#   login(input: { email: "you@example.com", password: "…" }) {
#     accessToken
#     expiresIn
#   }
# }
`;

/**
 * One WebSocket client per set of headers: typing other credentials in the
 * header editor closes the old socket (the server authenticates a socket once,
 * at `connection_init`) and the next subscription opens one with the new ones.
 */
let current: { key: string; client: Client; fetcher: Fetcher } | null = null;

function fetcherFor(headers: Record<string, unknown>): Fetcher {
  const key = JSON.stringify(headers);
  if (current?.key !== key) {
    void current?.client.dispose();
    const client = createClient({
      url: WS_URL,
      lazy: true,
      // connection_init carries the header editor's headers as they are; the
      // server matches their names case-insensitively.
      connectionParams: headers,
      retryAttempts: 0,
    });
    current = {
      key,
      client,
      // No incremental delivery: the server answers plain JSON, so ask for
      // application/graphql-response+json like any GraphQL-over-HTTP client.
      fetcher: createGraphiQLFetcher({ url: HTTP_URL, wsClient: client, enableIncrementalDelivery: false }),
    };
  }
  return current.fetcher;
}

/**
 * GraphiQL's introspection query (graphql-js's) with `levels` nested `ofType`
 * in its `TypeRef` fragment instead of 9.
 */
function withTypeDepth(query: string, levels: number): string | null {
  const at = query.indexOf('fragment TypeRef on __Type');
  if (at < 0) return null;
  let ref = 'kind name';
  for (let i = 0; i < levels; i += 1) ref = `kind name ofType { ${ref} }`;
  return `${query.slice(0, at)}fragment TypeRef on __Type { ${ref} }\n`;
}

/**
 * The server refuses documents nested deeper than `graphql.max_depth` (12 by
 * default), and the stock introspection query nests 9 `ofType` under
 * `__schema { types { fields { args { type` (15 deep). Six levels describe any
 * type up to `[[T!]!]!` and fit depth 12; when the server's limit is lower,
 * fewer are tried.
 */
async function introspect(fetch: Fetcher, params: Parameters<Fetcher>[0], opts: Parameters<Fetcher>[1]) {
  let result: unknown;
  for (const levels of [6, 5, 4, 3]) {
    const query = withTypeDepth(params.query, levels) ?? params.query;
    result = await fetch({ ...params, query }, opts);
    if (result && typeof result === 'object' && 'data' in result && result.data) break;
  }
  return result as Awaited<ReturnType<Fetcher>>;
}

const fetcher: Fetcher = (params, opts) => {
  const headers = opts?.headers && typeof opts.headers === 'object' ? (opts.headers as Record<string, unknown>) : {};
  const fetch = fetcherFor(headers);
  if (params.operationName === 'IntrospectionQuery') return introspect(fetch, params, opts);
  return fetch(params, opts);
};

const plugins = [explorerPlugin()];

const root = document.getElementById('graphiql');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <GraphiQL fetcher={fetcher} plugins={plugins} defaultQuery={DEFAULT_QUERY} />
    </StrictMode>,
  );
}

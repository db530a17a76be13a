import { defineConfig } from 'vite';

// `npm run dev` proxies the API to a reelhouse on :8080; `npm run build` writes
// dist/, which the server serves: index.html at `/` (the app) and graphiql.html
// at `GET /graphql` (the API explorer), both with their files under /assets/.
export default defineConfig({
  // TSX (the GraphiQL page) is compiled by Oxc with React's automatic runtime.
  oxc: { jsx: { runtime: 'automatic' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
    // hls.js alone is ~600 kB and is loaded only by the player; Monaco (GraphiQL's
    // editor) is ~3 MB and is loaded only by the GraphiQL page.
    chunkSizeWarningLimit: 4000,
    rolldownOptions: {
      input: { app: 'index.html', graphiql: 'graphiql.html' },
      onwarn(warning, warn) {
        // React libraries mark modules "use client" (for server components); in a
        // browser bundle the directive means nothing, and Rolldown says so per file.
        if (warning.code === 'MODULE_LEVEL_DIRECTIVE') return;
        warn(warning);
      },
    },
  },
  // Monaco's workers (GraphiQL's editor) are split into chunks: ES module workers.
  worker: { format: 'es' },
  server: {
    proxy: {
      '/graphql': { target: 'http://127.0.0.1:8080', ws: true },
      '/uploads': 'http://127.0.0.1:8080',
      '/media': 'http://127.0.0.1:8080',
      '/storage': 'http://127.0.0.1:8080',
    },
  },
});

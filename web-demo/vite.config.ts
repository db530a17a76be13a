import { defineConfig } from 'vite';

// `npm run dev` proxies the API to a reelhouse on :8080; `npm run build` writes
// dist/, which the server serves at `/` (server.web_demo_dir).
export default defineConfig({
  // hls.js alone is ~600 kB and is loaded only by the player.
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false, target: 'es2022', chunkSizeWarningLimit: 700 },
  server: {
    proxy: {
      '/graphql': { target: 'http://127.0.0.1:8080', ws: true },
      '/uploads': 'http://127.0.0.1:8080',
      '/media': 'http://127.0.0.1:8080',
      '/storage': 'http://127.0.0.1:8080',
    },
  },
});

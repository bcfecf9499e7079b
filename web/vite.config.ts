import { defineConfig } from 'vite';

// The output is embedded in the scalify binary (crates/scalify-server/build.rs runs this build
// with SCALIFY_WEB_OUT pointing into Cargo's OUT_DIR). No CDN, no runtime fetches.
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: process.env.SCALIFY_WEB_OUT || 'dist',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  server: { proxy: { '/api': 'http://127.0.0.1:3000', '/socket.io': { target: 'ws://127.0.0.1:3000', ws: true } } },
});

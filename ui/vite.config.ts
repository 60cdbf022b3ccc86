// Builds the web UI into dist/ui/, which `airless ui` and `npm start` serve (cli/ui.ts).
import preact from '@preact/preset-vite';
import { defineConfig } from 'vite';

export default defineConfig({
  plugins: [preact()],
  build: {
    outDir: '../dist/ui',
    // The output folder is outside ui/: Vite empties it only when told to.
    emptyOutDir: true,
    // No source maps shipped; the sources are in the repository.
    sourcemap: false,
  },
});

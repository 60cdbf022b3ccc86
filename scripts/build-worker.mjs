// Bundles the Fargate worker (workers/fargate.ts) into one file, dist/fargate-worker.mjs: the
// container image runs it (workers/Dockerfile), and `npm start` runs copies of it locally.
import { build } from 'esbuild';

await build({
  entryPoints: ['workers/fargate.ts'],
  outfile: 'dist/fargate-worker.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Some dependencies are CommonJS and call require(): give the ESM bundle one.
  banner: {
    js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
  },
  logLevel: 'warning',
});

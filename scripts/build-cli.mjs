// Bundles the `airless` CLI into dist/ so that `npx airless` starts fast and needs no TypeScript
// loader. Runs on `npm ci` (prepare) and before the CLI tests.
import { build } from 'esbuild';

await build({
  entryPoints: ['cli/main.ts'],
  outfile: 'dist/cli.mjs',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: true,
  logLevel: 'warning',
  // Some dependencies are CommonJS; give the ESM bundle a `require` for them.
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
});

#!/usr/bin/env node
// The `airless` command. The CLI is bundled to dist/ by `npm ci` (the prepare script).
import { existsSync } from 'node:fs';

const bundle = new URL('../dist/cli.mjs', import.meta.url);
if (!existsSync(bundle)) {
  console.error('airless: dist/cli.mjs is missing; run `npm run build:cli` (npm ci does it)');
  process.exit(2);
}
const { main } = await import(bundle.href);
process.exitCode = await main(process.argv.slice(2));

import { execFileSync } from 'node:child_process';

/** The CLI tests run the bundled command, so bundle it once per test run. */
export default function setup(): void {
  execFileSync(process.execPath, ['scripts/build-cli.mjs'], { stdio: 'inherit' });
}

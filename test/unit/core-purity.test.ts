import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const biome = resolve('node_modules/.bin/biome');

/**
 * Lints a made-up file as if it lived at `path` in this project, with the project's biome.json,
 * in a scratch folder (biome prints no diagnostics for stdin).
 */
function lint(path: string, source: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'airless-lint-'));
  try {
    copyFileSync('biome.json', join(dir, 'biome.json'));
    writeFileSync(join(dir, '.gitignore'), '');
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), source);
    execFileSync(biome, ['lint', '--vcs-enabled=false', path], { cwd: dir, stdio: 'pipe' });
    return '';
  } catch (e) {
    const err = e as { stdout: Buffer; stderr: Buffer };
    return `${err.stdout}${err.stderr}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('the lint rule that keeps core/ pure', () => {
  it.each([
    ["import { DynamoDBClient } from '@aws-sdk/client-dynamodb';", /no AWS SDK or CDK/],
    ["import { Stack } from 'aws-cdk-lib';", /no AWS SDK or CDK/],
    ["import { store } from '../../adapters/aws/dynamodb.ts';", /must not depend on adapters/],
    ["import { readFileSync } from 'node:fs';", /does no I\/O/],
  ])('refuses %s in core/', (line, message) => {
    expect(lint('core/dag/example.ts', `${line}\nexport const x = 1;\n`)).toMatch(message);
  });

  it('allows the same import outside core/', () => {
    const src =
      "import { DynamoDBClient } from '@aws-sdk/client-dynamodb';\nexport const c = DynamoDBClient;\n";
    expect(lint('adapters/aws/example.ts', src)).not.toMatch(/noRestrictedImports/);
  });
});

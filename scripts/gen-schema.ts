// Writes schema/dag.schema.json from the zod schema, so editors can validate DAG files.
// test/unit/dag.test.ts fails when the committed file drifts from the code.
import { writeFileSync } from 'node:fs';
import { dagJsonSchemaText } from '../core/dag/json-schema.ts';

writeFileSync(new URL('../schema/dag.schema.json', import.meta.url), dagJsonSchemaText());
console.log('wrote schema/dag.schema.json');

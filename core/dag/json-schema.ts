import { z } from 'zod';
import { dagSchema } from './schema.ts';

/**
 * The JSON Schema of a DAG document with the built-in operators, as committed in
 * `schema/dag.schema.json`. It describes the input (defaults are optional), and checks shape
 * only: references, cycles and cron are checked by `validateDag`.
 */
export function dagJsonSchemaText(): string {
  const schema = z.toJSONSchema(dagSchema(undefined, { templates: false }), {
    io: 'input',
    target: 'draft-2020-12',
  });
  return `${JSON.stringify({ ...schema, $id: 'https://airless.dev/schema/dag.schema.json', title: 'Airless DAG' }, null, 2)}\n`;
}

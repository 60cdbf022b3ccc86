export * from './graph.ts';
export * from './json-schema.ts';
export * from './operators.ts';
export * from './schema.ts';
export * from './validate.ts';

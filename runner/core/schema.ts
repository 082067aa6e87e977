/**
 * JSON Schema validation (ajv, draft-07). Schemas live as JSON files beside the module that owns them;
 * validators are compiled once, on first use, and report the first error as one sentence.
 */
import { Ajv, type ValidateFunction } from 'ajv';

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });
// RFC 3339 date-time in UTC with a Z suffix; the pattern keeps the format closed, Date.parse the calendar.
ajv.addFormat('date-time-utc', {
  type: 'string',
  validate: (value: string) => {
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/.test(value)) return false;
    const parsed = Date.parse(value);
    // Date.parse rolls 2026-02-30 over to March 2; a real calendar date survives the round trip.
    return !Number.isNaN(parsed) && new Date(parsed).toISOString().slice(0, 19) === value.slice(0, 19);
  },
});

const compiled = new Map<object, ValidateFunction>();

export interface SchemaProblem {
  path: string;
  message: string;
}

/** Returns undefined when `value` satisfies `schema`, else the first problem found. */
export function checkSchema(schema: object, value: unknown): SchemaProblem | undefined {
  let validate = compiled.get(schema);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(schema, validate);
  }
  if (validate(value)) return undefined;
  const first = validate.errors?.[0];
  return { path: first?.instancePath || '/', message: first?.message ?? 'does not match the schema' };
}

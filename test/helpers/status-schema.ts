// docs/status.schema.json, compiled by ajv in strict mode (draft 2020-12, as
// the schema's $schema says): a keyword ajv does not know, or a schema that
// is not valid, fails the compile instead of being ignored.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { REPO_ROOT } from './cli.js';

export const STATUS_SCHEMA = JSON.parse(readFileSync(join(REPO_ROOT, 'docs', 'status.schema.json'), 'utf8')) as {
  $schema: string;
};

const validate = new Ajv2020({ strict: true, allErrors: true }).compile(STATUS_SCHEMA);

/** What is wrong with `report` as a `kvmnftd status --json` document: one line per violation, [] when valid. */
export function statusSchemaErrors(report: unknown): string[] {
  if (validate(report)) return [];
  return (validate.errors ?? []).map(
    (e) => `${e.instancePath || '/'}: ${e.message ?? e.keyword} ${JSON.stringify(e.params)}`,
  );
}

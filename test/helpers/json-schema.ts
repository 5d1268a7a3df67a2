// A small JSON Schema validator for the subset docs/status.schema.json uses
// (type, enum, const, required, properties, additionalProperties: false,
// items, local $ref). Returns the list of violations, with their paths.
type Schema = { [key: string]: unknown };

const typeOf = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v;

export function validate(value: unknown, schema: Schema, root: Schema = schema, path = '$'): string[] {
  if (typeof schema['$ref'] === 'string') {
    const ref = schema['$ref'];
    if (!ref.startsWith('#/$defs/')) return [`${path}: unsupported $ref ${ref}`];
    const target = (root['$defs'] as Record<string, Schema>)[ref.slice(8)];
    if (!target) return [`${path}: unknown $ref ${ref}`];
    return validate(value, target, root, path);
  }
  const errors: string[] = [];
  if ('const' in schema && value !== schema['const'])
    errors.push(`${path}: expected ${JSON.stringify(schema['const'])}`);
  if (Array.isArray(schema['enum']) && !schema['enum'].includes(value))
    errors.push(`${path}: ${JSON.stringify(value)} not in ${JSON.stringify(schema['enum'])}`);
  if (schema['type'] !== undefined) {
    const types = Array.isArray(schema['type']) ? (schema['type'] as string[]) : [schema['type'] as string];
    const t = typeOf(value);
    if (!types.includes(t) && !(t === 'integer' && types.includes('number')))
      errors.push(`${path}: type ${t}, expected ${types.join('|')}`);
  }
  if (typeOf(value) === 'object') {
    const obj = value as Record<string, unknown>;
    const props = (schema['properties'] ?? {}) as Record<string, Schema>;
    for (const key of (schema['required'] ?? []) as string[]) if (!(key in obj)) errors.push(`${path}: missing ${key}`);
    for (const [key, v] of Object.entries(obj)) {
      if (props[key]) errors.push(...validate(v, props[key], root, `${path}.${key}`));
      else if (schema['additionalProperties'] === false) errors.push(`${path}: unexpected property ${key}`);
    }
  }
  if (Array.isArray(value) && schema['items'])
    value.forEach((v, i) => errors.push(...validate(v, schema['items'] as Schema, root, `${path}[${i}]`)));
  return errors;
}

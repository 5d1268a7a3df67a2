// Errors of the configuration: each names the file, the key as the user writes
// it ("nat.priority", "(syntax)", "(file)") and what was expected.

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly key: string,
    readonly expected: string,
  ) {
    super(`${file}: ${key}: ${expected}`);
    this.name = 'ConfigError';
  }
}

/** A value as an error message shows it: JSON-ish, bigints as digits, at most 60 characters. */
export function show(value: unknown): string {
  if (typeof value === 'bigint') return value.toString();
  const json = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  return json === undefined ? String(value) : json.length > 60 ? `${json.slice(0, 60)}...` : json;
}

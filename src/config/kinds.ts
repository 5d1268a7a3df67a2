// The vocabulary of the config schema (schema.ts): what kind of value a key
// holds. A kind both checks a parsed TOML value and describes itself for the
// generated docs (docs.ts), so the range or the list of values a page shows is
// the one the loader checks.
//
// Text meant for the docs (docType, summaries) uses a small markup that docs.ts
// renders as Markdown and as troff: `code` spans and [text](link) links.
import { ConfigError, show } from './errors.js';

export interface ReadContext {
  readonly file: string;
  /** The key as the user writes it: "nat.priority", "port_forward[0].proto", "networks.default.mode"; "" at the root. */
  readonly key: string;
  /**
   * Where `kvmnftd check` collects every problem: a table key that does not read goes here and takes its
   * default, so that one run names them all. Absent: the first problem throws.
   */
  readonly problems?: ConfigError[];
}

/** The context of a key inside `at`. */
export function under(at: ReadContext, key: string): ReadContext {
  return at.problems === undefined ? { file: at.file, key } : { file: at.file, key, problems: at.problems };
}

/** Runs `read`; with a problem sink, a ConfigError is collected and `fallback` is used instead. */
export function collecting<T>(at: ReadContext, read: () => T, fallback: () => T): T {
  if (at.problems === undefined) return read();
  try {
    return read();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    at.problems.push(err);
    return fallback();
  }
}

/** A term the docs explain once, before the keys: "nft name" and the sentence that says what it means. */
export interface Glossary {
  readonly term: string;
  readonly meaning: string;
}

/** A single value: a string, a number, a boolean or a list of those. */
export interface ValueKind<T> {
  readonly shape: 'value';
  /** The value, or undefined when it is of the wrong type or not allowed. */
  readonly parse: (value: unknown) => T | undefined;
  /** What an error says was expected: `one of "first", "last", "none"`. */
  readonly expected: string;
  /** The type column of the docs: `integer -199..400`. */
  readonly docType: string;
  readonly glossary?: Glossary;
  /** A value as TOML writes it in the docs and the example file, when not the plain form (e.g. hexadecimal). */
  toml?(value: T): string;
}

/**
 * Tables of keys: a [section] ('table'), an array of tables [[name]] ('tables'), or tables under a name the
 * user chooses, [name.<entry>] ('named'; `entry` checks that name, and may accept "*" for defaults).
 */
export interface TableKind<T> {
  readonly shape: 'table' | 'tables' | 'named';
  readonly fields: Fields;
  readonly entry?: ValueKind<string>;
  /** Reads the value of a key that holds this kind; throws a ConfigError naming the key. */
  readonly read: (value: unknown, at: ReadContext) => T;
  /** The value when the key is absent (a section of defaults, no tables). */
  readonly absent: (at: ReadContext) => T;
}

export type Kind<T> = ValueKind<T> | TableKind<T>;

/** One key of a table: its kind, its default and its documentation (markup). */
export interface Field<T> {
  readonly kind: Kind<T>;
  /** Absent: the key must be given (possible only inside arrays of tables and named tables). */
  readonly default?: T;
  /** One sentence or two: the docs' table and the man page's first lines. */
  readonly summary: string;
  /** More text for the man page. */
  readonly doc?: string;
}

export type Fields = { readonly [name: string]: Field<unknown> };

/** `input_chain` -> `inputChain`: a TOML key's property name in the Config object. */
export type Camel<S extends string> = S extends `${infer H}_${infer R}` ? `${H}${Capitalize<Camel<R>>}` : S;

export function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** The object a table of fields reads into. */
export type TableOf<F extends Fields> = {
  [K in keyof F & string as Camel<K>]: F[K] extends Field<infer T> ? T : never;
};

// ---- fields ------------------------------------------------------------------

/** A key; `default` is checked against the kind's type. */
export function key<T>(spec: { kind: Kind<T>; default?: NoInfer<T>; summary: string; doc?: string }): Field<T> {
  return spec;
}

/** A [section]: a table of keys whose defaults apply when the section is absent. */
export function section<const F extends Fields>(spec: { summary?: string; doc?: string; keys: F }): Field<TableOf<F>> {
  return { kind: table(spec.keys), summary: spec.summary ?? '', ...(spec.doc === undefined ? {} : { doc: spec.doc }) };
}

// ---- values ------------------------------------------------------------------

function value<T>(
  expected: string,
  docType: string,
  parse: (v: unknown) => T | undefined,
  glossary?: Glossary,
  toml?: (value: T) => string,
): ValueKind<T> {
  return { shape: 'value', parse, expected, docType, ...(glossary ? { glossary } : {}), ...(toml ? { toml } : {}) };
}

export const bool: ValueKind<boolean> = value('true or false', 'boolean', (v) =>
  typeof v === 'boolean' ? v : undefined,
);

/** A string that `valid` accepts. */
export function text(spec: {
  expected: string;
  valid: (s: string) => boolean;
  docType?: string;
  glossary?: Glossary;
}): ValueKind<string> {
  return value(
    spec.expected,
    spec.docType ?? 'string',
    (v) => (typeof v === 'string' && spec.valid(v) ? v : undefined),
    spec.glossary,
  );
}

/** One of a fixed set of strings. */
export function oneOf<const V extends readonly string[]>(values: V): ValueKind<V[number]> {
  return value(
    `one of ${values.map((v) => JSON.stringify(v)).join(', ')}`,
    values.map((v) => `\`${JSON.stringify(v)}\``).join(', '),
    (v) => (typeof v === 'string' && values.includes(v) ? v : undefined),
  );
}

/**
 * A whole number from min to max. `what` names it in errors ("a whole number of seconds"), `unit` in the docs,
 * `zero` says what 0 means when min is 0, `note` adds a hint to the error. `hex`: the docs, the example file and
 * errors write it in hexadecimal (TOML's `0x2000`), as marks and masks are written.
 */
export function integer(spec: {
  min: number;
  max: number;
  what?: string;
  unit?: string;
  zero?: string;
  note?: string;
  hex?: boolean;
}): ValueKind<number> {
  const { min, max } = spec;
  const show = (n: number): string => (spec.hex ? `0x${n.toString(16)}` : String(n));
  const zero = min === 0 && spec.zero !== undefined ? ` (${spec.zero})` : '';
  const note = spec.note === undefined ? '' : ` (${spec.note})`;
  return value(
    `${spec.what ?? 'an integer'} from ${show(min)}${zero} to ${show(max)}${note}`,
    `integer${spec.unit === undefined ? '' : ` ${spec.unit}`} ${show(min)}..${show(max)}`,
    (v) => {
      // A TOML parser may hand out integers as bigints.
      const n = typeof v === 'number' || typeof v === 'bigint' ? Number(v) : undefined;
      return n !== undefined && Number.isInteger(n) && n >= min && n <= max ? n : undefined;
    },
    undefined,
    spec.hex ? show : undefined,
  );
}

/** An array of values of one kind; `noun` names the elements ("libvirt network names"). */
export function list<T>(of: ValueKind<T>, noun: string): ValueKind<T[]> {
  return value(`an array of ${noun}`, `array of ${noun}`, (v) => {
    if (!Array.isArray(v)) return undefined;
    const out: T[] = [];
    for (const x of v) {
      const parsed = of.parse(x);
      if (parsed === undefined) return undefined;
      out.push(parsed);
    }
    return out;
  });
}

// ---- tables ------------------------------------------------------------------

/** A TOML table (smol-toml gives plain or null-prototype objects; dates are objects too). */
function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

/** A key path as TOML writes it: `networks."*"`. */
export function joinKey(parent: string, name: string): string {
  const part = BARE_KEY.test(name) ? name : JSON.stringify(name);
  return parent === '' ? part : `${parent}.${part}`;
}

/** How a key holding a table is written as a header: [filter], [[port_forward]], [networks.<name>]. */
export function header(path: string, kind: TableKind<unknown>): string {
  return kind.shape === 'tables' ? `[[${path}]]` : kind.shape === 'named' ? `[${path}.<name>]` : `[${path}]`;
}

export function readField(field: Field<unknown>, value: unknown, at: ReadContext): unknown {
  const kind = field.kind;
  if (kind.shape !== 'value') return kind.read(value, at);
  const parsed = kind.parse(value);
  if (parsed === undefined) throw new ConfigError(at.file, at.key, `expected ${kind.expected}, got ${show(value)}`);
  return parsed;
}

function absentField(field: Field<unknown>, at: ReadContext): unknown {
  if (field.default !== undefined) return structuredClone(field.default);
  if (field.kind.shape !== 'value') return field.kind.absent(at);
  throw new ConfigError(at.file, at.key, `missing; expected ${field.kind.expected}`);
}

function readTable(fields: Fields, doc: unknown, at: ReadContext, head: string): Record<string, unknown> {
  if (!isTable(doc)) throw new ConfigError(at.file, at.key, `a table (${head})`);
  const given = new Map<string, unknown>();
  for (const [name, v] of Object.entries(doc)) {
    // Own properties only: "constructor", "toString"... are unknown keys, not Object's.
    const field = Object.hasOwn(fields, name) ? fields[name] : undefined;
    const key = joinKey(at.key, name);
    if (!field) {
      collecting(
        at,
        () => {
          throw new ConfigError(at.file, key, unknownKey(fields, at.key, head));
        },
        () => undefined,
      );
      continue;
    }
    const read = collecting(
      at,
      () => ({ value: readField(field, v, under(at, key)) }),
      () => undefined,
    );
    if (read !== undefined) given.set(name, read.value);
  }
  const out: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(fields)) {
    const key = joinKey(at.key, name);
    out[camel(name)] = given.has(name)
      ? given.get(name)
      : collecting(
          at,
          () => absentField(field, under(at, key)),
          () => undefined,
        );
  }
  return out;
}

function unknownKey(fields: Fields, path: string, head: string): string {
  const names = Object.entries(fields).map(([name, f]) =>
    f.kind.shape === 'value' ? name : header(joinKey(path, name), f.kind),
  );
  return path === ''
    ? `unknown key; known: ${names.join(', ')}`
    : `unknown key; known keys in ${head}: ${names.join(', ')}`;
}

/** Keys are snake_case, so that camel() and Camel<> agree on the property name. */
function snakeCase(fields: Fields): void {
  for (const name of Object.keys(fields))
    if (!/^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/.test(name)) throw new Error(`config schema: key ${name} is not snake_case`);
}

/** A table of keys: the root of the file, or a [section]. */
export function table<const F extends Fields>(fields: F): TableKind<TableOf<F>> {
  snakeCase(fields);
  const kind: TableKind<TableOf<F>> = {
    shape: 'table',
    fields,
    read: (doc, at) => readTable(fields, doc, at, header(at.key, kind)) as TableOf<F>,
    absent: (at) => readTable(fields, {}, at, header(at.key, kind)) as TableOf<F>,
  };
  return kind;
}

/** An array of tables, [[name]]; errors name the element: `port_forward[2].proto`. */
export function tables<const F extends Fields>(fields: F): TableKind<Array<TableOf<F>>> {
  snakeCase(fields);
  const kind: TableKind<Array<TableOf<F>>> = {
    shape: 'tables',
    fields,
    read: (doc, at) => {
      const head = header(at.key, kind);
      if (!Array.isArray(doc)) throw new ConfigError(at.file, at.key, `an array of tables (${head})`);
      return doc.flatMap((el, i) =>
        collecting(
          at,
          () => [readTable(fields, el, under(at, `${at.key}[${i}]`), head) as TableOf<F>],
          () => [],
        ),
      );
    },
    absent: () => [],
  };
  return kind;
}

/** Tables under names the user chooses, [name.<entry>]; `entry` checks each name. */
export function named<const F extends Fields>(
  entry: ValueKind<string>,
  fields: F,
): TableKind<Record<string, TableOf<F>>> {
  snakeCase(fields);
  const kind: TableKind<Record<string, TableOf<F>>> = {
    shape: 'named',
    fields,
    entry,
    read: (doc, at) => {
      if (!isTable(doc)) throw new ConfigError(at.file, at.key, `a table (${header(at.key, kind)})`);
      const out: Record<string, TableOf<F>> = Object.create(null) as Record<string, TableOf<F>>;
      for (const [name, v] of Object.entries(doc)) {
        const key = joinKey(at.key, name);
        collecting(
          at,
          () => {
            if (entry.parse(name) === undefined)
              throw new ConfigError(at.file, key, `expected a name that is ${entry.expected}, got ${show(name)}`);
            out[name] = readTable(fields, v, under(at, key), `[${key}]`) as TableOf<F>;
          },
          () => undefined,
        );
      }
      return out;
    },
    absent: () => Object.create(null) as Record<string, TableOf<F>>,
  };
  return kind;
}

// The key tables of docs/configuration.md and kvmnftd.toml(5), and the defaults
// written out as TOML, rendered from the schema. `npm run docs:config` writes
// them into the marked regions of those files; test/unit/docs-config.test.ts
// fails when a file differs from what this renders.
import { header, type Field, type Fields, type Glossary, type TableKind } from './kinds.js';
import type { Rule } from './schema.js';

// ---- walking the schema ----------------------------------------------------------

export interface DocKey {
  /** As the docs name it: `filter.jump`, `port_forward[].proto`, `networks.<name>.mode`. */
  readonly path: string;
  readonly name: string;
  readonly field: Field<unknown>;
}

/** The keys of one table: the top level, a [section], an array of tables or named tables. */
export interface DocGroup {
  /** undefined for the top level. */
  readonly head: string | undefined;
  readonly field: Field<unknown> | undefined;
  readonly keys: DocKey[];
}

const dot = (path: string, name: string): string => (path === '' ? name : `${path}.${name}`);

export function docGroups(root: TableKind<unknown>): DocGroup[] {
  const out: DocGroup[] = [];
  const walk = (fields: Fields, path: string, head: string | undefined, field: Field<unknown> | undefined): void => {
    const group: DocGroup = { head, field, keys: [] };
    out.push(group);
    for (const [name, f] of Object.entries(fields)) {
      if (f.kind.shape === 'value') {
        group.keys.push({ path: dot(path, name), name, field: f });
        continue;
      }
      const at = dot(path, name);
      const inner = f.kind.shape === 'tables' ? `${at}[]` : f.kind.shape === 'named' ? `${at}.<name>` : at;
      walk(f.kind.fields, inner, header(at, f.kind), f);
    }
  };
  walk(root.fields, '', undefined, undefined);
  return out.filter((g) => g.keys.length > 0 || g.field !== undefined);
}

/** Every key that holds a value, as the docs name it. */
export function keyPaths(root: TableKind<unknown>): string[] {
  return docGroups(root).flatMap((g) => g.keys.map((k) => k.path));
}

function glossary(root: TableKind<unknown>): Glossary[] {
  const seen = new Map<string, Glossary>();
  for (const g of docGroups(root))
    for (const k of g.keys) {
      const entry = k.field.kind.shape === 'value' ? k.field.kind.glossary : undefined;
      if (entry) seen.set(entry.term, entry);
    }
  return [...seen.values()];
}

/** A key's default as TOML writes it: in the kind's own form (hexadecimal marks), else the plain one. */
export function tomlDefault(field: Field<unknown>): string {
  const kind = field.kind;
  return kind.shape === 'value' && kind.toml ? kind.toml(field.default) : tomlValue(field.default);
}

/** A default as TOML writes it. */
export function tomlValue(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  throw new Error(`no TOML form for default ${JSON.stringify(v)}`);
}

/** The sentences about one key: summary, longer text, then the rules that name it. */
function texts(k: DocKey, rules: readonly Rule[], long: boolean): string[] {
  const own = rules.filter((r) => r.key === k.path).map((r) => r.doc);
  return [k.field.summary, ...(long && k.field.doc !== undefined ? [k.field.doc] : []), ...own];
}

function typeOf(k: DocKey): string {
  return k.field.kind.shape === 'value' ? k.field.kind.docType : '';
}

function groupIntro(g: DocGroup): string[] {
  const kind = g.field?.kind;
  const naming = kind?.shape === 'named' && kind.entry ? [`\`<name>\`: ${kind.entry.expected}.`] : [];
  return [...(g.field?.summary ? [g.field.summary] : []), ...(g.field?.doc ? [g.field.doc] : []), ...naming];
}

// ---- Markdown ----------------------------------------------------------------------

const cell = (s: string): string => s.replaceAll('|', '\\|');

/** The key tables of docs/configuration.md: one table per [section], after the glossary. */
export function markdownKeys(root: TableKind<unknown>, rules: readonly Rule[]): string {
  const parts: string[] = glossary(root).map((g) => g.meaning);
  for (const g of docGroups(root)) {
    parts.push(g.head === undefined ? '### Top level' : `### \`${g.head}\``);
    const intro = groupIntro(g);
    if (intro.length > 0) parts.push(intro.join(' '));
    if (g.keys.length === 0) continue;
    const rows = g.keys.map((k) => {
      const def = k.field.default === undefined ? 'required' : `\`${tomlDefault(k.field)}\``;
      return `| \`${k.path}\` | ${cell(typeOf(k))} | ${cell(def)} | ${cell(texts(k, rules, false).join(' '))} |`;
    });
    parts.push(['| key | type | default | meaning |', '|---|---|---|---|', ...rows].join('\n'));
  }
  return parts.join('\n\n') + '\n';
}

// ---- troff -------------------------------------------------------------------------

/** Markup -> troff text: `code` in bold, links as their text; backslashes and hyphens escaped. */
export function troff(markup: string): string {
  const plain = (s: string): string => s.replaceAll('\\', '\\e').replaceAll('-', '\\-');
  return markup.replace(
    /`([^`]*)`|\[([^\]]*)\]\([^)]*\)|([^`[]+|\[)/g,
    (_m, code?: string, link?: string, rest?: string) => {
      if (code !== undefined) return `\\fB${plain(code).replaceAll("'", '\\(aq')}\\fR`;
      return plain(link ?? rest ?? '');
    },
  );
}

/** One sentence per line (the man-pages convention); a line never starts as a control line. */
function troffSentences(markup: string): string[] {
  return markup
    .split(/(?<=\.) +/)
    .map(troff)
    .map((line) => (/^[.']/.test(line) ? `\\&${line}` : line));
}

/** The KEYS section of kvmnftd.toml(5): .SS per [section], .TP per key. */
export function manKeys(root: TableKind<unknown>, rules: readonly Rule[]): string {
  const lines: string[] = [];
  for (const g of glossary(root)) lines.push(...troffSentences(g.meaning));
  for (const g of docGroups(root)) {
    lines.push(g.head === undefined ? '.SS Top level' : `.SS ${troff(g.head)}`);
    for (const text of groupIntro(g)) lines.push(...troffSentences(text));
    for (const k of g.keys) {
      const def = k.field.default === undefined ? 'required' : `default ${troff(`\`${tomlDefault(k.field)}\``)}`;
      lines.push('.TP', `.B ${troff(k.name)}`, `(${troff(typeOf(k))}; ${def})`);
      for (const text of texts(k, rules, true)) lines.push(...troffSentences(text));
    }
  }
  return lines.join('\n') + '\n';
}

// ---- TOML --------------------------------------------------------------------------

/** Every key at its default, as a TOML file: top-level keys, then each [section]. */
export function tomlDefaults(root: TableKind<unknown>): string {
  const blocks: string[] = [];
  const walk = (fields: Fields, path: string): void => {
    const lines = path === '' ? [] : [`[${path}]`];
    const sections: Array<[string, Fields]> = [];
    for (const [name, f] of Object.entries(fields)) {
      if (f.kind.shape === 'table') sections.push([dot(path, name), f.kind.fields]);
      else if (f.kind.shape === 'value' && f.default !== undefined) lines.push(`${name} = ${tomlDefault(f)}`);
    }
    if (lines.length > 0) blocks.push(lines.join('\n'));
    for (const [p, sub] of sections) walk(sub, p);
  };
  walk(root.fields, '');
  return blocks.join('\n\n') + '\n';
}

/** The defaults as TOML inside the man page's .nf block. */
export function manExample(root: TableKind<unknown>): string {
  return tomlDefaults(root).replaceAll('\\', '\\e').replaceAll('-', '\\-');
}

// ---- regions ------------------------------------------------------------------------

/** The marker lines around a generated region, in a file's comment syntax. */
export function regionMarkers(name: string, comment: (s: string) => string): [string, string] {
  return [
    comment(`BEGIN generated ${name}: npm run docs:config (src/config/schema.ts)`),
    comment(`END generated ${name}`),
  ];
}

/** `text` with the lines between the two marker lines replaced by `content`; throws when a marker is missing. */
export function spliceRegion(text: string, [begin, end]: [string, string], content: string): string {
  const start = text.indexOf(`${begin}\n`);
  const stop = text.indexOf(`\n${end}\n`, start);
  if (start < 0 || stop < 0) throw new Error(`markers "${begin}" ... "${end}" not found`);
  return text.slice(0, start + begin.length + 1) + content + text.slice(stop + 1);
}

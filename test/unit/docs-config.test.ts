// docs/configuration.md and kvmnftd.toml(5) cannot drift from the loader: their
// key tables and the man page's example are rendered from the schema the
// loader validates with (src/config/schema.ts). `npm run docs:config` rewrites
// the marked regions. Key names and `key = value` examples written by hand
// elsewhere in the docs are checked against the loader too.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { ConfigError, configFromObject } from '../../src/config/config.js';
import {
  keyPaths,
  manExample,
  manKeys,
  markdownKeys,
  regionMarkers,
  spliceRegion,
  troff,
} from '../../src/config/docs.js';
import { RULES, SCHEMA } from '../../src/config/schema.js';
import { metricsDocTable } from '../../src/metrics/exposition.js';

const ROOT = join(import.meta.dirname, '..', '..');
const MD = 'docs/configuration.md';
const MAN = 'packaging/man/kvmnftd.toml.5';
const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8');

const md = (s: string): string => `<!-- ${s} -->`;
const man = (s: string): string => `.\\" ${s}`;

/** The metric names of docs/operation.md, from src/metrics/exposition.ts. */
const METRICS_MARKERS: [string, string] = [
  md('BEGIN generated metrics: npm run docs:config (src/metrics/exposition.ts)'),
  md('END generated metrics'),
];

const GENERATED: Array<{ file: string; regions: Array<[[string, string], string]> }> = [
  { file: 'docs/operation.md', regions: [[METRICS_MARKERS, metricsDocTable()]] },
  { file: MD, regions: [[regionMarkers('keys', md), markdownKeys(SCHEMA, RULES)]] },
  {
    file: MAN,
    regions: [
      [regionMarkers('keys', man), manKeys(SCHEMA, RULES)],
      [regionMarkers('example', man), manExample(SCHEMA)],
    ],
  },
];

describe.each(GENERATED)('$file', ({ file, regions }) => {
  it('shows the keys exactly as the schema renders them (npm run docs:config)', () => {
    const want = regions.reduce((t, [markers, content]) => spliceRegion(t, markers, content), read(file));
    if (process.env['UPDATE_DOCS'] === '1') writeFileSync(join(ROOT, file), want);
    expect(read(file)).toBe(want);
  });
});

/** The config error a document causes. */
function errorOf(doc: Record<string, unknown>): ConfigError {
  try {
    configFromObject(doc, '/etc/kvmnftd/kvmnftd.toml');
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`accepted: ${JSON.stringify(doc)}`);
}

const SECTIONS = Object.entries(SCHEMA.fields)
  .filter(([, f]) => f.kind.shape !== 'value')
  .map(([name]) => name);
const KEYS = keyPaths(SCHEMA);
const FILE_EXTENSIONS = ['lock', 'ts', 'js', 'json', 'md', 'toml'];

/** Hand-written Markdown that names config keys. */
const PROSE = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** troff back to text, for the hand-written parts of the man page. */
const untroff = (s: string): string =>
  s.replaceAll('\\(dq', '"').replaceAll('\\(aq', "'").replaceAll('\\-', '-').replaceAll('\\e', '\\');

describe('hand-written parts of the docs', () => {
  it('the example error in both pages is the one the loader gives', () => {
    const message = errorOf({ filter: { jump: 'middle' } }).message;
    expect(message).toBe(
      '/etc/kvmnftd/kvmnftd.toml: filter.jump: expected one of "first", "last", "none", got "middle"',
    );
    expect(read(MD)).toContain(`\n    ${message}\n`);
    expect(read(MAN)).toContain(`\n.nf\n${troff(message)}\n.fi\n`);
  });

  it('every rule between keys is shown with a key the docs list', () => {
    for (const rule of RULES) expect(KEYS, rule.key).toContain(rule.key);
  });

  it.each(PROSE)('%s names only keys the loader knows', (file) => {
    // A code span that is a key, or a `key = value` (`daemon.ts` is a file name, not a key).
    const named = [...read(file).matchAll(/`([a-z_]+)\.([a-z0-9_]+)(?:`| = )/g)]
      .filter((m) => SECTIONS.includes(m[1]!) && !FILE_EXTENSIONS.includes(m[2]!))
      .map((m) => `${m[1]}.${m[2]}`);
    expect(named.length, file === MD ? 'keys named in configuration.md' : '').toBeGreaterThanOrEqual(
      file === MD ? 10 : 0,
    );
    for (const key of named) expect(KEYS, `${file}: ${key}`).toContain(key);
  });

  /** `section.key = value` in Markdown code spans, `.B section.key = value` lines in the man page. */
  const assignments = (): Array<[string, string]> => [
    ...PROSE.flatMap((file) =>
      [...read(file).matchAll(/`([a-z_]+\.[a-z0-9_]+ = [^`]+)`/g)].map((m): [string, string] => [file, m[1]!]),
    ),
    ...[...read(MAN).matchAll(/^\.B ([a-z_]+\.[a-z0-9_]+ = .+)$/gm)].map((m): [string, string] => [
      MAN,
      untroff(m[1]!),
    ]),
  ];

  it('every `key = value` example in the docs is accepted by the loader', () => {
    const found = assignments();
    expect(found.map(([, a]) => a)).toContain('daemon.restore_libvirt_rules = false');
    for (const [file, assignment] of found) {
      const [, section, rest] = /^([a-z_]+)\.(.*)$/.exec(assignment)!;
      const doc = parseToml(`[${section}]\n${rest}\n`) as Record<string, unknown>;
      expect(() => configFromObject(doc, file), `${file}: ${assignment}`).not.toThrow();
    }
  });
});

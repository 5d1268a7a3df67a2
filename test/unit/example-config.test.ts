// The shipped example config (packaging/kvmnftd.toml, installed as
// /etc/kvmnftd/kvmnftd.toml) must load, equal the built-in defaults and write
// out every key of the schema, in the schema's order, so the comments in /etc
// cannot lie about them and kvmnftd.toml(5) can call its generated EXAMPLE
// "this file, with comments".
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { defaultConfig, loadConfig } from '../../src/config/config.js';
import { docGroups, keyPaths, tomlDefaults } from '../../src/config/docs.js';
import { SCHEMA } from '../../src/config/schema.js';

const FILE = join(import.meta.dirname, '..', '..', 'packaging', 'kvmnftd.toml');
const text = readFileSync(FILE, 'utf8');

/** Dotted paths of the values in a parsed TOML document. */
function valuePaths(doc: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(doc).flatMap(([k, v]) =>
    typeof v === 'object' && v !== null && !Array.isArray(v)
      ? valuePaths(v as Record<string, unknown>, `${prefix}${k}.`)
      : [`${prefix}${k}`],
  );
}

function partition<T>(xs: T[], test: (x: T) => boolean): [T[], T[]] {
  return [xs.filter(test), xs.filter((x) => !test(x))];
}

/** The file without comments and blank lines (no value in it contains a "#"). */
const withoutComments = (toml: string): string[] =>
  toml
    .split('\n')
    .map((l) => l.replace(/(^|\s)#.*$/, '').trimEnd())
    .filter((l) => l !== '');

describe('packaging/kvmnftd.toml', () => {
  it('states exactly the defaults', () => {
    const { config } = loadConfig(FILE);
    expect(config).toEqual(defaultConfig());
  });

  it('writes out every key of the schema', () => {
    // Keys of arrays of tables ([[port_forward]]), of named tables ([networks.<name>]) and optional keys without a
    // default ([metrics] textfile) have no default to write out: the file shows them in a comment.
    const optional = docGroups(SCHEMA).flatMap((g) =>
      g.keys.filter((k) => k.field.optional !== undefined && k.field.default === undefined).map((k) => k.path),
    );
    const [inTables, valued] = partition(
      keyPaths(SCHEMA),
      (k) => k.includes('[]') || k.includes('.<name>.') || optional.includes(k),
    );
    expect(inTables).toContain('metrics.textfile');
    expect(valuePaths(parseToml(text) as Record<string, unknown>).sort()).toEqual(valued.sort());
    for (const k of inTables) expect(text, k).toMatch(new RegExp(`^#\\s+${k.split('.').pop()!} = `, 'm'));
  });

  it('is the generated defaults of kvmnftd.toml(5), with comments', () => {
    expect(withoutComments(text)).toEqual(withoutComments(tomlDefaults(SCHEMA)));
  });
});

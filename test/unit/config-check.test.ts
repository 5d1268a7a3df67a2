// `kvmnftd check`'s core: every problem of a config file, not just the first.
// The loader and the checker walk the same schema, so the property below ties
// them together: the daemon refuses a file exactly when check reports it, and
// with the same first message.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { checkConfigFile, configFromObject, configProblems, ConfigError } from '../../src/config/config.js';
import { fuzzSeed, hostileConfigDocArb, validConfigDocArb } from '../helpers/arbitraries.js';
import { REPO_ROOT } from '../helpers/cli.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function write(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-check-'));
  dirs.push(dir);
  const file = join(dir, 'kvmnftd.toml');
  writeFileSync(file, content);
  return file;
}

const lines = (problems: ConfigError[]): string[] => problems.map((p) => p.message);

describe('checkConfigFile', () => {
  it('reports every problem of a file, each naming the file, the key and the value', () => {
    const file = write(
      [
        '[filter]',
        'family = "ipx"',
        'jump = 3',
        'bogus = 1',
        '[nat]',
        'priority = 9999',
        '[daemon]',
        'resync_interval = -5',
      ].join('\n'),
    );
    expect(lines(checkConfigFile(file))).toEqual([
      `${file}: filter.family: expected one of "inet", "ip", "ip6", got "ipx"`,
      `${file}: filter.jump: expected one of "first", "last", "none", got 3`,
      expect.stringMatching(new RegExp(`^${file}: filter\\.bogus: unknown key; known keys in \\[filter\\]: `)),
      expect.stringMatching(new RegExp(`^${file}: nat\\.priority: expected .* got 9999$`)),
      expect.stringMatching(new RegExp(`^${file}: daemon\\.resync_interval: expected .* got -5$`)),
    ]);
  });

  it('checks the rules between keys once every key reads', () => {
    const file = write('[filter]\ninput_chain = "x"\nforward_chain = "x"\n');
    expect(lines(checkConfigFile(file))).toEqual([
      `${file}: filter.forward_chain: must differ from filter.input_chain (x): they hook different traffic`,
    ]);
  });

  it('reports a syntax error and an unreadable file as one problem each', () => {
    const bad = write('a = [');
    expect(lines(checkConfigFile(bad))).toEqual([
      expect.stringMatching(new RegExp(`^${bad}: \\(syntax\\): not valid TOML at line 1, column 5`)),
    ]);
    const missing = join(mkdtempSync(join(tmpdir(), 'kvmnftd-check-')), 'absent.toml');
    dirs.push(join(missing, '..'));
    expect(lines(checkConfigFile(missing))).toEqual([
      expect.stringMatching(new RegExp(`^${missing}: \\(file\\): cannot read: ENOENT`)),
    ]);
  });

  it('finds nothing wrong in an empty file or the shipped example', () => {
    expect(checkConfigFile(write(''))).toEqual([]);
    expect(checkConfigFile(join(REPO_ROOT, 'packaging', 'kvmnftd.toml'))).toEqual([]);
  });
});

describe('configProblems agrees with the loader', () => {
  const agree = (doc: Record<string, unknown>): void => {
    const problems = configProblems(doc, 'f.toml');
    let loaded: unknown;
    try {
      loaded = configFromObject(doc, 'f.toml');
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      expect(problems.length).toBeGreaterThan(0);
      expect(problems[0]?.message).toBe(err.message);
      return;
    }
    expect(loaded).toBeDefined();
    expect(problems).toEqual([]);
  };

  it('on hostile documents: refused by the loader exactly when check reports, first message equal', () => {
    fc.assert(fc.property(hostileConfigDocArb, agree), { seed: fuzzSeed(), numRuns: 500 });
  });

  it('on valid documents: no problem', () => {
    fc.assert(
      fc.property(validConfigDocArb, (doc) => {
        expect(configProblems(doc, 'f.toml')).toEqual([]);
      }),
      { seed: fuzzSeed(), numRuns: 200 },
    );
  });
});

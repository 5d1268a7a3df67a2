// The man pages (packaging/man, shipped in the .deb/.rpm/Arch package) must
// not drift from the program: every command and option of `kvmnftd --help`
// (USAGE) is documented in kvmnftd(8), every key of the config schema in
// kvmnftd.toml(5) (whose key list is generated: test/unit/docs-config.test.ts),
// and both pages format without groff warnings.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMANDS, USAGE } from '../../src/cli/args.js';
import { keyPaths } from '../../src/config/docs.js';
import { SCHEMA } from '../../src/config/schema.js';
import { DEFAULT_RUNTIME_DIR, RUNTIME_FILES } from '../../src/host/runtime.js';
import { DEFAULT_CONFIG_PATH } from '../../src/config/config.js';

const MAN = join(import.meta.dirname, '..', '..', 'packaging', 'man');
const page8 = readFileSync(join(MAN, 'kvmnftd.8'), 'utf8');
const page5 = readFileSync(join(MAN, 'kvmnftd.toml.5'), 'utf8');

/** troff escapes a hyphen as \- */
const troff = (s: string): string => s.replaceAll('-', '\\-');

/** The text of one .SH section (up to the next .SH). */
function section(page: string, name: string): string {
  const start = page.indexOf(`\n.SH ${name}\n`);
  expect(start, `section ${name}`).toBeGreaterThanOrEqual(0);
  const end = page.indexOf('\n.SH ', start + 1);
  return page.slice(start, end < 0 ? undefined : end);
}

describe('man pages', () => {
  it('kvmnftd.toml(5) documents every config key in its section', () => {
    const keys = keyPaths(SCHEMA);
    expect(keys).toContain('libvirt_uri');
    expect(keys).toContain('daemon.restore_libvirt_rules');
    const keysSection = section(page5, 'KEYS');
    for (const key of keys) {
      const dot = key.lastIndexOf('.');
      const [path, name] = dot >= 0 ? [key.slice(0, dot), key.slice(dot + 1)] : [undefined, key];
      // `port_forward[].proto` is a key of the array of tables [[port_forward]].
      const table = path?.endsWith('[]') ? `[${path.slice(0, -2)}]` : path;
      const sub =
        table === undefined
          ? keysSection.split('\n.SS [')[0]!
          : keysSection.split(`\n.SS [${table}]`)[1]?.split('\n.SS ')[0];
      expect(sub, `a ".SS [${table}]" subsection for ${key}`).toBeDefined();
      expect(sub!.includes(`\n.TP\n.B ${troff(name)}\n`), `kvmnftd.toml(5) documents ${key}`).toBe(true);
    }
  });

  it('kvmnftd(8) documents every command and option of USAGE', () => {
    const commands = USAGE.split('\nCommands:\n')[1]!
      .split('\n\n')[0]!
      .split('\n')
      .map((l) => /^ {2}(\w+) /.exec(l)?.[1])
      .filter((c): c is string => c !== undefined);
    expect(commands).toEqual([...COMMANDS]);
    const cmdSection = section(page8, 'COMMANDS');
    for (const c of [...commands, 'help'])
      expect(cmdSection, `command ${c}`).toMatch(new RegExp(`\\n\\.TP\\n\\.BI? ${c}\\b`));
    const synopsis = section(page8, 'SYNOPSIS');
    for (const c of commands) expect(synopsis, `synopsis of ${c}`).toContain(`.B kvmnftd ${c}\n`);

    const options = [
      ...USAGE.split('\nOptions:\n')[1]!
        .split('\n\n')[0]!
        .matchAll(/^ {2}(?:(-\w), )?(--[\w-]+)/gm),
    ].flatMap((m) => [m[1], m[2]].filter((o): o is string => o !== undefined));
    expect(options).toContain('--from-xml');
    expect(options).toContain('-V');
    const optSection = section(page8, 'OPTIONS');
    for (const o of options) expect(optSection, `option ${o}`).toContain(troff(o));
  });

  it('kvmnftd(8) documents every exit code, the signals and the files', () => {
    const codes = [...USAGE.split('Exit codes:')[1]!.matchAll(/(?:^|[ ,\n])(\d) /g)].map((m) => m[1]!);
    expect(codes).toEqual(['0', '1', '2', '3']);
    const exit = section(page8, 'EXIT STATUS');
    for (const code of codes) expect(exit).toContain(`\n.TP\n.B ${code}\n`);
    const signals = section(page8, 'SIGNALS');
    for (const sig of ['SIGHUP', 'SIGTERM', 'SIGINT', 'SIGABRT']) expect(signals).toContain(sig);
    const files = section(page8, 'FILES');
    const { batchDirPrefix, batchFile, spareDirPrefix, spareFifo, ...single } = RUNTIME_FILES;
    const runtime = [...Object.values(single), `${batchDirPrefix}*/${batchFile}`, `${spareDirPrefix}*/${spareFifo}`];
    for (const f of [
      DEFAULT_CONFIG_PATH,
      ...runtime.map((name) => `${DEFAULT_RUNTIME_DIR}/${name}`),
      'kvmnftd.service',
    ])
      expect(files).toContain(troff(f));
  });

  it('the unit points at both pages', () => {
    const unit = readFileSync(join(import.meta.dirname, '..', '..', 'systemd', 'kvmnftd.service'), 'utf8');
    expect(unit).toMatch(/^Documentation=.*man:kvmnftd\(8\).*man:kvmnftd\.toml\(5\)/m);
  });

  it.each(['kvmnftd.8', 'kvmnftd.toml.5'])('%s formats without groff warnings', (page) => {
    const r = spawnSync('groff', ['-man', '-ww', '-z', '-K', 'utf8', join(MAN, page)], { encoding: 'utf8' });
    expect(r.error, 'groff must be installed (groff-base)').toBeUndefined();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});

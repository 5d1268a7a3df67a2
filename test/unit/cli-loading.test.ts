// How the CLI loads its code: each command imports its own modules when it
// runs (src/cli/main.ts), and the daemon sets its V8 flags before its
// modules load (src/daemon/v8-flags.ts).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DAEMON_V8_FLAGS } from '../../src/daemon/v8-flags.js';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** The modules `file` imports statically (type-only imports load nothing), as paths, packages or node: names. */
function staticImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/^import (?!type )[^;]*?from '([^']+)';/gms)].map((m) => m[1] ?? '');
  return specs.map((s) => (s.startsWith('.') ? resolve(dirname(file), s.replace(/\.js$/, '.ts')) : s));
}

/** Everything `entry` loads before its first dynamic import runs. */
function staticClosure(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop() ?? '';
    if (seen.has(file)) continue;
    seen.add(file);
    if (file.startsWith('/')) todo.push(...staticImports(file));
  }
  return seen;
}

describe('the CLI entry point', () => {
  const loaded = [...staticClosure(join(SRC, 'cli/main.ts'))];

  it('loads only the command-line parser and the help texts before it knows the command', () => {
    const ours = loaded.filter((f) => f.startsWith(SRC)).map((f) => f.slice(SRC.length + 1));
    expect(ours.sort()).toEqual(['cli/args.ts', 'cli/help.ts', 'cli/main.ts', 'log/levels.ts']);
    expect(loaded.filter((f) => !f.startsWith('/')).sort()).toEqual(['node:module', 'node:util']);
  });

  it('the walk sees through a module that loads pino (so the test above can fail)', () => {
    expect(staticClosure(join(SRC, 'log/logger.ts'))).toContain('pino');
  });

  it('keeps the daemon out of the one-shot commands and the operator commands out of the daemon', () => {
    const daemon = staticClosure(join(SRC, 'cli/run.ts'));
    expect(daemon).toContain(join(SRC, 'daemon/daemon.ts'));
    expect([...daemon].filter((f) => /\/src\/(doctor|status)\/|\/cli\/(operator|commands)\.ts$/.test(f))).toEqual([]);
    // The libvirt transport's modules load when it is opened: dbus-next only for D-Bus (libvirt-watch.ts).
    expect(
      [...daemon].filter(
        (f) => f === 'dbus-next' || /\/libvirt\/(dbus-client|virsh-shell|virsh-events|firewalld-reload)\.ts$/.test(f),
      ),
    ).toEqual([]);
    for (const command of ['commands.ts', 'operator.ts', 'check.ts']) {
      expect([...staticClosure(join(SRC, 'cli', command))].filter((f) => f.includes('/daemon/daemon.ts'))).toEqual([]);
    }
  });
});

describe("the daemon's V8 flags", () => {
  it('are flags this node knows: it starts with them on its command line', () => {
    const r = spawnSync(process.execPath, [...DAEMON_V8_FLAGS, '-e', '0'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('an unknown flag is refused the same way, so the check above means something', () => {
    const r = spawnSync(process.execPath, ['--no-such-v8-flag-kvmnftd', '-e', '0'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
  });
});

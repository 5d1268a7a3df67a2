// `kvmnftd check` as Ansible's `validate=` runs it: the built CLI, as an
// unprivileged user (nobody), with a PATH that holds node and nothing else
// (no nft, no virsh): it needs only the file.
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_MAIN, requireBuiltCli } from '../helpers/cli.js';

const NOBODY = '65534';
let dir: string;

beforeAll(() => {
  requireBuiltCli();
  if (process.getuid?.() !== 0) throw new Error('check-cli.test.ts must run as root (it drops to nobody)');
  dir = mkdtempSync(join(tmpdir(), 'kvmnftd-check-cli-'));
  chmodSync(dir, 0o755);
  symlinkSync(process.execPath, join(dir, 'node'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function config(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text, { mode: 0o644 });
  return file;
}

/** `kvmnftd check --config FILE` as nobody, PATH = node only. */
function check(file: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = ['--reuid', NOBODY, '--regid', NOBODY, '--clear-groups', '--', 'node', CLI_MAIN, 'check'];
  return new Promise((resolve) => {
    execFile('/usr/bin/setpriv', [...args, '--config', file], { env: { PATH: dir } }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr }),
    );
  });
}

describe('kvmnftd check (no root, no nft, no libvirt)', () => {
  it('prints nothing and exits 0 for a good file', async () => {
    const r = await check(config('good.toml', '[filter]\njump = "last"\n[nat]\npriority = 100\n'));
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('exits 2 with one line per problem, naming file, key and value', async () => {
    const file = config('bad.toml', '[filter]\njump = "middle"\n[nat]\ntable = "a b"\n');
    const r = await check(file);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toBe(`${file}: filter.jump: expected one of "first", "last", "none", got "middle"`);
    expect(lines[1]).toMatch(new RegExp(`^${file}: nat\\.table: expected .*, got "a b"$`));
  });
});

// src/util/child.ts: the daemon's children on node:child_process, with the
// results execa's `reject: false` gave its callers.
import { describe, expect, it } from 'vitest';
import { runChild, spawnChild } from '../../src/util/child.js';

describe('runChild', () => {
  it('collects the output without its final newline; exit code 0 has not failed', async () => {
    const r = await runChild('sh', ['-c', 'printf "a\\nb\\n"; printf "e\\n" >&2'], 5000);
    expect(r).toMatchObject({ stdout: 'a\nb', stderr: 'e', exitCode: 0, failed: false, timedOut: false });
    expect(r.code).toBeUndefined();
  });

  it('another exit code has failed, and says which', async () => {
    const r = await runChild('sh', ['-c', 'echo out; exit 3'], 5000);
    expect(r).toMatchObject({ stdout: 'out', exitCode: 3, failed: true, timedOut: false });
  });

  it('a command that does not exist: code ENOENT, no exit code', async () => {
    const r = await runChild('/nonexistent/kvmnftd-test', [], 5000);
    expect(r).toMatchObject({ code: 'ENOENT', exitCode: undefined, failed: true });
  });

  it('a time-out ends the child (SIGTERM) and is reported', async () => {
    const started = Date.now();
    const r = await runChild('sleep', ['30'], 100);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(r).toMatchObject({ timedOut: true, failed: true, signal: 'SIGTERM' });
  });
});

describe('spawnChild', () => {
  it('a killed child ends with its signal; stdin piped on request, the environment extended', async () => {
    const { child, ended } = spawnChild('sh', ['-c', 'read line; echo "$line $KVMNFTD_CHILD_TEST"; exec sleep 30'], {
      stdin: 'pipe',
      env: { KVMNFTD_CHILD_TEST: 'x' },
    });
    const line = new Promise<string>((resolve) => child.stdout?.once('data', (b: Buffer) => resolve(b.toString())));
    child.stdin?.write('hello\n');
    expect(await line).toBe('hello x\n');
    child.kill('SIGTERM');
    expect(await ended).toMatchObject({ signal: 'SIGTERM', exitCode: undefined, failed: true });
  });
});

// The daemon's long-lived `nft -j -t -i` (src/nft/nft-session.ts) against
// real nft in a network namespace this test creates: the same answers as
// one-shot nft, nft's own errors, and what happens when the session fails.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Batch } from '../../src/nft/json.js';
import { RUNTIME_FILES } from '../../src/host/runtime.js';
import { NftMonitor } from '../../src/nft/monitor.js';
import { nftProcessEnv } from '../../src/nft/nft-process.js';
import { nftRunner } from '../../src/nft/nft-runner.js';
import { startSpareNft } from '../../src/nft/nft-spare.js';
import type { Ruleset } from '../../src/nft/ruleset.js';
import {
  BIG_BATCH_BYTES,
  nftSessionRunner,
  REQUESTS_PER_SESSION,
  type NftSessionRunner,
} from '../../src/nft/nft-session.js';
import { REPO_ROOT, requireBuiltCli, tempDir, useNetnsLab } from '../helpers/cli.js';
import { nftJson, nsRunOk, type Lab } from '../helpers/netns.js';
import { waitUntil } from '../helpers/wait.js';

const lab = useNetnsLab();

/** nft inside `ns` through a two-line wrapper (exec keeps the PID: it is nft's). */
async function nftIn(l: Lab, ns: string): Promise<{ dir: string; nft: string }> {
  const dir = await tempDir(l);
  const nft = join(dir, 'nft');
  await writeFile(nft, `#!/bin/sh\nexec ip netns exec ${ns} nft "$@"\n`);
  await chmod(nft, 0o755);
  return { dir, nft };
}

async function sessionIn(
  l: Lab,
  ns: string,
): Promise<{ runner: NftSessionRunner; oneShot: ReturnType<typeof nftRunner> }> {
  const { dir, nft } = await nftIn(l, ns);
  const runner = nftSessionRunner(dir, nft);
  l.defer('close the nft session', () => runner.close());
  return { runner, oneShot: nftRunner(dir, nft) };
}

const alive = (pid: number): boolean => existsSync(`/proc/${pid}`);

function tableWithRule(name: string, comment: string, rules = 1): Batch {
  const nftables: Batch['nftables'] = [
    { add: { table: { family: 'inet', name } } },
    { add: { chain: { family: 'inet', table: name, name: 'c' } } },
  ];
  for (let i = 0; i < rules; i++)
    nftables.push({
      add: {
        rule: {
          family: 'inet',
          table: name,
          chain: 'c',
          comment: `${comment} ${i}`,
          expr: [{ match: { op: '==', left: { meta: { key: 'iifname' } }, right: `virbr${i}` } }, { accept: null }],
        },
      },
    });
  return { nftables };
}

describe('nft session (real nft in a netns)', () => {
  it('reads what one-shot nft reads, and sees changes made by another process', async () => {
    const l = lab();
    const ns = await l.netns('sess');
    await nsRunOk(ns, 'nft', [
      'add table ip admin; add chain ip admin input { type filter hook input priority 0; policy drop; }',
    ]);
    const { runner, oneShot } = await sessionIn(l, ns);
    expect(await runner.readRuleset()).toEqual(await oneShot.readRuleset());
    await nsRunOk(ns, 'nft', ['add table ip other']);
    const after = await runner.readRuleset();
    expect(after).toEqual(await oneShot.readRuleset());
    expect([...after.tables.keys()]).toContain('ip other');
    expect(runner.counts).toMatchObject({ sessions: 1, viaSession: 2, oneShot: 0, faults: 0 });
  });

  it('start() runs nft before the first request, which it then answers; a second start() starts no other', async () => {
    const l = lab();
    const ns = await l.netns('start');
    const { runner } = await sessionIn(l, ns);
    expect(runner.sessionPid()).toBeUndefined();
    runner.start();
    const pid = runner.sessionPid();
    expect(pid !== undefined && alive(pid)).toBe(true);
    runner.start();
    expect(runner.sessionPid()).toBe(pid);
    await runner.readRuleset();
    expect(runner.counts).toMatchObject({ sessions: 1, viaSession: 1, oneShot: 0 });
  });

  it('applies a batch with non-ASCII text exactly, and keeps one session for reads and writes', async () => {
    const l = lab();
    const ns = await l.netns('sess');
    const { runner } = await sessionIn(l, ns);
    await runner.apply(tableWithRule('kvmtest', 'kvmnftd net=café ✓ «x»'));
    const rules = (await nftJson(ns)).nftables.flatMap((o) => ('rule' in o ? [o.rule] : []));
    expect(rules.map((r) => r?.comment)).toEqual(['kvmnftd net=café ✓ «x» 0']);
    expect(runner.counts).toMatchObject({ sessions: 1, viaSession: 1, oneShot: 0 });
  });

  it("a batch nft refuses fails with nft's message, as one-shot nft's does, and the session stays", async () => {
    const l = lab();
    const ns = await l.netns('sess');
    const { runner, oneShot } = await sessionIn(l, ns);
    const bad = { nftables: [{ add: { chain: { family: 'inet', table: 'missing', name: 'c' } } }] } as Batch;
    const viaSession = await runner.apply(bad).then(
      () => 'applied',
      (e: Error) => e.message,
    );
    const viaOneShot = await oneShot.apply(bad).then(
      () => 'applied',
      (e: Error) => e.message,
    );
    expect(viaSession).toMatch(/^nft failed applying the batch: .*No such file or directory/);
    expect(viaSession).toBe(viaOneShot);
    const pid = runner.sessionPid();
    await runner.apply(tableWithRule('kvmtest', 'after'));
    expect(runner.sessionPid()).toBe(pid);
    expect(runner.counts).toMatchObject({ sessions: 1, viaSession: 2, faults: 0 });
    expect((await nftJson(ns)).nftables.some((o) => 'table' in o && o.table?.name === 'kvmtest')).toBe(true);
  });

  it('a batch too big for the line editor goes to one-shot nft', async () => {
    const l = lab();
    const ns = await l.netns('sess');
    const { runner } = await sessionIn(l, ns);
    const big = tableWithRule('kvmbig', 'kvmnftd net=big', 200);
    expect(JSON.stringify(big).length).toBeGreaterThan(BIG_BATCH_BYTES);
    await runner.apply(big);
    const rules = (await nftJson(ns)).nftables.filter((o) => 'rule' in o);
    expect(rules).toHaveLength(200);
    expect(runner.counts).toMatchObject({ viaSession: 0, oneShot: 1 });
  });

  it('a killed session: one-shot nft answers, then a new session after the back-off', async () => {
    const l = lab();
    const ns = await l.netns('sess');
    const { runner, oneShot } = await sessionIn(l, ns);
    await runner.readRuleset();
    const first = runner.sessionPid();
    expect(first).toBeDefined();
    process.kill(first!, 'SIGKILL');
    await waitUntil('the session is seen gone', 5_000, () => runner.sessionPid() === undefined);
    expect(await runner.readRuleset()).toEqual(await oneShot.readRuleset());
    expect(runner.counts).toMatchObject({ faults: 1, oneShot: 1 });
    await waitUntil('a new session answers', 10_000, async () => {
      await runner.readRuleset();
      return runner.counts.sessions === 2 && runner.sessionPid() !== undefined;
    });
    expect(runner.sessionPid()).not.toBe(first);
  });

  it(`is replaced after ${REQUESTS_PER_SESSION} requests (nft keeps every line in its history), and close() ends it`, async () => {
    const l = lab();
    const ns = await l.netns('sess');
    const { runner } = await sessionIn(l, ns);
    await runner.readRuleset();
    const first = runner.sessionPid()!;
    for (let i = 1; i < REQUESTS_PER_SESSION; i++) await runner.readRuleset();
    // The next session is already started when the last request of the first is answered.
    const second = runner.sessionPid()!;
    expect(second).not.toBe(first);
    expect(runner.counts).toMatchObject({ sessions: 2, viaSession: REQUESTS_PER_SESSION, oneShot: 0 });
    await waitUntil('the first session exits', 5_000, () => !alive(first));
    await runner.readRuleset();
    // Its first read, which faults a fresh nft's heap in, was made before ours: a warm-up.
    expect(runner.counts).toMatchObject({
      sessions: 2,
      viaSession: REQUESTS_PER_SESSION + 1,
      oneShot: 0,
      warmUps: 1,
    });
    expect(runner.sessionPid()).toBe(second);
    runner.close();
    await waitUntil('close() ends the session', 5_000, () => !alive(second));
    await runner.readRuleset(); // one-shot from now on
    expect(runner.counts.oneShot).toBe(1);
    // HOME points nowhere: no history file gets our lines.
    const history = '/root/.nft.history';
    if (existsSync(history)) expect(readFileSync(history, 'utf8')).not.toContain('kvmnftd-sync-');
  });

  it('requests made at once are answered in order', async () => {
    const l = lab();
    const ns = await l.netns('sess');
    const { runner } = await sessionIn(l, ns);
    const results = await Promise.all([
      runner.readRuleset(),
      runner.apply(tableWithRule('kvmone', 'one')),
      runner.readRuleset(),
      runner.apply(tableWithRule('kvmtwo', 'two')),
      runner.readRuleset(),
    ]);
    const names = (i: number): string[] => [...((results[i] as Ruleset | undefined)?.tables.keys() ?? [])];
    expect(names(0)).toEqual([]);
    expect(names(2)).toEqual(['inet kvmone']);
    expect(names(4)).toEqual(['inet kvmone', 'inet kvmtwo']);
    expect(runner.counts).toMatchObject({ sessions: 1, viaSession: 5 });
  });
});

// The spare: a one-shot nft started before its batch exists (src/nft/nft-spare.ts), for `kvmnftd apply`.
describe('spare nft (real nft in a netns)', () => {
  it('a big batch goes to the spare started before it; its FIFO is gone as soon as nft holds it', async () => {
    const l = lab();
    const ns = await l.netns('spare');
    const { dir, nft } = await nftIn(l, ns);
    const runner = nftSessionRunner(dir, nft);
    l.defer('close the nft session', () => runner.close());
    runner.startSpare();
    await runner.readRuleset();
    await runner.apply(tableWithRule('kvmbig', 'kvmnftd net=big', 200));
    expect(runner.counts).toMatchObject({ viaSession: 1, oneShot: 1, spare: 1 });
    const rules = (await nftJson(ns)).nftables.filter((o) => 'rule' in o);
    expect(rules).toHaveLength(200);
    expect(readdirSync(dir).filter((f) => f.startsWith(RUNTIME_FILES.spareDirPrefix))).toEqual([]);
    // A spare commits once: the next big batch goes to a one-shot nft of its own.
    await runner.apply(tableWithRule('kvmbig2', 'kvmnftd net=big2', 200));
    expect(runner.counts).toMatchObject({ oneShot: 2, spare: 1 });
  });

  it("a batch nft refuses fails with nft's message, as one-shot nft's does", async () => {
    const l = lab();
    const ns = await l.netns('spare');
    const { dir, nft } = await nftIn(l, ns);
    const bad: Batch = { nftables: [{ add: { chain: { family: 'inet', table: 'nosuchtable', name: 'c' } } }] };
    const oneShotError = await nftRunner(dir, nft)
      .apply(bad)
      .then(
        () => 'no error',
        (e: Error) => e.message,
      );
    const spare = startSpareNft(dir, nft);
    l.defer('close the spare', () => spare.close());
    await spare.settled;
    expect(spare.ready).toBe(true);
    const spareError = await spare.applyJson(JSON.stringify(bad))!.then(
      () => 'no error',
      (e: Error) => e.message,
    );
    expect(oneShotError).toMatch(/No such file or directory/);
    expect(spareError).toBe(oneShotError);
    expect(spare.applyJson(JSON.stringify(bad))).toBeUndefined(); // used up
  });

  it('a spare whose nft was killed while it waited is no spare, once its exit is seen', async () => {
    const l = lab();
    const ns = await l.netns('spare');
    const { dir, nft } = await nftIn(l, ns);
    const spare = startSpareNft(dir, nft);
    l.defer('close the spare', () => spare.close());
    await spare.settled;
    process.kill(spare.pid!, 'SIGKILL');
    await waitUntil('the spare is seen gone', 5_000, () => !spare.ready);
    expect(spare.applyJson('{"nftables": []}')).toBeUndefined();
  });

  it('an unused spare ends with close(), and with its parent when that is killed', async () => {
    const l = lab();
    const ns = await l.netns('spare');
    const { dir, nft } = await nftIn(l, ns);
    const spare = startSpareNft(dir, nft);
    await spare.settled;
    const pid = spare.pid!;
    expect(alive(pid)).toBe(true);
    spare.close();
    await waitUntil('close() ends the spare', 5_000, () => !alive(pid));
    expect(readdirSync(dir).filter((f) => f.startsWith(RUNTIME_FILES.spareDirPrefix))).toEqual([]);

    // A process that dies holding a spare (SIGKILL: no exit handler runs) leaves no nft waiting.
    requireBuiltCli();
    const script =
      `const { startSpareNft } = await import(${JSON.stringify(join(REPO_ROOT, 'dist', 'nft', 'nft-spare.js'))});` +
      `const s = startSpareNft(${JSON.stringify(dir)}, ${JSON.stringify(nft)}); await s.settled;` +
      `process.stdout.write(String(s.pid) + '\\n'); setInterval(() => undefined, 1000);`;
    const holder = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    l.defer('kill the holder', () => {
      holder.kill('SIGKILL');
    });
    let out = '';
    holder.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    await waitUntil('the holder reports its spare', 10_000, () => out.endsWith('\n'));
    const orphan = Number(out.trim());
    expect(alive(orphan)).toBe(true);
    holder.kill('SIGKILL');
    await waitUntil("the spare's nft exits after its parent's death", 5_000, () => !alive(orphan));
  });
});

describe('nft processes (real nft in a netns)', () => {
  it("the session, the spare, one-shot nft and the monitor all start with nft's malloc tunables", async () => {
    const l = lab();
    const ns = await l.netns('tunables');
    const dir = await tempDir(l);
    const nft = join(dir, 'nft');
    const seen = join(dir, 'seen');
    // Each nft started notes what it was given, then becomes nft.
    await writeFile(
      nft,
      `#!/bin/sh\nprintf '%s %s\\n' "$*" "$GLIBC_TUNABLES" >> ${seen}\nexec ip netns exec ${ns} nft "$@"\n`,
    );
    await chmod(nft, 0o755);
    const runner = nftSessionRunner(dir, nft);
    l.defer('close the nft session', () => runner.close());
    runner.startSpare();
    await runner.readRuleset();
    await runner.apply(tableWithRule('kvmspare', 'kvmnftd net=spare', 200));
    await nftRunner(dir, nft).readRuleset();
    const monitor = new NftMonitor(nft);
    l.defer('stop the monitor', () => monitor.stop());
    const lines: string[] = [];
    monitor.start(
      (line) => lines.push(line),
      () => undefined,
    );
    await waitUntil('the monitor started', 5_000, () => readFileSync(seen, 'utf8').trim().split('\n').length === 4);
    const expected = nftProcessEnv().GLIBC_TUNABLES;
    const started = readFileSync(seen, 'utf8')
      .trim()
      .split('\n')
      .map((line) => line.replace(/ -f \S+/, ' -f FIFO'))
      .sort();
    expect(started).toEqual(
      ['-j -t -i', '-j -f FIFO', '-j -t list ruleset', '-j monitor'].map((args) => `${args} ${expected}`).sort(),
    );
    expect(runner.counts).toMatchObject({ spare: 1 });
  });
});

// VirshShell against a fake interactive virsh (test/fixtures/fake-virsh.mjs):
// framing, libvirt errors, faults with the one-shot fallback and the back-off
// (an injected clock), the time-out, close().
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { commandOutput, rootName, UUID_RE, VirshShell, type NamedXml } from '../../src/libvirt/virsh-shell.js';
import { VirshError } from '../../src/libvirt/virsh.js';
import { waitUntil } from '../helpers/wait.js';

const FAKE = fileURLToPath(new URL('../fixtures/fake-virsh.mjs', import.meta.url));
const U1 = '11111111-2222-3333-4444-555555555555';
const U2 = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
const netXml = (name: string, uuid: string) => `<network>\n  <name>${name}</name>\n  <uuid>${uuid}</uuid>\n</network>`;
const domXml = (name: string, uuid: string) =>
  `<domain type='kvm' id='1'>\n  <name>${name}</name>\n  <uuid>${uuid}</uuid>\n</domain>`;

type Mode = 'ok' | 'crash' | 'hang' | 'error' | 'garbage' | 'reconnect';

let dir: string;
let stateFile: string;
let logFile: string;
let shells: VirshShell[];
const networks = [
  { uuid: U1, xml: netXml('default', U1) },
  { uuid: U2, xml: netXml('a&amp;b', U2) },
];

function setState(mode: Mode, nets = networks): void {
  writeFileSync(
    stateFile,
    JSON.stringify({ mode, networks: nets, domains: [{ uuid: U2, xml: domXml('vm1', U2) }], log: logFile }),
  );
}
const logLines = (): string[] => readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
const spawned = (): number[] => logLines().flatMap((l) => (l.startsWith('pid ') ? [Number(l.slice(4))] : []));
const gone = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return true;
  }
};

const ONE_SHOT: NamedXml[] = [{ name: 'one-shot', xml: '<network/>' }];

function shell(extra: { now?: () => number; timeoutMs?: number } = {}) {
  const oneShot = { networks: vi.fn(() => Promise.resolve(ONE_SHOT)), domains: vi.fn(() => Promise.resolve(ONE_SHOT)) };
  const faults: string[] = [];
  const s = new VirshShell('qemu:///system', {
    command: [process.execPath, FAKE],
    oneShot,
    onFault: (r) => faults.push(r),
    ...extra,
  });
  shells.push(s);
  return { s, oneShot, faults };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kvmnftd-vshell-'));
  stateFile = join(dir, 'state.json');
  logFile = join(dir, 'log');
  writeFileSync(logFile, '');
  setState('ok');
  vi.stubEnv('FAKE_VIRSH_STATE', stateFile);
  shells = [];
});

afterEach(() => {
  for (const s of shells) s.close();
  vi.unstubAllEnvs();
  rmSync(dir, { recursive: true, force: true });
});

describe('VirshShell', () => {
  it('lists networks and domains by UUID through one child; names come from the XML, entities decoded', async () => {
    const { s, oneShot } = shell();
    expect(await s.activeNetworks()).toEqual([
      { name: 'default', xml: networks[0]!.xml },
      { name: 'a&b', xml: networks[1]!.xml },
    ]);
    expect(await s.runningDomains()).toEqual([{ name: 'vm1', xml: domXml('vm1', U2) }]);
    // Concurrent calls queue: each sees whole answers.
    const [a, b] = await Promise.all([s.activeNetworks(), s.activeNetworks()]);
    expect(a.map((n) => n.name)).toEqual(['default', 'a&b']);
    expect(b).toEqual(a);
    expect(spawned()).toEqual([s.pid]);
    expect(oneShot.networks).not.toHaveBeenCalled();
    // Only fixed words, validated UUIDs and split nonces were written: never a name, never a whole nonce.
    const written = logLines().flatMap((l) => (l.startsWith('< ') ? [l.slice(2)] : []));
    expect(written.length).toBeGreaterThan(0);
    for (const line of written)
      expect(line).toMatch(
        /^(net-list --uuid|list --uuid|(net-)?dumpxml [0-9a-f-]{36}|echo (--err )?[0-9a-f]{12}""[0-9a-f]{12})$/,
      );
  });

  it('reads an empty list, and virsh reconnect notes on stderr are no error', async () => {
    const { s } = shell();
    setState('ok', []);
    expect(await s.activeNetworks()).toEqual([]);
    setState('reconnect');
    expect((await s.activeNetworks()).map((n) => n.name)).toEqual(['default', 'a&b']);
    expect(spawned()).toHaveLength(1);
  });

  it("a libvirt error is the call's VirshError; the shell stays and answers the next call", async () => {
    const { s, oneShot, faults } = shell();
    await s.activeNetworks();
    const pid = s.pid;
    setState('error');
    const err = await s.activeNetworks().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VirshError);
    expect((err as Error).message).toMatch(/net-dumpxml .*failed: error: failed to get network/);
    setState('ok');
    expect(await s.activeNetworks()).toHaveLength(2);
    expect(s.pid).toBe(pid);
    expect(spawned()).toEqual([pid]);
    expect(oneShot.networks).not.toHaveBeenCalled();
    expect(faults).toEqual([]);
  });

  it('crash: one-shot answers until the back-off has passed (0.5 s doubling; a whole answer resets it), then a new shell', async () => {
    let t = 1000;
    const { s, oneShot, faults } = shell({ now: () => t });
    await s.activeNetworks();
    const first = s.pid!;
    setState('crash');
    expect(await s.activeNetworks()).toBe(ONE_SHOT);
    expect(faults).toEqual([expect.stringMatching(/exited \(3\)/)]);
    t += 499;
    expect(await s.activeNetworks()).toBe(ONE_SHOT); // still in back-off: no new child
    expect(spawned()).toEqual([first]);
    t += 1;
    expect(await s.activeNetworks()).toBe(ONE_SHOT); // a new child, which crashes too: 1 s now
    expect(spawned()).toHaveLength(2);
    setState('ok');
    t += 999;
    expect(await s.runningDomains()).toBe(ONE_SHOT);
    expect(spawned()).toHaveLength(2);
    t += 1;
    expect(await s.runningDomains()).toEqual([{ name: 'vm1', xml: domXml('vm1', U2) }]);
    expect(spawned()).toEqual([first, expect.any(Number), s.pid]);
    expect(oneShot.networks).toHaveBeenCalledTimes(3);
    expect(oneShot.domains).toHaveBeenCalledTimes(1);
    // That whole answer reset the back-off to 0.5 s.
    setState('crash');
    expect(await s.activeNetworks()).toBe(ONE_SHOT);
    setState('ok');
    t += 500;
    expect(await s.activeNetworks()).toHaveLength(2);
    expect(spawned()).toHaveLength(4);
  });

  it('output that is not what virsh prints is a fault: the child is killed, one-shot answers', async () => {
    const { s, faults } = shell({ now: () => 0 });
    await s.activeNetworks();
    const pid = s.pid!;
    setState('garbage');
    expect(await s.activeNetworks()).toBe(ONE_SHOT);
    expect(faults).toEqual([expect.stringMatching(/unreadable output: net-list --uuid: not a UUID list/)]);
    await waitUntil(`fake virsh ${pid} gone`, 5000, () => gone(pid));
  });

  it('hang: no nonce within the time-out -> the child is killed by PID, one-shot answers', async () => {
    const { s, oneShot, faults } = shell({ timeoutMs: 3000, now: () => 0 }); // room for the fake's start on a busy machine;
    await s.activeNetworks();
    const pid = s.pid!;
    setState('hang');
    expect(await s.activeNetworks()).toBe(ONE_SHOT);
    expect(faults).toEqual([expect.stringMatching(/no answer within 3 s/)]);
    expect(s.pid).toBeUndefined();
    await waitUntil(`fake virsh ${pid} gone`, 5000, () => gone(pid));
    expect(oneShot.networks).toHaveBeenCalledTimes(1);
  });

  it('close(): the child is terminated and no shell is started again', async () => {
    const { s, oneShot, faults } = shell({ now: () => 1e12 });
    await s.activeNetworks();
    const pid = s.pid!;
    s.close();
    await waitUntil(`fake virsh ${pid} gone`, 5000, () => gone(pid));
    expect(await s.activeNetworks()).toBe(ONE_SHOT);
    expect(spawned()).toEqual([pid]);
    expect(oneShot.networks).toHaveBeenCalledTimes(1);
    expect(faults).toEqual([]);
  });

  it('no virsh at all: a fault, one-shot answers', async () => {
    const oneShot = {
      networks: vi.fn(() => Promise.resolve(ONE_SHOT)),
      domains: vi.fn(() => Promise.resolve(ONE_SHOT)),
    };
    const faults: string[] = [];
    const s = new VirshShell('qemu:///system', {
      command: [join(dir, 'no-such-virsh')],
      oneShot,
      onFault: (r) => faults.push(r),
    });
    shells.push(s);
    expect(await s.activeNetworks()).toBe(ONE_SHOT);
    expect(faults).toHaveLength(1);
  });
});

describe('commandOutput and rootName', () => {
  const frame = 'echo --err ab""cd';
  it('strips prompts and echoes, with readline (virsh 9) and without', () => {
    expect(
      commandOutput(
        `virsh # net-list --uuid\n${U1}\nvirsh # ${frame}\nvirsh # echo ab""cd\n`,
        'net-list --uuid',
        frame,
      ),
    ).toBe(U1);
    expect(commandOutput(`net-list --uuid\nvirsh # ${frame}\n`, 'net-list --uuid', frame)).toBe('');
    expect(commandOutput(`virsh # <network>\n</network>\nvirsh # virsh # `, 'net-dumpxml x', frame)).toBe(
      '<network>\n</network>',
    );
  });
  it("reads the root element's name; other XML is none", () => {
    expect(rootName(netXml('x&lt;&#65;&#x42;', U1), 'network')).toBe('x<AB');
    expect(rootName(domXml('vm', U1), 'network')).toBeUndefined();
    expect(rootName('<network>\n</network>', 'network')).toBeUndefined();
    expect(UUID_RE.test(U1) && !UUID_RE.test(`${U1} `) && !UUID_RE.test('default')).toBe(true);
  });
});

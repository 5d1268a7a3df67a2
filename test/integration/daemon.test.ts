/**
 * `kvmnftd run` in the hermetic libvirt lab (test/lab): real dbus-daemon with
 * D-Bus-activated libvirt-dbus, real libvirtd and dnsmasq, real nft, real
 * packets. The daemon reports to a NOTIFY_SOCKET this test owns. Both event
 * transports run the same scenarios.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_MAIN, requireBuiltCli } from '../helpers/cli.js';
import { LAB_FILES, startLab, type Lab } from '../lab/lab.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, timeoutMs: number, f: () => Promise<T | undefined | false> | T | undefined | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A NOTIFY_SOCKET: socat receives the daemon's datagrams; one assignment per line. */
class NotifySocket {
  readonly messages: string[] = [];
  private readonly child: ChildProcess;
  constructor(readonly path: string) {
    this.child = spawn('socat', ['-u', `UNIX-RECV:${path}`, '-'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.messages.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
  }
  ready(): Promise<void> {
    return until(`socat on ${this.path}`, 5000, async () => {
      try {
        const { statSync } = await import('node:fs');
        return statSync(this.path).isSocket();
      } catch {
        return false;
      }
    }).then(() => undefined);
  }
  waitFor(what: string | RegExp, from = 0, timeoutMs = 20_000): Promise<number> {
    return until(`notify message ${String(what)}`, timeoutMs, () => {
      const i = this.messages.findIndex((m, idx) => idx >= from && (typeof what === 'string' ? m === what : what.test(m)));
      return i >= 0 ? i : undefined;
    });
  }
  lastStatus(): string | undefined {
    return [...this.messages].reverse().find((m) => m.startsWith('STATUS='))?.slice('STATUS='.length);
  }
  close(): void {
    this.child.kill('SIGTERM');
  }
}

interface LogRecord {
  level: number;
  msg: string;
  [key: string]: unknown;
}

class Daemon {
  readonly logs: LogRecord[] = [];
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stderr?.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          this.logs.push(JSON.parse(line) as LogRecord);
        } catch {
          this.logs.push({ level: 60, msg: `unparsed: ${line}` });
        }
      }
    });
    child.stdout?.resume();
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }
  /** "applied" log records from log index `from` on (use `logs.length` as a marker). */
  applied(from = 0): LogRecord[] {
    return this.logs.slice(from).filter((r) => typeof r['commands'] === 'number' && r.msg.includes('applied'));
  }
  dump(): string {
    return this.logs.map((r) => JSON.stringify(r)).join('\n');
  }
}

function networkXml(name: string, bridge: string, third: number, mode: 'nat' | 'route', dhcp = false): string {
  return `<network><name>${name}</name><forward mode='${mode}'/><bridge name='${bridge}' stp='off' delay='0'/>
  <ip address='10.77.${third}.1' prefix='24'>${dhcp ? `<dhcp><range start='10.77.${third}.10' end='10.77.${third}.99'/></dhcp>` : ''}</ip></network>`;
}

interface Ruleset {
  natChains: string[];
  forwardComments: string[];
  masqueradePackets: number;
}

async function ruleset(lab: Lab): Promise<Ruleset> {
  const doc = await lab.nftJson();
  const natChains: string[] = [];
  const forwardComments: string[] = [];
  let masqueradePackets = 0;
  for (const o of doc.nftables) {
    const chain = o['chain'] as { table?: string; family?: string; name?: string } | undefined;
    if (chain?.family === 'inet' && chain.table === 'kvmnftd' && chain.name?.startsWith('nat_')) natChains.push(chain.name);
    const rule = o['rule'] as { table?: string; family?: string; chain?: string; comment?: string; expr?: Array<Record<string, unknown>> } | undefined;
    if (rule?.family === 'inet' && rule.table === 'filter' && rule.chain === 'kvmnftd_forward' && rule.comment) forwardComments.push(rule.comment);
    if (rule?.family === 'inet' && rule.table === 'kvmnftd' && rule.chain === 'nat_virbr0' && rule.expr?.some((e) => 'masquerade' in e)) {
      const counter = rule.expr.find((e) => 'counter' in e)?.['counter'] as { packets?: number } | undefined;
      masqueradePackets += counter?.packets ?? 0;
    }
  }
  return { natChains: natChains.sort(), forwardComments, masqueradePackets };
}

describe.each(['dbus', 'virsh'] as const)('kvmnftd run --events %s in the libvirt lab', (transport) => {
  let lab: Lab | undefined;
  let notify: NotifySocket | undefined;
  let daemon: Daemon | undefined;
  const work = mkdtempSync(join(tmpdir(), `kvmnftd-daemon-${transport}-`));
  const config = join(work, 'kvmnftd.toml');
  const env = { KVMNFTD_RUNTIME_DIR: join(work, 'run'), KVMNFTD_LOG_FORMAT: 'json', NOTIFY_SOCKET: join(work, 'notify') };
  const theLab = (): Lab => lab ?? (() => { throw new Error('lab not started'); })();
  const theDaemon = (): Daemon => daemon ?? (() => { throw new Error('daemon not started'); })();
  const theNotify = (): NotifySocket => notify ?? (() => { throw new Error('notify socket missing'); })();

  beforeAll(async () => {
    requireBuiltCli();
    writeFileSync(config, '# defaults\n');
    lab = await startLab({ defaultNetwork: 'define' });
    notify = new NotifySocket(env.NOTIFY_SOCKET);
    await notify.ready();
    daemon = new Daemon(lab.spawnInLab(process.execPath, [CLI_MAIN, 'run', '--events', transport, '--config', config, '--log-level', 'debug'], env));
  }, 60_000);

  afterAll(async () => {
    notify?.close();
    await lab?.stop();
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('reaches READY=1 with a STATUS line, using the requested transport', async () => {
    await theNotify().waitFor('READY=1');
    expect(theNotify().lastStatus(), theDaemon().dump()).toBe('0 networks');
    expect(theDaemon().logs.some((r) => r['transport'] === transport && r.msg.startsWith('events:')), theDaemon().dump()).toBe(true);
  }, 30_000);

  it('virsh net-start default: rules appear by themselves; the guest gets DHCP and reaches the wan, masqueraded', async () => {
    const lab = theLab();
    const before = theDaemon().logs.length;
    const t0 = Date.now();
    await lab.virsh('net-start', 'default');
    await until('nat_virbr0 in table inet kvmnftd', 10_000, async () => (await ruleset(lab)).natChains.includes('nat_virbr0'));
    const latency = Date.now() - t0;
    // The commit is visible before the daemon gets to log it.
    await until('the daemon logs the change', 2000, () => theDaemon().applied(before).length >= 1);
    expect(theDaemon().applied(before)[0]!.msg).toContain('network default up');
    await until('STATUS names default', 5000, () => theNotify().lastStatus()?.startsWith('1 network (default); last change'));

    const lease = await lab.dhcp();
    expect(lease).toMatch(/^192\.168\.122\.\d+$/);
    const listener = await lab.tcpListen(8080);
    const probe = await lab.tcpProbe('192.0.2.2', 8080);
    expect(probe.ok, probe.output).toBe(true);
    expect(await listener.waitForPeer(5000, 0)).toBe('192.0.2.1');
    expect((await ruleset(lab)).masqueradePackets).toBeGreaterThan(0);
    await listener.close();
    // eslint-disable-next-line no-console
    console.log(`[${transport}] net-start -> rules visible: ${latency} ms (incl. virsh)`);
  }, 60_000);

  it('a second (routed) network gets its rules; the first keeps its own', async () => {
    const lab = theLab();
    const xml = join(work, 'lab2.xml');
    writeFileSync(xml, networkXml('lab2', 'virbr1', 1, 'route'));
    await lab.virsh('net-define', xml);
    await lab.virsh('net-start', 'lab2');
    await until('lab2 forward rules', 10_000, async () => (await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'));
    const rs = await ruleset(lab);
    expect(rs.natChains).toEqual(['nat_virbr0']);
    expect(rs.forwardComments).toContain('kvmnftd net=default');
  }, 30_000);

  it('virsh net-destroy removes that network\'s rules only', async () => {
    const lab = theLab();
    await lab.virsh('net-destroy', 'lab2');
    await until('lab2 rules gone', 10_000, async () => !(await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'));
    const rs = await ruleset(lab);
    expect(rs.natChains).toEqual(['nat_virbr0']);
    expect(rs.forwardComments).toContain('kvmnftd net=default');
  }, 30_000);

  it('20 networks started back to back: final ruleset correct, events coalesced', async () => {
    const lab = theLab();
    const names = Array.from({ length: 20 }, (_, i) => `burst${i}`);
    for (const [i, name] of names.entries()) {
      const xml = join(work, `${name}.xml`);
      writeFileSync(xml, networkXml(name, `vbb${i}`, 100 + i, 'nat'));
      await lab.virsh('net-define', xml);
    }
    const before = theDaemon().logs.length;
    for (const name of names) await lab.virsh('net-start', name);
    const want = ['nat_virbr0', ...names.map((_, i) => `nat_vbb${i}`)].sort();
    await until('21 NAT chains', 20_000, async () => JSON.stringify((await ruleset(lab)).natChains) === JSON.stringify(want));
    const transactions = theDaemon().applied(before).length;
    expect(transactions).toBeGreaterThanOrEqual(1);
    expect(transactions).toBeLessThanOrEqual(20);
    for (const name of names) await lab.virsh('net-destroy', name);
    await until('back to one NAT chain', 20_000, async () => JSON.stringify((await ruleset(lab)).natChains) === '["nat_virbr0"]');
    // eslint-disable-next-line no-console
    console.log(`[${transport}] 20 net-starts -> ${transactions} transactions`);
  }, 90_000);

  it('after a libvirtd restart the next net-start is still seen', async () => {
    const lab = theLab();
    await lab.restartLibvirtd();
    await sleep(300);
    await lab.virsh('net-start', 'lab2');
    await until('lab2 rules after libvirtd restart', 10_000, async () => (await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'));
    await lab.virsh('net-destroy', 'lab2');
    await until('lab2 rules gone again', 10_000, async () => !(await ruleset(lab)).forwardComments.includes('kvmnftd net=lab2'));
  }, 40_000);

  it('kvmnftd reload waits for RELOADING=1 ... READY=1; a broken config is rejected and the old one stays', async () => {
    const lab = theLab();
    const from = theNotify().messages.length;
    const ok = await lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env, reject: false });
    expect(ok.exitCode, ok.stderr).toBe(0);
    const reloading = await theNotify().waitFor('RELOADING=1', from, 1000);
    await theNotify().waitFor('READY=1', reloading, 1000);

    writeFileSync(config, '[filter]\njump = "sideways"\n');
    const bad = await lab.exec(process.execPath, [CLI_MAIN, 'reload'], { env, reject: false });
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toContain('filter.jump');
    expect(theDaemon().child.exitCode).toBeNull();
    writeFileSync(config, '# defaults\n');
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
  }, 30_000);

  it('SIGTERM: STOPPING=1, exit 0, and the rules stay in place', async () => {
    const lab = theLab();
    const d = theDaemon();
    d.child.kill('SIGTERM');
    expect(await d.exited).toBe(0);
    await theNotify().waitFor('STOPPING=1', 0, 2000);
    expect((await ruleset(lab)).natChains).toEqual(['nat_virbr0']);
    const errors = d.logs.filter((r) => r.level >= 50 && !r.msg.startsWith('SIGHUP: new configuration rejected'));
    expect(errors.length, JSON.stringify(errors)).toBe(0);
  }, 30_000);
});

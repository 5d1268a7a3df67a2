/**
 * The per-describe libvirt lab fixture of the integration tests that run
 * `kvmnftd run`: useLibvirtLab() registers the hooks, LibvirtLab is what the
 * tests get (lab, notify socket, daemon, CLI, config, networks).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { CLI_MAIN, requireBuiltCli } from '../helpers/cli.js';
import { waitUntil } from '../helpers/wait.js';
import { startLab, type ExecResult, type Lab, type LabOptions } from '../lab/lab.js';
import { NotifySocket, spawnDaemon, type Daemon, type DaemonEnv } from './daemon-harness.js';

export interface LibvirtLabOptions {
  /** Names the work directory (kvmnftd-TAG-*) and the notes printed at the end. */
  tag: string;
  /** startLab() options; a function for those that must be found first (a test root). */
  lab?: LabOptions | (() => Promise<LabOptions>);
  /** Start `kvmnftd run --events EVENTS` once the lab is up and wait for its READY=1. */
  daemon?: 'auto' | 'dbus' | 'virsh';
  /** The beforeAll time-out (default 60 s; a test root may be built first). */
  setupMs?: number;
}

/**
 * One libvirt lab per describe block: registers beforeAll/afterAll that start
 * the lab (failing, never skipping, without a built CLI), a NOTIFY_SOCKET and
 * optionally the daemon, and always clean up (printing what a test root's tc
 * wrapper ignored). The accessors throw until the lab is up.
 */
export function useLibvirtLab(opts: LibvirtLabOptions): LibvirtLab {
  const f = new LibvirtLab(opts.tag);
  beforeAll(async () => {
    requireBuiltCli();
    await f.start(typeof opts.lab === 'function' ? await opts.lab() : (opts.lab ?? {}));
    if (opts.daemon) await f.startDaemon(opts.daemon);
  }, opts.setupMs ?? 60_000);
  afterAll(() => f.stop(), 60_000);
  return f;
}

export class LibvirtLab {
  readonly work: string;
  readonly config: string;
  readonly env: DaemonEnv;
  private started: { lab: Lab; notify: NotifySocket } | undefined;
  private current: Daemon | undefined;

  constructor(readonly tag: string) {
    this.work = mkdtempSync(join(tmpdir(), `kvmnftd-${tag}-`));
    this.config = join(this.work, 'kvmnftd.toml');
    this.env = {
      KVMNFTD_RUNTIME_DIR: join(this.work, 'run'),
      KVMNFTD_LOG_FORMAT: 'json',
      NOTIFY_SOCKET: join(this.work, 'notify'),
    };
    this.writeConfig('# defaults\n');
  }

  get lab(): Lab {
    if (!this.started) throw new Error(`${this.tag}: the lab is not up`);
    return this.started.lab;
  }
  get notify(): NotifySocket {
    if (!this.started) throw new Error(`${this.tag}: the lab is not up`);
    return this.started.notify;
  }
  get daemon(): Daemon {
    if (!this.current) throw new Error(`${this.tag}: no daemon started`);
    return this.current;
  }
  /** The daemon last started, if it has not exited. */
  daemonIfRunning(): Daemon | undefined {
    const d = this.current;
    return d && d.child.exitCode === null && d.child.signalCode === null ? d : undefined;
  }

  async start(opts: LabOptions): Promise<void> {
    const lab = await startLab(opts);
    const notify = new NotifySocket(this.env.NOTIFY_SOCKET);
    this.started = { lab, notify };
    await notify.ready();
  }

  /** `kvmnftd run --events EVENTS ...` in the lab, with this config and env; resolves at its READY=1. */
  async startDaemon(events: 'auto' | 'dbus' | 'virsh' = 'dbus'): Promise<Daemon> {
    const from = this.notify.messages.length;
    const d = spawnDaemon(this.lab, this.env, ['--events', events, '--config', this.config]);
    this.current = d;
    await this.notify.waitFor('READY=1', from).catch((e: Error) => {
      throw new Error(`${e.message}\n${d.dump()}`);
    });
    return d;
  }

  /** A one-shot `kvmnftd ARGS --config CONFIG` in the lab (whatever its exit code). */
  cli(...args: string[]): Promise<ExecResult> {
    return this.lab.exec(this.lab.node, [CLI_MAIN, ...args, '--config', this.config], { env: this.env, reject: false });
  }

  /** Rewrites the config file (the daemon reads it at its next reload). */
  writeConfig(toml: string): void {
    writeFileSync(this.config, toml);
  }

  /** Writes the network's XML into the work directory and `virsh net-define`s it. */
  async defineNetwork(name: string, xml: string): Promise<void> {
    const file = join(this.work, `${name}.xml`);
    writeFileSync(file, xml);
    await this.lab.virsh('net-define', file);
  }

  /** The commands `kvmnftd plan --json` would run now (none: the rules are what the running networks need). */
  async pendingCommands(): Promise<object[]> {
    const r = await this.cli('plan', '--json');
    expect(r.exitCode, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { nftables: object[] }).nftables.filter((c) => !('metainfo' in c));
  }

  /** Waits until there are no pending commands: the daemon has caught up (a plan that fails counts as not yet). */
  async converged(timeoutMs = 15_000): Promise<void> {
    let last = '';
    await waitUntil(
      'kvmnftd converged (plan --json empty)',
      timeoutMs,
      async () => {
        const r = await this.cli('plan', '--json');
        last = r.exitCode === 0 ? r.stdout : `exit ${r.exitCode}: ${r.stderr}`;
        return (
          r.exitCode === 0 && (JSON.parse(r.stdout) as { nftables: object[] }).nftables.every((c) => 'metainfo' in c)
        );
      },
      { detail: () => `last plan: ${last}\n${this.current?.dump() ?? ''}` },
    );
  }

  async stop(): Promise<void> {
    const s = this.started;
    this.started = undefined;
    s?.notify.close();
    const ignored = s?.lab.tcCsumIgnored() ?? [];
    if (ignored.length > 0)
      console.log(
        `[${this.tag}] NOTE: the test root's tc wrapper ignored ${ignored.length} failing tc command(s) ` +
          `(this kernel has no tc csum action):\n  ${ignored.join('\n  ')}`,
      );
    await s?.lab.stop();
    rmSync(this.work, { recursive: true, force: true });
  }
}

/**
 * The main job, as a guided demo on a machine without systemd: builds the
 * hermetic libvirt lab (private namespaces, dbus-daemon, libvirtd, the
 * admin's drop-policy ruleset loaded first, as at boot), shows the guest cut
 * off, starts `kvmnftd run`, shows the guest getting DHCP and reaching the
 * outside, survives `nft -f` of the admin's ruleset, then cleans up.
 *   npm run demo
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireBuiltCli } from '../helpers/cli.js';
import { NotifySocket, spawnDaemon, type Daemon } from '../integration/daemon-harness.js';
import { sleep, waitUntil } from '../helpers/wait.js';
import { LAB_FILES, startLab, type Lab } from '../lab/lab.js';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s: string) => process.stdout.write(`\n${bold(`== ${s}`)}\n`);
const show = (s: string) => process.stdout.write(`${s.trimEnd()}\n`);

async function probe(lab: Lab): Promise<string> {
  const listener = await lab.tcpListen(8080);
  try {
    const r = await lab.tcpProbe('192.0.2.2', 8080, 3000);
    if (!r.ok) return 'blocked';
    return `connected; the outside world saw the guest as ${await listener.waitForPeer(3000, 0)}`;
  } finally {
    await listener.close();
  }
}

async function main(): Promise<void> {
  requireBuiltCli();
  const work = mkdtempSync(join(tmpdir(), 'kvmnftd-demo-'));
  let lab: Lab | undefined;
  let notify: NotifySocket | undefined;
  let daemon: Daemon | undefined;
  try {
    say('building the lab: host, wan and guest namespaces, a system bus, libvirtd; the admin ruleset loads first');
    lab = await startLab({ defaultNetwork: 'define' });
    show((await lab.nft('list', 'table', 'inet', 'filter')).stdout);

    say('virsh net-start default (no kvmnftd yet)');
    await lab.virsh('net-start', 'default');
    const lease = await lab.dhcp({ tries: 3 }).then(
      (ip) => ip,
      () => 'none',
    );
    show(`guest DHCP lease: ${lease}   <- the drop policy eats libvirt's DHCP`);

    say('kvmnftd run --events dbus (as kvmnftd.service would)');
    const env = {
      KVMNFTD_RUNTIME_DIR: join(work, 'run'),
      KVMNFTD_LOG_FORMAT: 'json' as const,
      NOTIFY_SOCKET: join(work, 'notify'),
    };
    notify = new NotifySocket(env.NOTIFY_SOCKET);
    await notify.ready();
    daemon = spawnDaemon(lab, env, ['--events', 'dbus']);
    await notify.waitFor('READY=1');
    await waitUntil('the status names default', 5000, () => notify?.lastStatus()?.includes('default'));
    show(`systemd would show: STATUS=${notify.lastStatus() ?? ''}`);
    for (const r of daemon.logs.filter((l) => l.level >= 30)) show(`journal: ${r.msg}`);

    say('the guest again');
    show(`guest DHCP lease: ${await lab.dhcp()}`);
    show(`guest -> 192.0.2.2:8080: ${await probe(lab)}`);
    show((await lab.nft('list', 'table', 'inet', 'kvmnftd')).stdout);

    say('the admin runs `systemctl reload nftables` (nft -f: flush ruleset + their table)');
    const before = daemon.logs.length;
    await lab.nft('-f', LAB_FILES.adminRuleset);
    await waitUntil('rules back', 5000, async () =>
      (await lab!.nft('list', 'tables')).stdout.includes('table inet kvmnftd'),
    );
    await sleep(500);
    for (const r of daemon.logs.slice(before).filter((l) => l.level >= 30)) show(`journal: ${r.msg}`);
    show(`guest DHCP lease: ${await lab.dhcp()}`);
    show(`guest -> 192.0.2.2:8080: ${await probe(lab)}`);

    say('systemctl stop kvmnftd (SIGTERM): the rules stay; the lab is taken down');
    daemon.child.kill('SIGTERM');
    show(`kvmnftd exited with ${String(await daemon.exited)}`);
  } finally {
    notify?.close();
    const report = await lab?.stop();
    rmSync(work, { recursive: true, force: true });
    say(
      `done: lab removed (${report?.killed.length ?? 0} lab processes stopped, ${report?.remaining.length ?? 0} left)`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});

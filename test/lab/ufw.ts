/**
 * A real ufw (Debian's package) enabled inside the libvirt lab
 * (test/lab/lab.ts): `ufw default deny incoming`, `ufw default deny routed`
 * (DEFAULT_FORWARD_POLICY="DROP" in /etc/default/ufw) and `ufw --force enable`
 * run in the lab's mount and network namespaces; ufw writes its iptables-nft
 * rules there only.
 *
 * What ufw writes to disk stays in the lab: /etc/ufw (ufw.conf ENABLED=yes,
 * user.rules, user6.rules) and /etc/default (the ufw policy file) are
 * lab.privateDir() overlays; ufw 0.36 writes nowhere else (checked with
 * `find -newer` after enable + reload; older ufw kept user rules in /lib/ufw). Its
 * sysctls (/etc/ufw/sysctl.conf: accept_redirects, icmp_*, log_martians) are
 * per network namespace; IPT_MODULES is empty on Debian 12 and 13, so ufw
 * loads no kernel module.
 */
import type { ExecResult, Lab } from './lab.js';

/** Directories ufw writes to: private overlays in the lab. */
const PRIVATE_DIRS = ['/etc/ufw', '/etc/default'] as const;

export class Ufw {
  constructor(readonly lab: Lab) {}

  private run(...args: string[]): Promise<ExecResult> {
    return this.lab.exec('ufw', args, { timeoutMs: 60_000 });
  }

  /** `ufw reload`: ufw flushes and rewrites all of its chains. */
  async reload(): Promise<void> {
    const r = await this.run('reload');
    if (!r.stdout.includes('Firewall reloaded')) throw new Error(`ufw reload: ${r.stdout}${r.stderr}`);
  }

  /** `ufw status verbose` as printed. */
  async status(): Promise<string> {
    return (await this.run('status', 'verbose')).stdout;
  }

  async version(): Promise<string> {
    return /ufw (\S+)/.exec((await this.run('version')).stdout)?.[1] ?? '?';
  }

  /** `ufw --force disable` and the private directories released (what ufw wrote is gone). */
  async dispose(): Promise<void> {
    await this.run('--force', 'disable');
    for (const d of PRIVATE_DIRS) await this.lab.releaseDir(d);
  }
}

/** Enables ufw in the lab with incoming and routed policy deny (see the module comment). */
export async function enableUfw(lab: Lab): Promise<Ufw> {
  for (const d of PRIVATE_DIRS) await lab.privateDir(d);
  const u = new Ufw(lab);
  await lab.exec('ufw', ['default', 'deny', 'incoming']);
  await lab.exec('ufw', ['default', 'deny', 'routed']);
  const r = await lab.exec('ufw', ['--force', 'enable'], { timeoutMs: 60_000 });
  if (!r.stdout.includes('Firewall is active')) throw new Error(`ufw --force enable: ${r.stdout}${r.stderr}`);
  const policy = (await lab.exec('grep', ['^DEFAULT_FORWARD_POLICY=', '/etc/default/ufw'])).stdout.trim();
  if (policy !== 'DEFAULT_FORWARD_POLICY="DROP"') throw new Error(`ufw: /etc/default/ufw has ${policy}`);
  return u;
}

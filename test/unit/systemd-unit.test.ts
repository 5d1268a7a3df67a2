// The shipped unit must pass `systemd-analyze verify` and keep the promises
// the daemon relies on (Type=notify, config errors do not crash-loop, a
// reload that waits, the hardening baseline).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const UNIT = join(import.meta.dirname, '..', '..', 'systemd', 'kvmnftd.service');
const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');
const text = readFileSync(UNIT, 'utf8');

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** The unit as shipped, with the binary pointed at this checkout's build; the man pages it documents are not installed on a dev machine. */
function testableUnit(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-unit-'));
  dirs.push(dir);
  const unit = join(dir, 'kvmnftd.service');
  writeFileSync(unit, text.replaceAll('/usr/bin/kvmnftd', CLI).replace(/^Documentation=.*$/m, ''));
  return unit;
}

function directive(name: string): string[] {
  return [...text.matchAll(new RegExp(`^${name}=(.*)$`, 'gm'))].map((m) => m[1]!);
}

describe('systemd/kvmnftd.service', () => {
  it('passes systemd-analyze verify', () => {
    const unit = testableUnit();
    const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    expect(r.error, 'systemd-analyze must be installed (package systemd)').toBeUndefined();
    expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
    expect(r.status).toBe(0);
  });

  it('is Type=notify with a waiting reload and no crash loop on config errors', () => {
    expect(directive('Type')).toEqual(['notify']);
    expect(directive('ExecReload')).toEqual(['/usr/bin/kvmnftd reload']);
    expect(directive('RestartPreventExitStatus')).toEqual(['2']);
    expect(directive('Restart')).toEqual(['on-failure']);
    expect(directive('WatchdogSec')).toHaveLength(1);
    expect(directive('LimitCORE')).toEqual(['0']);
    expect(directive('After')[0]).toContain('nftables.service');
    expect(directive('SystemCallFilter')[0]).toContain('@pkey');
    expect(directive('CapabilityBoundingSet')).toEqual(['CAP_NET_ADMIN']);
  });

  it("lets the daemon write its [metrics] textfile into node_exporter's directory, and starts without it", () => {
    expect(directive('ProtectSystem')).toEqual(['strict']);
    // "-": a missing directory is no error. Under UMask=0077 the file's mode is set explicitly (metrics/textfile.ts).
    expect(directive('ReadWritePaths')).toContain('-/var/lib/prometheus/node-exporter');
    expect(directive('UMask')).toEqual(['0077']);
  });

  it('scores a low exposure in systemd-analyze security --offline', () => {
    const unit = testableUnit();
    const out = execFileSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', unit], {
      encoding: 'utf8',
    });
    const score = Number(/Overall exposure level for kvmnftd\.service: ([\d.]+)/.exec(out)?.[1]);
    expect(score).toBeLessThanOrEqual(2.0);
  });
});

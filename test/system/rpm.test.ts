// packaging/rpm/kvmnftd.spec builds with Debian's rpmbuild (--nodeps: the
// Fedora build dependencies are not Debian package names; the host's node and
// npm stand in for them) from a `git archive` of HEAD, and the RPM carries the
// files, dependencies and scriptlets the spec promises. Fails when rpmbuild is
// missing (.ci/install-deps installs rpm).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const REPO = join(import.meta.dirname, '..', '..');
const top = mkdtempSync('/var/tmp/kvmnftd-rpm-');
afterAll(() => rmSync(top, { recursive: true, force: true }));

describe('RPM (packaging/rpm/kvmnftd.spec)', () => {
  it('rpmbuild -bb builds it; files, Requires and scriptlets are right', () => {
    const version = (
      JSON.parse(execFileSync('git', ['-C', REPO, 'show', 'HEAD:package.json'], { encoding: 'utf8' })) as {
        version: string;
      }
    ).version;
    mkdirSync(join(top, 'SOURCES'));
    execFileSync('git', [
      '-C',
      REPO,
      'archive',
      `--prefix=kvmnftd-${version}/`,
      '-o',
      join(top, 'SOURCES', `kvmnftd-${version}.tar.gz`),
      'HEAD',
    ]);
    const t0 = performance.now();
    const r = spawnSync(
      'rpmbuild',
      ['-bb', '--nodeps', '--define', `_topdir ${top}`, join(REPO, 'packaging', 'rpm', 'kvmnftd.spec')],
      { encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    expect(r.error, 'rpmbuild must be installed (package rpm)').toBeUndefined();
    expect(r.status, `${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`).toBe(0);
    const dir = join(top, 'RPMS', 'x86_64');
    const rpm = join(
      dir,
      readdirSync(dir).find((f) => f.endsWith('.rpm'))!,
    );
    console.log(`rpmbuild: ${rpm.split('/').at(-1)} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const q = (...args: string[]): string =>
      execFileSync('rpm', ['-qp', ...args, rpm], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const files = q('-l').split('\n');
    for (const f of [
      '/usr/bin/kvmnftd',
      '/usr/lib/kvmnftd/dist/cli/main.js',
      '/usr/lib/kvmnftd/package.json',
      '/usr/lib/kvmnftd/node_modules/sd-notify/build/Release/notify.node',
      '/usr/lib/systemd/system/kvmnftd.service',
      '/etc/kvmnftd/kvmnftd.toml',
    ]) {
      expect(files, f).toContain(f);
    }
    // Compressed or not, depending on the build host's brp scripts.
    for (const page of ['/usr/share/man/man8/kvmnftd.8', '/usr/share/man/man5/kvmnftd.toml.5'])
      expect(
        files.some((f) => f.startsWith(page)),
        page,
      ).toBe(true);
    expect(
      files.some((f) => f.includes('/node_modules/typescript/')),
      'no dev dependencies',
    ).toBe(false);
    const requires = q('--requires');
    for (const dep of ['nodejs >= 18.19', 'nftables', 'libvirt-client']) expect(requires).toContain(dep);
    expect(q('--recommends')).toContain('libvirt-dbus');
    expect(q('--configfiles')).toContain('/etc/kvmnftd/kvmnftd.toml');
    const scripts = q('--scripts');
    expect(scripts).toMatch(/preuninstall scriptlet[\s\S]*if \[ \$1 -eq 0 \][\s\S]*kvmnftd remove --force/);
    expect(scripts).toMatch(/postuninstall scriptlet[\s\S]*try-restart kvmnftd\.service/);
  }, 600_000);
});

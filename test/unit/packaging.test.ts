// Static checks of the packaging (the .deb itself is built, linted and
// installed under a real systemd by test/system/service.test.ts): scripts
// parse, the maintainer scripts do the right thing per dpkg action (run with
// stub commands), the RPM spec parses with rpmspec and the PKGBUILD sources in
// bash, and every version string matches package.json.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const REPO = join(import.meta.dirname, '..', '..');
const P = (...p: string[]): string => join(REPO, 'packaging', ...p);
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function sh(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env });
  expect(r.error, `${cmd} must be installed (.ci/install-deps)`).toBeUndefined();
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('packaging', () => {
  it.each([
    ['sh', P('deb', 'postinst')],
    ['sh', P('deb', 'prerm')],
    ['sh', P('deb', 'postrm')],
    ['sh', P('deb', 'kvmnftd.sh')],
    ['bash', P('deb', 'build.sh')],
    ['bash', P('deb', 'rootfs.sh')],
    ['bash', P('install.sh')],
    ['bash', P('arch', 'PKGBUILD')],
    ['bash', P('arch', 'kvmnftd.install')],
    ['bash', join(REPO, 'test', 'system', 'boot.sh')],
    ['bash', join(REPO, 'test', 'system', 'install-layer.sh')],
    ['bash', join(REPO, 'test', 'system', 'modular-daemons.sh')],
    ['sh', join(REPO, 'test', 'system', 'modular-setup.sh')],
    ['bash', join(REPO, 'test', 'system', 'cached-deb.sh')],
    ['sh', join(REPO, 'test', 'system', 'upgrade-setup.sh')],
    ['sh', join(REPO, 'test', 'system', 'ansible-setup.sh')],
  ])('%s -n %s', (shell, file) => {
    expect(sh(shell, ['-n', file])).toEqual({ status: 0, out: '' });
  });

  /** Runs a maintainer script with stubs for every command it may call; returns the calls. */
  function maintainer(script: string, ...args: string[]): string[] {
    const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-maint-'));
    dirs.push(dir);
    const log = join(dir, 'calls');
    for (const cmd of ['deb-systemd-helper', 'deb-systemd-invoke', 'systemctl', 'kvmnftd']) {
      writeFileSync(join(dir, cmd), `#!/bin/sh\necho "${cmd} $*" >> ${log}\nexit 0\n`);
      chmodSync(join(dir, cmd), 0o755);
    }
    // Only the stubs and the shell's basics: no real systemctl, kvmnftd or rm of /etc.
    const r = sh('sh', [P('deb', script), ...args], { PATH: `${dir}:/usr/bin:/bin` });
    expect(r.status, r.out).toBe(0);
    try {
      return readFileSync(log, 'utf8').trim().split('\n');
    } catch {
      return [];
    }
  }

  it('prerm takes the rules out on remove, not on upgrade', () => {
    expect(maintainer('prerm', 'remove')).toContain('kvmnftd remove --force');
    expect(maintainer('prerm', 'upgrade', '0.2.0-1')).not.toContain('kvmnftd remove --force');
    expect(maintainer('prerm', 'deconfigure')).toEqual([]);
  });

  it('postinst enables the unit on install, updates state on upgrade', () => {
    const install = maintainer('postinst', 'configure');
    expect(install).toContain('deb-systemd-helper enable kvmnftd.service');
    expect(maintainer('postinst', 'configure', '0.0.9-1')).toContain(
      'deb-systemd-helper --quiet was-enabled kvmnftd.service',
    );
  });

  it('postrm masks on remove and purges the unit state on purge', () => {
    expect(maintainer('postrm', 'remove')).toContain('deb-systemd-helper mask kvmnftd.service');
    expect(maintainer('postrm', 'upgrade', '0.2.0-1')).toEqual([]);
    const postrm = readFileSync(P('deb', 'postrm'), 'utf8');
    expect(postrm).toMatch(/"\$1" = "purge"[\s\S]*rm -f \/etc\/kvmnftd\/kvmnftd\.toml[\s\S]*rmdir \/etc\/kvmnftd/);
  });

  it('the RPM spec parses (rpmspec -P) with the right version and dependencies', () => {
    const r = sh('rpmspec', ['-P', P('rpm', 'kvmnftd.spec')]);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toMatch(new RegExp(`^Version:\\s+${VERSION.replaceAll('.', '\\.')}$`, 'm'));
    for (const dep of ['nodejs >= 18.19', 'nftables', 'libvirt-client'])
      expect(r.out).toMatch(new RegExp(`^Requires:\\s+${dep}$`, 'm'));
    expect(r.out).toMatch(/^Recommends:\s+libvirt-dbus$/m);
    expect(r.out).toMatch(/%preun[\s\S]*if \[ \$1 -eq 0 \][\s\S]*kvmnftd remove --force/);
    expect(r.out).toContain('%config(noreplace) /etc/kvmnftd/kvmnftd.toml');
  });

  it('the PKGBUILD sources in bash with the right version and dependencies', () => {
    const r = sh('bash', [
      '-c',
      'set -e; source "$1"; declare -F build package >/dev/null; echo "$pkgver"; printf "%s\\n" "${depends[@]}"; printf "backup=%s\\n" "${backup[@]}"',
      'pkgbuild',
      P('arch', 'PKGBUILD'),
    ]);
    expect(r.status, r.out).toBe(0);
    const lines = r.out.trim().split('\n');
    expect(lines[0]).toBe(VERSION);
    expect(lines).toEqual(
      expect.arrayContaining(['nodejs>=18.19', 'nftables', 'libvirt', 'backup=etc/kvmnftd/kvmnftd.toml']),
    );
  });

  it('man pages and the Debian changelog name the package.json version', () => {
    for (const page of ['kvmnftd.8', 'kvmnftd.toml.5'])
      expect(readFileSync(P('man', page), 'utf8')).toContain(`"kvmnftd ${VERSION}"`);
    expect(readFileSync(P('deb', 'control.in'), 'utf8')).toMatch(
      /^Depends: nodejs \(>= 18\.19\), .*nftables, libvirt-clients/m,
    );
    expect(readFileSync(P('deb', 'control.in'), 'utf8')).toMatch(/^Recommends: libvirt-dbus$/m);
  });

  it('NEWS.Debian says that the default filter.foreign_chains = "accept" changes what an upgrade does', () => {
    const news = readFileSync(P('deb', 'NEWS.Debian.in'), 'utf8');
    expect(news).toMatch(/^kvmnftd \(@VERSION@\) @DIST@; urgency=medium$/m);
    expect(news).toContain('filter.foreign_chains defaults to "accept"');
    expect(news).toContain('foreign_chains = "report"');
    expect(readFileSync(P('deb', 'build.sh'), 'utf8')).toContain('packaging/deb/NEWS.Debian.in');
    expect(readFileSync(P('deb', 'changelog.in'), 'utf8')).toMatch(/^kvmnftd \(@VERSION@\) @DIST@;[^]*foreign_chains/);
  });
});

describe('shell completion is shipped by every way of installing', () => {
  it.each(['packaging/deb/build.sh', 'packaging/rpm/kvmnftd.spec', 'packaging/arch/PKGBUILD', 'packaging/install.sh'])(
    '%s installs both completion files',
    (file) => {
      const text = readFileSync(join(REPO, file), 'utf8');
      expect(text).toContain('packaging/completion/kvmnftd.bash');
      expect(text).toContain('packaging/completion/_kvmnftd');
    },
  );
});

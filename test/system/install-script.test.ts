// packaging/install.sh (the from-source install) into a DESTDIR: builds with
// the machine's node and npm, lays the files out under PREFIX, points the
// unit's ExecStart at PREFIX/bin/kvmnftd, keeps an existing config, and the
// installed command runs. `uninstall` removes what it installed. (Under a real
// systemd, the same layout is what the .deb ships: test/system/service.test.ts.)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const REPO = join(import.meta.dirname, '..', '..');
const dest = mkdtempSync('/var/tmp/kvmnftd-install-');
afterAll(() => rmSync(dest, { recursive: true, force: true }));

describe('packaging/install.sh', () => {
  it('install into DESTDIR, run the installed command, uninstall', () => {
    const env = { ...process.env, DESTDIR: dest, PREFIX: '/usr/local' };
    const r = spawnSync('bash', [join(REPO, 'packaging', 'install.sh'), 'install'], {
      env,
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    expect(r.status, `${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`).toBe(0);
    const installed = (files: string[]): string[] => files.filter((f) => existsSync(join(dest, f)));
    const wanted = [
      'usr/local/lib/kvmnftd/dist/cli/main.js',
      'usr/local/lib/kvmnftd/package.json',
      'usr/local/lib/kvmnftd/node_modules/sd-notify/build/Release/notify.node',
      'usr/local/bin/kvmnftd',
      'usr/local/share/man/man8/kvmnftd.8',
      'usr/local/share/man/man5/kvmnftd.toml.5',
      'etc/kvmnftd/kvmnftd.toml',
    ];
    expect(installed(wanted)).toEqual(wanted);
    expect(existsSync(join(dest, 'usr/local/lib/kvmnftd/node_modules/typescript')), 'no dev dependencies').toBe(false);
    const unit = readFileSync(join(dest, 'etc/systemd/system/kvmnftd.service'), 'utf8');
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/kvmnftd run$/m);
    expect(unit).toMatch(/^ExecReload=\/usr\/local\/bin\/kvmnftd reload$/m);
    // The wrapper names the install path; run the installed build through it.
    const wrapper = readFileSync(join(dest, 'usr/local/bin/kvmnftd'), 'utf8');
    expect(wrapper).toContain('/usr/local/lib/kvmnftd/dist/cli/main.js');
    const out = execFileSync(process.execPath, [join(dest, 'usr/local/lib/kvmnftd/dist/cli/main.js'), '--version'], {
      encoding: 'utf8',
    });
    expect(out.trim()).toMatch(/^kvmnftd \d+\.\d+\.\d+$/);

    // A second install (the upgrade path) keeps an edited config.
    writeFileSync(join(dest, 'etc/kvmnftd/kvmnftd.toml'), '# edited\n');
    const again = spawnSync('bash', [join(REPO, 'packaging', 'install.sh'), 'install'], {
      env,
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    expect(again.status, again.stderr.slice(-2000)).toBe(0);
    expect(readFileSync(join(dest, 'etc/kvmnftd/kvmnftd.toml'), 'utf8')).toBe('# edited\n');

    const un = spawnSync('bash', [join(REPO, 'packaging', 'install.sh'), 'uninstall'], { env, encoding: 'utf8' });
    expect(un.status, un.stderr).toBe(0);
    const removed = ['usr/local/lib/kvmnftd', 'usr/local/bin/kvmnftd', 'etc/systemd/system/kvmnftd.service'];
    expect(installed([...removed, 'usr/local/share/man/man8/kvmnftd.8']), 'left after uninstall').toEqual([]);
    expect(existsSync(join(dest, 'etc/kvmnftd/kvmnftd.toml')), 'uninstall leaves the config').toBe(true);
  }, 600_000);
});

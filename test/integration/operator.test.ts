/**
 * kvmnftd status / doctor / plan --diff against real nft (and iptables-nft,
 * iptables-legacy, /proc/sys) inside throwaway network namespaces. Networks
 * come from --from-xml files; each situation a doctor finding is about is
 * built for real and the finding asserted.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import type { DoctorReport, ReportedFinding as Finding } from '../../src/doctor/index.js';
import type { StatusReport } from '../../src/status/evaluate.js';
import {
  cliContext,
  describeRun,
  fixture,
  REPO_ROOT,
  useNetnsLab,
  runCli,
  runCliIn,
  type CliContext,
} from '../helpers/cli.js';
import { nftLoadFile, nsRun, nsRunOk } from '../helpers/netns.js';
import { statusSchemaErrors } from '../helpers/status-schema.js';

const ADMIN = fixture('admin-ruleset.nft');
const DEFAULT_XML = fixture('default.xml');
const ISOLATED_XML = join(REPO_ROOT, 'test', 'golden', 'isolated', 'isolated.xml');
const V6ROUTE_XML = join(REPO_ROOT, 'test', 'golden', 'ipv6-routed', 'v6route.xml');
const WILDCARD_XML = join(REPO_ROOT, 'test', 'golden', 'hostile', 'wildcard-bridge.xml');

const theLab = useNetnsLab();
let ctx: CliContext;

beforeEach(async () => {
  ctx = await cliContext(theLab(), '');
});

/** A host with the default network's rules applied. */
async function appliedHost(): Promise<string> {
  const ns = await host();
  await apply(ns);
  return ns;
}

/** A host namespace with the bridges and (optionally) the admin ruleset. */
async function host(opts: { admin?: boolean; bridges?: Array<[string, string]> } = {}): Promise<string> {
  const ns = await theLab().netns('host');
  for (const [br, cidr] of opts.bridges ?? [['virbr0', '192.168.122.1/24']]) {
    await theLab().bridge(ns, br);
    await theLab().addr(ns, br, cidr);
  }
  if (opts.admin ?? true) await nftLoadFile(ns, ADMIN);
  // Start from known values: the namespace defaults are not the test's subject.
  await theLab().sysctl(ns, 'net.ipv4.ip_forward', '1');
  await theLab().sysctl(ns, 'net.bridge.bridge-nf-call-iptables', '0');
  await theLab().sysctl(ns, 'net.bridge.bridge-nf-call-ip6tables', '0');
  return ns;
}

async function nftScript(ns: string, text: string): Promise<void> {
  const file = join(ctx.dir, `script-${Date.now()}-${Math.random().toString(16).slice(2)}.nft`);
  await writeFile(file, text);
  await nftLoadFile(ns, file);
}

const cli = (ns: string, ...args: string[]) => runCliIn(ns, ctx, ...args);

const xmlArgs = (xml: string[]): string[] => xml.flatMap((x) => ['--from-xml', x]);

async function apply(ns: string, xml = [DEFAULT_XML]): Promise<void> {
  const r = await cli(ns, 'apply', ...xmlArgs(xml));
  expect(r.exitCode, describeRun(r)).toBe(0);
}

async function status(ns: string, xml = [DEFAULT_XML]) {
  const r = await cli(ns, 'status', '--json', ...xmlArgs(xml));
  const report = JSON.parse(r.stdout) as StatusReport;
  expect(statusSchemaErrors(report), describeRun(r)).toEqual([]);
  expect(r.exitCode, describeRun(r)).toBe(report.exit_code);
  return { r, report };
}

async function doctor(ns: string, xml = [DEFAULT_XML]): Promise<Finding[]> {
  const r = await cli(ns, 'doctor', '--json', ...xmlArgs(xml));
  const report = JSON.parse(r.stdout) as DoctorReport;
  expect([0, 3], describeRun(r)).toContain(r.exitCode);
  expect(r.exitCode).toBe(report.exit_code);
  return report.findings;
}

/** Findings that answer to the id (`ids`: the current id and, for one release, a renamed finding's old one). */
const byId = (findings: Finding[], id: string): Finding[] => findings.filter((f) => f.ids.includes(id));
/** The finding `id` of a doctor run (undefined when the doctor does not report it). */
const finding = async (ns: string, id: string): Promise<Finding | undefined> => byId(await doctor(ns), id)[0];
/** What libvirt >= 10.4's nftables backend creates: its table with a forward base chain. */
const LIBVIRT_NFTABLES_TABLE =
  'table ip libvirt_network {\n chain forward { type filter hook forward priority 0; policy accept; }\n}\n';

async function deleteJump(ns: string, chain: string, target: string): Promise<void> {
  const listing = (await nsRunOk(ns, 'nft', ['-a', 'list', 'chain', 'inet', 'filter', chain])).stdout;
  const handle = listing
    .split('\n')
    .find((l) => l.includes(`jump ${target}`))
    ?.match(/# handle (\d+)/)?.[1];
  expect(handle, listing).toBeDefined();
  await nsRunOk(ns, 'nft', ['delete', 'rule', 'inet', 'filter', chain, 'handle', handle!]);
}

// ---------------------------------------------------------------------------

describe('kvmnftd status (real nft)', () => {
  it('exit 3 before apply, 0 when as planned, 3 when a jump is missing, 0 again after apply', async () => {
    const ns = await host();
    const before = await status(ns);
    expect(before.report).toMatchObject({ exit_code: 3, jumps: { input: 'missing', forward: 'missing' } });
    expect(before.report.networks[0]).toMatchObject({
      name: 'default',
      bridge: 'virbr0',
      mode: 'nat',
      subnets: ['192.168.122.0/24'],
      nat: 'missing',
      ok: false,
    });

    await apply(ns);
    const planned = await status(ns);
    expect(planned.report).toMatchObject({ ok: true, exit_code: 0, pending_commands: 0, problems: [] });
    expect(planned.report.jumps).toEqual({ input: 'ok', forward: 'ok' });
    expect(planned.report.networks[0]).toMatchObject({ nat: 'ok', input: 'ok', forward: 'ok', ok: true });
    const text = await cli(ns, 'status', '--from-xml', DEFAULT_XML);
    expect(text.exitCode, describeRun(text)).toBe(0);
    expect(text.stdout).toContain('OK, every rule is as planned');
    expect(text.stdout).toMatch(/default\s+virbr0\s+nat\s+192\.168\.122\.0\/24\s+ok\s+ok\s+ok\s+ok/);

    await deleteJump(ns, 'input', 'kvmnftd_input');
    const broken = await status(ns);
    expect(broken.report).toMatchObject({ ok: false, exit_code: 3, pending_commands: 1 });
    expect(broken.report.jumps).toEqual({ input: 'missing', forward: 'ok' });
    expect(broken.report.networks[0]).toMatchObject({ input: 'ok', ok: false }); // its rules are there, but unreachable
    const text3 = await cli(ns, 'status', '--from-xml', DEFAULT_XML);
    expect(text3.exitCode).toBe(3);
    expect(text3.stdout).toContain('the input jump to kvmnftd_input is missing from inet filter');

    await apply(ns);
    expect((await status(ns)).report.exit_code).toBe(0);
  });

  it('exit 1 when libvirt cannot be reached, and still says which networks have rules', async () => {
    const ns = await appliedHost();
    await writeFile(ctx.configFile, 'libvirt_uri = "qemu+unix:///system?socket=/nonexistent/kvmnftd-test.sock"\n');
    const r = await cli(ns, 'status', '--json');
    const report = JSON.parse(r.stdout) as StatusReport;
    expect(statusSchemaErrors(report)).toEqual([]);
    expect(r.exitCode, describeRun(r)).toBe(1);
    expect(report).toMatchObject({
      exit_code: 1,
      libvirt: { source: 'libvirt', reachable: false },
      ruleset: { readable: true, networks_with_rules: ['default'] },
      jumps: { input: 'unknown' },
    });
    expect(report.libvirt.error).toContain('virsh');
  });
});

describe('kvmnftd plan --diff (real nft)', () => {
  it('shows what the next apply adds, a deleted jump as one + line, a removed network as - lines', async () => {
    const ns = await host();
    const first = await cli(ns, 'plan', '--diff', '--from-xml', DEFAULT_XML);
    expect(first.exitCode, describeRun(first)).toBe(0);
    expect(first.stdout).toContain('+ table inet kvmnftd\n');
    expect(first.stdout).toContain(
      '    chain input { type filter hook input priority 0; policy drop; }\n+     jump kvmnftd_input comment "kvmnftd"\n      ... 5 unchanged rules\n',
    );

    await apply(ns, [DEFAULT_XML, ISOLATED_XML]);
    const none = await cli(ns, 'plan', '--diff', ...xmlArgs([DEFAULT_XML, ISOLATED_XML]));
    expect(none.stdout, describeRun(none)).toBe('');

    await deleteJump(ns, 'forward', 'kvmnftd_forward');
    const one = await cli(ns, 'plan', '--diff', ...xmlArgs([DEFAULT_XML, ISOLATED_XML]));
    expect(one.stdout.split('\n').filter((l) => /^[+-] /.test(l))).toEqual([
      '+     jump kvmnftd_forward comment "kvmnftd"',
    ]);

    await apply(ns, [DEFAULT_XML, ISOLATED_XML]);
    const gone = await cli(ns, 'plan', '--diff', '--from-xml', DEFAULT_XML); // "isolated" stopped
    const changed = gone.stdout.split('\n').filter((l) => /^[+-] /.test(l));
    expect(changed.length).toBeGreaterThan(0);
    expect(changed.every((l) => l.startsWith('- ') && l.includes('kvmnftd net=isolated'))).toBe(true);
    expect(changed).toContain('-     iifname "virbr5" udp dport 67 counter accept comment "kvmnftd net=isolated"');
  });
});

describe('kvmnftd doctor (real nft in a netns)', () => {
  it('foreign-drop-chain: a second admin table with a drop-policy input chain', async () => {
    const ns = await appliedHost();
    await nftScript(
      ns,
      'table ip extra {\n chain in { type filter hook input priority 10; policy drop; iifname "lo" accept; }\n}\n',
    );
    const [f, ...more] = byId(await doctor(ns), 'foreign-drop-chain');
    expect(more).toEqual([]);
    expect(f!.title).toContain('table ip extra chain in (hook input, priority 10)');
    expect(f!.networks).toEqual(['default']);
    expect(f!.fix).toContain('nft insert rule ip extra in iifname "virbr0"');
    // kvmnftd's own admin chains are covered by its jumps: not reported.
    expect(f!.title).not.toContain('inet filter chain');
  });

  it('foreign-drop-chain: Docker imitated (iptables-nft FORWARD policy DROP + DOCKER-USER, nft docker-bridges)', async () => {
    const ns = await appliedHost();
    for (const args of [
      ['-N', 'DOCKER-USER'],
      ['-A', 'DOCKER-USER', '-j', 'RETURN'],
      ['-A', 'FORWARD', '-j', 'DOCKER-USER'],
      ['-A', 'FORWARD', '-o', 'docker0', '-j', 'ACCEPT'],
      ['-P', 'FORWARD', 'DROP'],
    ]) {
      await nsRunOk(ns, 'iptables-nft', args);
    }
    await nftScript(
      ns,
      'table ip docker-bridges {\n chain filter-FORWARD { type filter hook forward priority 0; policy accept; oifname "docker0" accept; counter drop; }\n}\n',
    );
    const found = byId(await doctor(ns), 'foreign-drop-chain');
    const titles = found.map((f) => f.title);
    expect(
      titles.some((t) => t.includes('table ip filter chain FORWARD (hook forward, priority 0)')),
      titles.join('\n'),
    ).toBe(true);
    expect(
      titles.some((t) => t.includes('table ip docker-bridges chain filter-FORWARD (hook forward, priority 0)')),
      titles.join('\n'),
    ).toBe(true);
    const ipt = found.find((f) => f.title.includes('ip filter'))!;
    expect(ipt.severity).toBe('error');
    expect(ipt.evidence.join('\n')).toContain('Docker, through iptables-nft');
    expect(ipt.evidence.join('\n')).toContain('kvmnftd handles it through docker chain ip filter DOCKER-USER, but');
    expect(ipt.fix).toContain('kvmnftd apply');
    const nftDocker = found.find((f) => f.title.includes('docker-bridges'))!;
    expect(nftDocker.evidence.join('\n')).toContain("not handled, never: it is Docker's nftables table");

    // kvmnftd apply handles Docker's iptables chain: the finding turns into an info line.
    await apply(ns);
    const handled = byId(await doctor(ns), 'foreign-drop-chain').find((f) => f.title.includes('ip filter'))!;
    expect(handled.severity).toBe('info');
    expect(handled.title).toContain('kvmnftd lets them through (mark accept in ip filter DOCKER-USER)');

    // Docker's nftables table takes the doctor's manual fix; then only the info line is left.
    await nftScript(
      ns,
      'insert rule ip docker-bridges filter-FORWARD iifname "virbr0" accept\n' +
        'insert rule ip docker-bridges filter-FORWARD oifname "virbr0" ct state established,related accept\n',
    );
    expect(byId(await doctor(ns), 'foreign-drop-chain').map((f) => f.severity)).toEqual(['info']);
  });

  it("foreign-drop-chain: not reported when libvirt's own iptables rules accept the traffic under FORWARD DROP", async () => {
    const ns = await appliedHost();
    for (const args of [
      ['-N', 'LIBVIRT_FWO'],
      ['-A', 'LIBVIRT_FWO', '-i', 'virbr0', '-s', '192.168.122.0/24', '-j', 'ACCEPT'],
      ['-N', 'LIBVIRT_FWI'],
      ['-A', 'LIBVIRT_FWI', '-o', 'virbr0', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT'],
      ['-A', 'FORWARD', '-j', 'LIBVIRT_FWI'],
      ['-A', 'FORWARD', '-j', 'LIBVIRT_FWO'],
      ['-P', 'FORWARD', 'DROP'],
    ]) {
      await nsRunOk(ns, 'iptables-nft', args);
    }
    const findings = await doctor(ns);
    expect(byId(findings, 'foreign-drop-chain')).toEqual([]);
    expect(byId(findings, 'libvirt-firewall-backend')[0]!.title).toContain('iptables');
    expect(byId(findings, 'libvirt-chains-missing')).toEqual([]);
  });

  it('foreign-drop-chain: a bridge-family forward chain drops guest-to-guest frames of an isolated network', async () => {
    const ns = await host({ bridges: [['virbr5', '192.168.150.1/24']] });
    await apply(ns, [ISOLATED_XML]);
    await nftScript(
      ns,
      'table bridge brfilter {\n chain forward { type filter hook forward priority 0; policy drop; }\n}\n',
    );
    const [f] = byId(await doctor(ns, [ISOLATED_XML]), 'foreign-drop-chain');
    expect(f!.title).toContain('table bridge brfilter chain forward (hook forward, priority 0)');
    expect(f!.networks).toEqual(['isolated']);
  });

  it('rules-not-applied before apply; gone after', async () => {
    const ns = await host();
    expect(byId(await doctor(ns), 'rules-not-applied')[0]!.title).toMatch(/would run \d+ nft commands/);
    await apply(ns);
    expect(byId(await doctor(ns), 'rules-not-applied')).toEqual([]);
  });

  it('br-netfilter: bridge-nf-call-iptables = 1 in the namespace', async () => {
    const ns = await appliedHost();
    expect(byId(await doctor(ns), 'br-netfilter')).toEqual([]);
    await theLab().sysctl(ns, 'net.bridge.bridge-nf-call-iptables', '1');
    const f = await finding(ns, 'br-netfilter');
    expect(f).toMatchObject({ severity: 'warning' });
    expect(f!.evidence).toContain('net.bridge.bridge-nf-call-iptables = 1');
  });

  it('ipv4-forwarding-off and ipv6-forwarding-off', async () => {
    const ns = await host({
      bridges: [
        ['virbr0', '192.168.122.1/24'],
        ['virbr6', '2001:db8:ca2:2::1/64'],
      ],
    });
    await apply(ns, [DEFAULT_XML, V6ROUTE_XML]);
    await theLab().sysctl(ns, 'net.ipv4.ip_forward', '0');
    await theLab().sysctl(ns, 'net.ipv6.conf.all.forwarding', '0');
    const findings = await doctor(ns, [DEFAULT_XML, V6ROUTE_XML]);
    expect(byId(findings, 'ipv4-forwarding-off')[0]).toMatchObject({ severity: 'error', networks: ['default'] });
    expect(byId(findings, 'ipv6-forwarding-off')[0]).toMatchObject({ severity: 'warning', networks: ['v6route'] });
    await theLab().sysctl(ns, 'net.ipv4.ip_forward', '1');
    await theLab().sysctl(ns, 'net.ipv6.conf.all.forwarding', '1');
    const after = await doctor(ns, [DEFAULT_XML, V6ROUTE_XML]);
    expect([...byId(after, 'ipv4-forwarding-off'), ...byId(after, 'ipv6-forwarding-off')]).toEqual([]);
  });

  it('libvirt-chains-missing after a flush; libvirt-firewall-backend names nftables for table ip libvirt_network', async () => {
    const ns = await appliedHost();
    const missing = await doctor(ns);
    expect(byId(missing, 'libvirt-chains-missing')[0]!.fix).toContain('org.fedoraproject.FirewallD1.Reloaded');
    await nftScript(ns, LIBVIRT_NFTABLES_TABLE);
    const present = await doctor(ns);
    expect(byId(present, 'libvirt-chains-missing')).toEqual([]);
    expect(byId(present, 'libvirt-firewall-backend')[0]!.title).toContain('nftables');
  });

  it('admin-table-missing on an empty ruleset, pointing at a table that does drop', async () => {
    const ns = await host({ admin: false });
    expect(byId(await doctor(ns), 'admin-table-missing')[0]!.title).toContain('table inet filter');
    await nftScript(ns, 'table ip fw {\n chain input { type filter hook input priority 0; policy drop; }\n}\n');
    expect(byId(await doctor(ns), 'admin-table-missing')[0]!.fix).toContain('family = "ip" table = "fw"');
  });

  it('iptables-table-collision: an admin table ip nat with native chains, which iptables-nft refuses', async () => {
    const ns = await appliedHost();
    await nftScript(
      ns,
      'table ip nat {\n chain postrouting { type nat hook postrouting priority 100; ip saddr 192.168.122.0/24 masquerade; }\n}\n',
    );
    const ipt = await nsRun(ns, 'iptables-nft', ['-t', 'nat', '-S']);
    expect(ipt.stdout + ipt.stderr).toMatch(/incompatible/); // the premise of the finding
    const f = await finding(ns, 'iptables-table-collision');
    // Renamed from ip-nat-collision: for one release `id` still says the old id, for scripts that match it.
    expect(f).toMatchObject({
      severity: 'warning',
      id: 'ip-nat-collision',
      ids: ['iptables-table-collision', 'ip-nat-collision'],
    });
    expect(f!.title).toContain('table ip nat has nft base chains iptables-nft does not know (postrouting)');
  });

  it('nat-table-not-owned: nat.table = "nat" next to the admin\'s own table inet nat, which stays untouched', async () => {
    const ns = await host();
    const natCtx = await cliContext(theLab(), '[nat]\ntable = "nat"\n');
    const run = (...args: string[]) => runCli(ns, [...args, '--config', natCtx.configFile], natCtx);
    await nftScript(
      ns,
      'table inet nat {\n chain prerouting { type nat hook prerouting priority -100; tcp dport 8080 redirect to :80; }\n' +
        ' chain postrouting { type nat hook postrouting priority 100; }\n}\n',
    );
    const before = (await nsRunOk(ns, 'nft', ['list', 'table', 'inet', 'nat'])).stdout;
    const applied = await run('apply', ...xmlArgs([DEFAULT_XML]));
    expect(applied.exitCode, describeRun(applied)).toBe(1);
    expect(applied.stderr).toMatch(/table inet nat exists and is not kvmnftd's/);
    const removed = await run('remove', '--force');
    expect(removed.exitCode, describeRun(removed)).toBe(0);
    expect((await nsRunOk(ns, 'nft', ['list', 'table', 'inet', 'nat'])).stdout).toBe(before);
    const r = await run('doctor', '--json', ...xmlArgs([DEFAULT_XML]));
    const [f] = byId((JSON.parse(r.stdout) as DoctorReport).findings, 'nat-table-not-owned');
    expect(f).toMatchObject({ severity: 'error', networks: ['default'] });
    expect(f!.fix).toContain('[nat] table = "kvmnftd"');
  });

  it('iptables-legacy-rules: a legacy FORWARD DROP rule in the namespace', async () => {
    const ns = await appliedHost();
    expect(byId(await doctor(ns), 'iptables-legacy-rules')).toEqual([]);
    await nsRunOk(ns, 'iptables-legacy', ['-A', 'FORWARD', '-j', 'DROP']);
    const f = await finding(ns, 'iptables-legacy-rules');
    expect(f).toMatchObject({ severity: 'error' });
    expect(f!.evidence).toContain('iptables-legacy -t filter -A FORWARD -j DROP');
  });

  it('network-invalid for a hostile network definition; a clean host has no errors or warnings', async () => {
    const ns = await appliedHost();
    const invalid = byId(await doctor(ns, [DEFAULT_XML, WILDCARD_XML]), 'network-invalid');
    expect(invalid).toHaveLength(1);
    await nftScript(ns, LIBVIRT_NFTABLES_TABLE);
    const clean = await doctor(ns);
    // Facts outside the namespace (system bus, nft version, libvirt's config) may add notes only.
    expect(
      clean.filter(
        (f) =>
          f.severity !== 'info' &&
          !['libvirt-dbus-unavailable', 'nft-too-old', 'firewalld-running'].includes(f.ids[0]!),
      ),
    ).toEqual([]);
  });
});

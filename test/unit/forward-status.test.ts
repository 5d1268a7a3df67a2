// Port forwards in `kvmnftd status` and `kvmnftd doctor` (pure parts), the
// sockets a forward shadows and the lease-file filter.
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { configFromObject, type Config } from '../../src/config/config.js';
import { isLeaseFile, leaseDigest, LeaseWatch } from '../../src/daemon/lease-watch.js';
import { checkForwardShadowing, checkForwardTargets, checkForwardsBlocked } from '../../src/doctor/forwards.js';
import { checkForwarding } from '../../src/doctor/host.js';
import { diagnose } from '../../src/doctor/index.js';
import type { DoctorFacts } from '../../src/doctor/types.js';
import { shadowedListeners, type HostListener } from '../../src/host/listeners.js';
import { forwardTargetsFrom, type GuestFacts } from '../../src/libvirt/guest-facts.js';
import type { NetworkParse } from '../../src/libvirt/model.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { plan } from '../../src/nft/plan.js';
import { tableKey, type Ruleset } from '../../src/nft/ruleset.js';
import { evaluateStatus } from '../../src/status/evaluate.js';
import { renderStatus } from '../../src/status/render.js';
import { fixture } from '../helpers/cli.js';
import { LIVE_LIBVIRT9 } from '../helpers/golden.js';
import { statusSchemaErrors } from '../helpers/status-schema.js';

const DEFAULT = parseNetworkXml(readFileSync(fixture('default.xml'), 'utf8'), 'default.xml');
const MAC = '52:54:00:6b:00:01';
const WEB1 =
  `<domain><name>web1</name><devices><interface type='network'><mac address='${MAC}'/>` +
  "<source network='default'/></interface></devices></domain>";

const forwardConfig = (over: Record<string, unknown> = {}): Config =>
  configFromObject(
    {
      port_forward: [
        { network: 'default', proto: 'tcp', host_port: 2222, to: 'web1', to_port: 22 },
        { network: 'default', proto: 'udp', host_port: 5353, to: '52:54:00:6b:00:02' },
        { network: 'default', proto: 'tcp', host_port: 8080, to: '10.9.9.9' },
      ],
      ...over,
    },
    't',
  );

const FACTS: GuestFacts = {
  domains: [{ name: 'web1', xml: WEB1 }],
  leases: [{ network: 'default', mac: MAC, address: '192.168.122.23', expiry: 100 }],
};

/** The ruleset after applying the plan, with the forward rules' counters set as the kernel would count. */
function appliedWithCounters(config: Config, inputs: NetworkParse[], packets: number): Ruleset {
  const targets = forwardTargetsFrom(config, inputs, FACTS);
  const live = applyBatch(LIVE_LIBVIRT9, plan(inputs, config, LIVE_LIBVIRT9, { forwardTargets: targets }).batch);
  for (const [table, chain] of [
    ['inet kvmnftd', 'pf_prerouting'],
    [tableKey(config.filter.family, config.filter.table), 'kvmnftd_forward'],
  ] as const)
    for (const r of live.tables.get(table)?.chains.get(chain)?.rules ?? [])
      r.expr = r.expr.map((e) => ('counter' in e ? { counter: { packets, bytes: packets * 60 } } : e));
  return live;
}

describe('status: forwards', () => {
  it('lists each forward with its target, state and counters from the live rules', () => {
    const config = forwardConfig();
    const inputs = [DEFAULT];
    const report = evaluateStatus({
      config,
      configSource: 't',
      libvirt: {
        source: 'libvirt',
        networks: inputs,
        facts: { forwardTargets: forwardTargetsFrom(config, inputs, FACTS) },
      },
      ruleset: { live: appliedWithCounters(config, inputs, 7) },
      daemon: { systemd: { available: false } },
      checkedAt: new Date(0),
    });
    expect(statusSchemaErrors(report)).toEqual([]);
    expect(report.forwards.map((f) => [f.name, f.state, f.target, f.rules])).toEqual([
      ['port_forward[0]', 'active', ['192.168.122.23'], 'ok'],
      ['port_forward[1]', 'waiting', [], 'not-needed'],
      ['port_forward[2]', 'invalid', [], 'not-needed'],
    ]);
    expect(report.forwards[0]!.counters).toEqual({
      dnat: { packets: 7, bytes: 420 },
      accept: { packets: 7, bytes: 420 },
    });
    expect(report.forwards[1]!.reason).toBe('waiting: 52:54:00:6b:00:02 has no DHCP lease on network default yet');
    expect(report.forwards[2]!.reason).toMatch(/10\.9\.9\.9 is not inside a subnet of network default/);
    expect(report.forwards[1]!.counters).toEqual({ dnat: null, accept: null });
    // The invalid forward is a problem; the waiting one is not.
    expect(report.problems.filter((p) => p.startsWith('port_forward'))).toEqual([
      expect.stringMatching(/^port_forward\[2\]: 10\.9\.9\.9/),
    ]);
    const text = renderStatus(report);
    expect(text).toMatch(/port_forward\[0\]\s+tcp 2222\s+web1 \(default\)\s+192\.168\.122\.23:22\s+active\s+7\s+7/);
    expect(text).toContain('port_forward[1]: waiting: 52:54:00:6b:00:02 has no DHCP lease');
  });

  it('says "missing" for an active forward whose rules are not in place, and lists none without forwards', () => {
    const config = forwardConfig();
    const inputs = [DEFAULT];
    const report = evaluateStatus({
      config,
      configSource: 't',
      libvirt: {
        source: 'libvirt',
        networks: inputs,
        facts: { forwardTargets: forwardTargetsFrom(config, inputs, FACTS) },
      },
      ruleset: { live: LIVE_LIBVIRT9 },
      daemon: { systemd: { available: false } },
      checkedAt: new Date(0),
    });
    expect(report.forwards[0]!.rules).toBe('missing');
    expect(report.problems).toContain('port_forward[0]: rules missing');
    const none = configFromObject({}, 't');
    expect(
      evaluateStatus({
        config: none,
        configSource: 't',
        libvirt: { source: 'libvirt', networks: inputs },
        ruleset: { live: LIVE_LIBVIRT9 },
        daemon: { systemd: { available: false } },
        checkedAt: new Date(0),
      }).forwards,
    ).toEqual([]);
  });
});

function doctorFacts(config: Config, over: Partial<DoctorFacts> = {}): DoctorFacts {
  const inputs = [DEFAULT];
  const forwardTargets = forwardTargetsFrom(config, inputs, FACTS);
  const p = plan(inputs, config, LIVE_LIBVIRT9, { forwardTargets });
  return {
    config,
    libvirt: { networks: inputs },
    ruleset: { live: LIVE_LIBVIRT9, plannedCommands: p.batch.nftables.length, forwards: p.forwards },
    listeners: [],
    sysctl: { ipv4Forward: '1', ipv6Forward: '1', ipv6AcceptRa1: [] },
    nft: { version: '1.0.6' },
    bus: { libvirtDbus: 'running', firewalld: false },
    iptablesLegacy: { installed: false },
    ...over,
  };
}

describe('doctor: forwards', () => {
  it('names the forward whose target is not on its network, and the one that waits for an address', () => {
    const config = forwardConfig();
    const found = checkForwardTargets(doctorFacts(config));
    expect(found.map((f) => [f.id, f.severity])).toEqual([
      ['forward-guest-no-address', 'warning'],
      ['forward-target-not-on-network', 'error'],
    ]);
    expect(found[0]!.title).toBe(
      'port_forward[1] (udp 5353 -> 52:54:00:6b:00:02 on network default) is waiting: the guest has no address yet',
    );
    expect(found[1]!.title).toMatch(
      /^port_forward\[2\] \(tcp 8080 -> 10\.9\.9\.9 on network default\): the target is not/,
    );
    // A domain that is not running waits too, and says so.
    const down = checkForwardTargets(
      doctorFacts(
        configFromObject({ port_forward: [{ network: 'default', proto: 'tcp', host_port: 1, to: 'web9' }] }, 't'),
      ),
    );
    expect(down.map((f) => f.title)).toEqual([
      'port_forward[0] (tcp 1 -> web9 on network default) is waiting: the guest is not running',
    ]);
  });

  it('reports a host socket on a forwarded port, not a loopback-only one nor another protocol', () => {
    const config = forwardConfig();
    const sockets: HostListener[] = [
      { proto: 'tcp', address: '0.0.0.0', port: 2222 },
      { proto: 'tcp', address: '127.0.0.1', port: 8080 },
      { proto: 'tcp', address: '::', port: 5353 },
    ];
    const found = checkForwardShadowing(doctorFacts(config, { listeners: sockets }));
    expect(found.map((f) => [f.id, f.evidence])).toEqual([['forward-port-shadowed', ['listening: tcp 0.0.0.0:2222']]]);
    const onOther = forwardConfig({
      port_forward: [{ network: 'default', proto: 'tcp', host_port: 2222, to: 'web1', host_address: '198.51.100.1' }],
    });
    expect(shadowedListeners([{ proto: 'tcp', address: '198.51.100.2', port: 2222 }], onOther.portForward[0]!)).toEqual(
      [],
    );
    expect(
      shadowedListeners([{ proto: 'tcp', address: '198.51.100.1', port: 2222 }], onOther.portForward[0]!),
    ).toHaveLength(1);
  });

  it("says a forward cannot pass libvirt's reject with foreign_chains = report", () => {
    const report = forwardConfig({ filter: { foreign_chains: 'report' } });
    expect(checkForwardsBlocked(doctorFacts(report)).map((f) => f.id)).toEqual(['forward-blocked-by-libvirt']);
    expect(checkForwardsBlocked(doctorFacts(forwardConfig()))).toEqual([]);
  });

  it('makes IPv6 forwarding off an error when an IPv6 forward exists', () => {
    const v6 = parseNetworkXml(
      "<network><name>r6</name><forward mode='route'/><bridge name='virbr6'/>" +
        "<ip family='ipv6' address='fd00:6::1' prefix='64'/></network>",
      'r6',
    );
    const config = configFromObject(
      { port_forward: [{ network: 'r6', proto: 'tcp', host_port: 80, to: 'fd00:6::10' }] },
      't',
    );
    const p = plan([v6], config, LIVE_LIBVIRT9);
    const found = checkForwarding(
      doctorFacts(config, {
        libvirt: { networks: [v6] },
        ruleset: { live: LIVE_LIBVIRT9, plannedCommands: 1, forwards: p.forwards },
        sysctl: { ipv4Forward: '1', ipv6Forward: '0', ipv6AcceptRa1: [] },
      }),
    );
    expect(found.map((f) => [f.id, f.severity])).toEqual([['ipv6-forwarding-off', 'error']]);
    expect(found[0]!.evidence).toContain('port_forward[0] forwards to fd00:6::10');
  });

  it('runs the forward checks in diagnose()', () => {
    expect(diagnose(doctorFacts(forwardConfig())).map((f) => f.id)).toEqual(
      expect.arrayContaining(['forward-target-not-on-network', 'forward-guest-no-address']),
    );
  });
});

describe('lease watch', () => {
  const lease = (ip: string, mac: string, expiry: number) => ({
    'ip-address': ip,
    'mac-address': mac,
    'expiry-time': expiry,
  });

  it('a renewal (a new expiry, the same newest address) is no change; a new address or order is', () => {
    const a = leaseDigest(JSON.stringify([lease('192.168.122.5', '52:54:00:00:00:01', 100)]));
    expect(leaseDigest(JSON.stringify([lease('192.168.122.5', '52:54:00:00:00:01', 200)]))).toBe(a);
    expect(leaseDigest(JSON.stringify([lease('192.168.122.6', '52:54:00:00:00:01', 200)]))).not.toBe(a);
    const two = (e1: number, e2: number) =>
      leaseDigest(
        JSON.stringify([
          lease('192.168.122.5', '52:54:00:00:00:01', e1),
          lease('192.168.122.6', '52:54:00:00:00:01', e2),
        ]),
      );
    expect(two(100, 200)).not.toBe(two(200, 100));
    expect(leaseDigest('')).toBe(leaseDigest('[]'));
  });

  it('triggers a pass when a status file is rewritten with a change, not for a renewal or another bridge', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvmnftd-lease-watch-'));
    const triggers: string[] = [];
    const w = new LeaseWatch({
      trigger: (r) => triggers.push(r),
      log: pino({ level: 'silent' }),
      dir,
      bridges: () => new Set(['virbr0']),
    });
    // As leaseshelper does: a new file renamed over the old one.
    const rewrite = (file: string, leases: object[]) => {
      writeFileSync(join(dir, `${file}.new`), JSON.stringify(leases));
      renameSync(join(dir, `${file}.new`), join(dir, file));
    };
    try {
      w.set(true);
      expect(w.watching).toBe(true);
      rewrite('virbr0.status', [lease('192.168.122.5', '52:54:00:00:00:01', 100)]);
      await vi.waitFor(() => expect(triggers).toEqual(['lease change']));
      rewrite('virbr0.status', [lease('192.168.122.5', '52:54:00:00:00:01', 200)]); // renewal
      rewrite('virbr1.status', [lease('192.168.100.5', '52:54:00:00:00:02', 100)]); // not a forward's bridge
      rewrite('virbr0.status', [lease('192.168.122.7', '52:54:00:00:00:01', 300)]); // a new address
      await vi.waitFor(() => expect(triggers).toEqual(['lease change', 'lease change']));
      w.set(false);
      expect(w.watching).toBe(false);
    } finally {
      w.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('does not fail when the directory does not exist yet; it is watched once it does', () => {
    const dir = join(tmpdir(), `kvmnftd-no-dir-${process.pid}`);
    const w = new LeaseWatch({
      trigger: () => undefined,
      log: pino({ level: 'silent' }),
      dir,
      bridges: () => new Set(),
    });
    w.set(true);
    expect(w.watching).toBe(false);
    mkdirSync(dir);
    try {
      w.set(true);
      expect(w.watching).toBe(true);
    } finally {
      w.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reacts to the status files of the forwards' bridges only", () => {
    const bridges = new Set(['virbr0']);
    expect(isLeaseFile('virbr0.status', bridges)).toBe(true);
    expect(isLeaseFile('virbr1.status', bridges)).toBe(false);
    expect(isLeaseFile('virbr0.status.new', bridges)).toBe(false);
    expect(isLeaseFile('default.conf', bridges)).toBe(false);
    expect(isLeaseFile(null, bridges)).toBe(true);
  });
});

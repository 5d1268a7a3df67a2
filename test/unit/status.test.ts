// kvmnftd status: the pure evaluation, its exit codes, and the documented
// JSON schema (docs/status.schema.json) checked against real reports.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultConfig } from '../../src/config/config.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import { plan } from '../../src/nft/plan.js';
import { tableKey, type Ruleset } from '../../src/nft/ruleset.js';
import { evaluateStatus, type StatusInputs, type StatusReport } from '../../src/status/evaluate.js';
import { renderStatus } from '../../src/status/render.js';
import { fixture, REPO_ROOT } from '../helpers/cli.js';
import { LIVE_LIBVIRT9, loadCase } from '../helpers/golden.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { cloneRuleset } from '../../src/nft/ruleset.js';
import { STATUS_SCHEMA, statusSchemaErrors } from '../helpers/status-schema.js';
import { RULE_KINDS, tallyCounters } from '../../src/nft/rule-kind.js';
import { withCounters } from '../helpers/counters.js';

const DEFAULT = parseNetworkXml(readFileSync(fixture('default.xml'), 'utf8'), 'default.xml');
const ROUTED = parseNetworkXml(
  readFileSync(join(REPO_ROOT, 'test', 'golden', 'route', 'routed.xml'), 'utf8'),
  'routed.xml',
);
const config = defaultConfig();

function applied(live: Ruleset, networks = [DEFAULT, ROUTED]): Ruleset {
  return applyBatch(live, plan(networks, config, live).batch);
}

function status(over: Partial<StatusInputs>): StatusReport {
  const report = evaluateStatus({
    config,
    configSource: 'built-in defaults',
    libvirt: { source: 'xml-files', networks: [DEFAULT, ROUTED] },
    ruleset: { live: applied(LIVE_LIBVIRT9) },
    daemon: { systemd: { available: false } },
    checkedAt: new Date(0),
    ...over,
  });
  expect(statusSchemaErrors(report), JSON.stringify(report, null, 1)).toEqual([]);
  return report;
}

describe('kvmnftd status (pure)', () => {
  it("names Docker's and ufw's chains: pending before kvmnftd applied, handled after", () => {
    const docker = loadCase('foreign-docker');
    const libvirt = { source: 'xml-files' as const, networks: docker.inputs };
    const before = status({ libvirt, ruleset: { live: docker.live } });
    expect(before.foreign_chains).toEqual({ mode: 'accept', handled: [], pending: ['ip filter DOCKER-USER'] });
    expect(before.problems).toContain("kvmnftd's mark accept is not in place in ip filter DOCKER-USER");
    expect(renderStatus(before)).toContain('foreign: mark accepts in ip filter DOCKER-USER (MISSING)\n');
    const live = applyBatch(docker.live, plan(docker.inputs, config, docker.live).batch);
    const after = status({ libvirt, ruleset: { live } });
    expect(after).toMatchObject({ ok: true, foreign_chains: { handled: ['ip filter DOCKER-USER'], pending: [] } });
    expect(renderStatus(after)).toContain('foreign: mark accepts in ip filter DOCKER-USER\n');
    // A quiet host says nothing about them.
    expect(status({}).foreign_chains).toEqual({ mode: 'accept', handled: [], pending: [] });
    expect(renderStatus(status({}))).not.toContain('foreign:');
  });

  it('exit 0 when every rule is as planned', () => {
    const r = status({});
    expect(r).toMatchObject({
      ok: true,
      exit_code: 0,
      pending_commands: 0,
      problems: [],
      jumps: { input: 'ok', forward: 'ok' },
    });
    expect(r.networks.map((n) => [n.name, n.mode, n.nat, n.input, n.forward, n.ok])).toEqual([
      ['default', 'nat', 'ok', 'ok', 'ok', true],
      [ROUTED.kind === 'ok' ? ROUTED.network.name : '?', 'route', 'not-needed', 'ok', 'ok', true],
    ]);
    expect(r.ruleset.networks_with_rules).toHaveLength(2);
    expect(renderStatus(r)).toContain('OK, every rule is as planned');
  });

  it('shows the counters per network and kind, as kvmnftd metrics sums them', () => {
    const live = applyBatch(LIVE_LIBVIRT9, withCounters(plan([DEFAULT, ROUTED], config, LIVE_LIBVIRT9).batch));
    const r = status({ ruleset: { live } });
    const tally = tallyCounters(live);
    for (const n of r.networks)
      for (const kind of RULE_KINDS) {
        const t = tally.get(n.name)?.get(kind);
        expect(n.counters[kind], `${n.name} ${kind}`).toEqual(t ? { packets: t.packets, bytes: t.bytes } : null);
      }
    const nat = r.networks[0]!.counters;
    expect(nat.nat!.packets).toBeGreaterThan(0);
    expect(nat.port_forwards).toBeNull();
    expect(r.networks[1]!.counters.nat).toBeNull();
    const text = renderStatus(r);
    expect(text).toContain('PACKETS  NAT  PORT_FORWARDS  ACCEPTED_IN');
    expect(text).toMatch(new RegExp(`\\ndefault +${nat.nat!.packets} +- +${nat.accepted_in!.packets} `));
  });

  it('exit 3 when a jump is missing; the network that depends on it is not ok', () => {
    const live = cloneRuleset(applied(LIVE_LIBVIRT9));
    const input = live.tables.get(tableKey('inet', 'filter'))!.chains.get('input')!;
    input.rules = input.rules.filter((r) => r.comment !== 'kvmnftd');
    const r = status({ ruleset: { live } });
    expect(r).toMatchObject({
      ok: false,
      exit_code: 3,
      jumps: { input: 'missing', forward: 'ok' },
      pending_commands: 1,
    });
    expect(r.networks.every((n) => !n.ok)).toBe(true);
    expect(r.problems[0]).toContain('input jump to kvmnftd_input is missing');
  });

  it('exit 3 with missing and stale rules before an apply and after a change', () => {
    expect(status({ ruleset: { live: LIVE_LIBVIRT9 } }).networks[0]).toMatchObject({
      nat: 'missing',
      input: 'missing',
      forward: 'missing',
      ok: false,
    });
    const live = cloneRuleset(applied(LIVE_LIBVIRT9));
    const nat = live.tables.get(tableKey('inet', 'kvmnftd'))!.chains.get('nat_virbr0')!;
    nat.rules = nat.rules.slice(1);
    const r = status({ ruleset: { live } });
    expect(r.exit_code).toBe(3);
    expect(r.networks[0]).toMatchObject({ nat: 'stale', input: 'ok', ok: false });
  });

  it('a jump at the wrong place is stale', () => {
    const live = cloneRuleset(applied(LIVE_LIBVIRT9));
    const input = live.tables.get(tableKey('inet', 'filter'))!.chains.get('input')!;
    input.rules.push(input.rules.shift()!);
    expect(status({ ruleset: { live } }).jumps.input).toBe('stale');
  });

  it('judges the jump and the NAT base chain as the planner does (ownership.ts)', () => {
    // A tagged jump with more than the jump in it is not the rule kvmnftd writes: the planner adds its own.
    const live = cloneRuleset(applied(LIVE_LIBVIRT9));
    const input = live.tables.get(tableKey('inet', 'filter'))!.chains.get('input')!;
    input.rules[0] = { ...input.rules[0]!, expr: [{ counter: null }, ...input.rules[0]!.expr] };
    const r = status({ ruleset: { live } });
    expect(r.jumps.input).toBe('stale');
    expect(r.pending_commands).toBeGreaterThan(0);
    // The NAT base chain's policy counts too.
    const nat = cloneRuleset(applied(LIVE_LIBVIRT9));
    nat.tables.get(tableKey('inet', 'kvmnftd'))!.chains.get('postrouting')!.policy = 'drop';
    const n = status({ ruleset: { live: nat } });
    expect(n.networks[0]).toMatchObject({ name: 'default', nat: 'stale', ok: false });
    expect(n.pending_commands).toBeGreaterThan(0);
  });

  it('exit 3 when the admin table is missing', () => {
    const live = cloneRuleset(LIVE_LIBVIRT9);
    live.tables.delete(tableKey('inet', 'filter'));
    const r = status({ ruleset: { live: applied(live) } });
    expect(r).toMatchObject({ exit_code: 3, ruleset: { admin_table_present: false } });
    expect(r.problems.join('\n')).toContain('table inet filter does not exist');
  });

  it('exit 1 when libvirt or nft cannot be read, still saying what it could', () => {
    const r = status({ libvirt: { source: 'libvirt', error: 'virsh: cannot connect' } });
    expect(r).toMatchObject({
      ok: false,
      exit_code: 1,
      libvirt: { reachable: false, error: 'virsh: cannot connect' },
      jumps: { input: 'unknown', forward: 'unknown' },
      pending_commands: null,
    });
    expect(r.ruleset.networks_with_rules).toContain('default');
    expect(renderStatus(r)).toContain('rules present for: ');
    expect(status({ ruleset: { error: 'nft: permission denied' } })).toMatchObject({
      exit_code: 1,
      ruleset: { readable: false, admin_table_present: null },
    });
  });

  it('invalid networks are listed as skipped', () => {
    const bad = parseNetworkXml("<network><name>bad</name><bridge name='v*'/></network>", 'x');
    const r = status({ libvirt: { source: 'xml-files', networks: [DEFAULT, ROUTED, bad] } });
    expect(r.skipped.map((s) => s.name)).toEqual(['bad']);
    expect(r.exit_code).toBe(3);
  });

  it('reports the daemon from its files and systemd, and "unknown" without systemd', () => {
    const r = status({
      daemon: {
        pid: 42,
        state: {
          transport: 'dbus',
          status: '2 networks (default, r)',
          lastPassAt: '2026-01-01T00:00:00.000Z',
          lastChangeAt: null,
          metricsError: null,
        },
        systemd: { available: false },
      },
    });
    expect(r.daemon).toMatchObject({
      running: true,
      pid: 42,
      transport: 'dbus',
      status_text: '2 networks (default, r)',
      metrics_error: null,
      systemd: { available: false },
    });
    expect(r.exit_code).toBe(0);
    expect(renderStatus(r)).toContain('systemd: unknown (systemd is not running)');
    const sd = status({
      daemon: {
        systemd: { available: true, activeState: 'active', subState: 'running', statusText: '1 network (default)' },
      },
    });
    expect(sd.daemon).toMatchObject({
      running: true,
      pid: null,
      status_text: '1 network (default)',
      systemd: { active_state: 'active' },
    });
    expect(status({}).daemon.running).toBe(false);
  });

  it("a failing [metrics] textfile is the running daemon's problem (exit 3), shown on the daemon line", () => {
    const error = 'cannot write /var/lib/prometheus/node-exporter/kvmnftd.prom: EROFS: read-only file system';
    const state = {
      transport: 'dbus' as const,
      status: 'x',
      lastPassAt: null,
      lastChangeAt: null,
      metricsError: error,
    };
    const r = status({ daemon: { pid: 42, state, systemd: { available: false } } });
    expect(r.daemon.metrics_error).toBe(error);
    expect(r.problems).toEqual([`the daemon's metrics textfile: ${error}`]);
    expect(r.exit_code).toBe(3);
    expect(renderStatus(r)).toContain('; metrics textfile FAILING; systemd:');
    // A stale state file of a daemon that is gone says nothing.
    expect(status({ daemon: { state, systemd: { available: false } } }).daemon.metrics_error).toBeNull();
  });

  it('the schema is draft 2020-12 (what the validator compiles it as) and rejects what it should', () => {
    expect(STATUS_SCHEMA.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    const r = status({});
    expect(statusSchemaErrors({ ...r, exit_code: 2 })).toEqual([
      '/exit_code: must be equal to one of the allowed values {"allowedValues":[0,1,3]}',
    ]);
    expect(statusSchemaErrors({ ...r, extra: 1 })).toEqual([
      '/: must NOT have additional properties {"additionalProperty":"extra"}',
    ]);
    const { problems: _dropped, ...partial } = r;
    expect(statusSchemaErrors(partial)).toEqual([
      '/: must have required property \'problems\' {"missingProperty":"problems"}',
    ]);
    expect(statusSchemaErrors({ ...r, networks: [{ ...r.networks[0], nat: 'sideways' }] })).toContain(
      '/networks/0/nat: must be equal to one of the allowed values {"allowedValues":["ok","missing","stale","not-needed"]}',
    );
  });
});

// Every doctor check as a pure function of hand-made facts: no root, no nft.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { defaultConfig, type Config } from '../../src/config/config.js';
import { checkDropChains } from '../../src/doctor/drop-chains.js';
import { checkFirewalld, checkIptablesLegacy, summariseIptablesSave } from '../../src/doctor/foreign.js';
import { checkBrNetfilter, checkForwarding } from '../../src/doctor/host.js';
import { diagnose, doctorReport, renderDoctor } from '../../src/doctor/index.js';
import { checkLibvirtBackend, checkLibvirtDbus, checkLibvirtReachable } from '../../src/doctor/libvirt.js';
import { checkNftVersion, compareVersions, parseNftVersion } from '../../src/doctor/nft-version.js';
import {
  checkAdminTable,
  checkIptablesNameCollision,
  checkRulesApplied,
  checkRuleset,
} from '../../src/doctor/tables.js';
import { FINDING_ALIASES, FINDING_IDS, type DoctorFacts } from '../../src/doctor/types.js';
import type { NetworkParse } from '../../src/libvirt/model.js';
import { parseNetworkXml } from '../../src/libvirt/parse-network-xml.js';
import type { Expr } from '../../src/nft/json.js';
import { indexRuleset, type Ruleset } from '../../src/nft/ruleset.js';
import { fixture } from '../helpers/cli.js';
import { applyBatch } from '../../src/nft/batch-model.js';
import { plan } from '../../src/nft/plan.js';
import { LIVE_LIBVIRT9, loadCase } from '../helpers/golden.js';

// ---- builders -------------------------------------------------------------

interface ChainSpec {
  name: string;
  hook?: string;
  prio?: number;
  policy?: string;
  type?: string;
  rules?: Expr[][];
  comments?: Array<string | undefined>;
}

/** A ruleset index from a compact description, through the real indexer. */
function ruleset(tables: Array<{ family: string; name: string; chains: ChainSpec[] }>): Ruleset {
  const items: unknown[] = [];
  let handle = 1;
  for (const t of tables) {
    items.push({ table: { family: t.family, name: t.name, handle: handle++ } });
    for (const c of t.chains) {
      items.push({
        chain: {
          family: t.family,
          table: t.name,
          name: c.name,
          handle: handle++,
          ...(c.hook
            ? { type: c.type ?? 'filter', hook: c.hook, prio: c.prio ?? 0, policy: c.policy ?? 'accept' }
            : {}),
        },
      });
    }
    for (const c of t.chains) {
      (c.rules ?? []).forEach((expr, i) => {
        const comment = c.comments?.[i];
        items.push({
          rule: {
            family: t.family,
            table: t.name,
            chain: c.name,
            handle: handle++,
            expr,
            ...(comment ? { comment } : {}),
          },
        });
      });
    }
  }
  return indexRuleset({ nftables: items });
}

const ifname = (key: 'iifname' | 'oifname', name: string): Expr => ({
  match: { op: '==', left: { meta: { key } }, right: name },
});
const accept: Expr = { accept: null };
const drop: Expr = { drop: null };
const counter: Expr = { counter: { packets: 0, bytes: 0 } };
const jump = (target: string): Expr => ({ jump: { target } });
const xtTarget = (name: string): Expr => ({ xt: { type: 'target', name } });

const ADMIN = {
  family: 'inet',
  name: 'filter',
  chains: [
    { name: 'input', hook: 'input', policy: 'drop' },
    { name: 'forward', hook: 'forward', policy: 'drop' },
  ],
};

/** The admin's table and one more, with these chains. */
const besideAdmin = (family: string, name: string, ...chains: ChainSpec[]): Ruleset =>
  ruleset([ADMIN, { family, name, chains }]);

/** The admin's table plus iptables-nft's `ip filter` with a FORWARD policy DROP (Docker's doing) and its chains. */
const iptablesForwardDrop = (forward: Expr[][], ...chains: ChainSpec[]): Ruleset =>
  besideAdmin('ip', 'filter', { name: 'FORWARD', hook: 'forward', policy: 'drop', rules: forward }, ...chains);

const DEFAULT = parseNetworkXml(readFileSync(fixture('default.xml'), 'utf8'), 'default.xml');
const xml = (body: string): NetworkParse => parseNetworkXml(`<network>${body}</network>`, 'inline');
const ISOLATED = xml("<name>iso</name><bridge name='virbr9'/><ip address='10.9.0.1' prefix='24'/>");
const ROUTED6 = xml(
  "<name>r6</name><forward mode='route'/><bridge name='virbr6'/><ip family='ipv6' address='fd00:6::1' prefix='64'/>",
);

function facts(over: Partial<DoctorFacts> = {}, config: Config = defaultConfig()): DoctorFacts {
  return {
    config,
    libvirt: { networks: [DEFAULT] },
    ruleset: { live: ruleset([ADMIN]), plannedCommands: 0, forwards: [] },
    listeners: [],
    sysctl: { ipv4Forward: '1', ipv6Forward: '1', ipv6AcceptRa1: [] },
    nft: { version: '1.0.6' },
    bus: { libvirtDbus: 'running', firewalld: false },
    iptablesLegacy: { installed: false },
    ...over,
  };
}

const withForeign = (filter: Partial<Config['filter']>): Config => {
  const c = defaultConfig();
  return { ...c, filter: { ...c.filter, ...filter } };
};

const withLive = (live: Ruleset, planned = 0): Partial<DoctorFacts> => ({
  ruleset: { live, plannedCommands: planned, forwards: [] },
});
const ids = (fs: Array<{ id: string }>): string[] => fs.map((f) => f.id);

// ---- foreign-drop-chain --------------------------------------------------

describe('foreign-drop-chain', () => {
  it('names table, chain, hook, priority and the network of a second drop-policy admin table', () => {
    const live = besideAdmin('ip', 'extra', { name: 'in', hook: 'input', prio: 10, policy: 'drop' });
    const [f, ...rest] = checkDropChains(facts(withLive(live)));
    expect(rest).toEqual([]);
    expect(f).toMatchObject({ id: 'foreign-drop-chain', severity: 'error', networks: ['default'] });
    expect(f!.title).toContain('table ip extra chain in (hook input, priority 10)');
    expect(f!.title).toContain('default (virbr0)');
    expect(f!.evidence.join('\n')).toContain('policy drop');
    expect(f!.fix).toContain('nft insert rule ip extra in iifname "virbr0" udp dport { 53, 67, 547 } accept');
    expect(f!.fix).toContain('filter.foreign_chains_extra = ["ip extra in"]');
  });

  it('ignores the admin chain kvmnftd jumps from, accepting chains and other hooks', () => {
    const live = ruleset([
      ADMIN,
      {
        family: 'inet',
        name: 'open',
        chains: [
          { name: 'fwd', hook: 'forward', policy: 'accept' },
          { name: 'out', hook: 'output', policy: 'drop' },
        ],
      },
      { family: 'inet', name: 'nat2', chains: [{ name: 'post', type: 'nat', hook: 'postrouting', policy: 'accept' }] },
    ]);
    expect(checkDropChains(facts(withLive(live)))).toEqual([]);
  });

  it('finds Docker nft chains whose last rule drops (docker-bridges imitation)', () => {
    const live = besideAdmin('ip', 'docker-bridges', {
      name: 'filter-FORWARD',
      hook: 'forward',
      policy: 'accept',
      rules: [
        [ifname('oifname', 'docker0'), accept],
        [counter, drop],
      ],
    });
    const [f] = checkDropChains(facts(withLive(live)));
    expect(f!.title).toContain('table ip docker-bridges chain filter-FORWARD (hook forward, priority 0)');
    expect(f!.evidence.join('\n')).toContain('its last rule "counter drop" drops');
    expect(f!.evidence.join('\n')).toContain('Docker (nftables)');
    expect(f!.fix).toContain('nft insert rule ip docker-bridges filter-FORWARD iifname "virbr0" accept');
  });

  it('finds an iptables-nft FORWARD policy DROP (Docker): handled through DOCKER-USER, once kvmnftd applied', () => {
    const live = iptablesForwardDrop(
      [
        [counter, jump('DOCKER-USER')],
        [ifname('oifname', 'docker0'), counter, xtTarget('REJECT')],
      ],
      { name: 'DOCKER-USER', rules: [[counter, { return: null }]] },
    );
    const [f] = checkDropChains(facts(withLive(live)));
    expect(f!.title).toContain('table ip filter chain FORWARD (hook forward, priority 0)');
    expect(f!.severity).toBe('error');
    const seen = f!.evidence.join('\n');
    expect(seen).toContain('Docker, through iptables-nft');
    expect(seen).toContain(
      'kvmnftd handles it through docker chain ip filter DOCKER-USER, but its mark accept in ip filter DOCKER-USER ' +
        'and its marking chain inet kvmnftd mark_forward is not in place',
    );
    expect(f!.fix).toContain('kvmnftd apply');
    // With foreign_chains = "report": the manual accepts in DOCKER-USER, or the key to set.
    const report = withForeign({ foreignChains: 'report' });
    const [r] = checkDropChains(facts(withLive(live), report));
    expect(r!.evidence.join('\n')).toContain(
      'not handled: filter.foreign_chains = "report" (kvmnftd would write into ip filter DOCKER-USER)',
    );
    expect(r!.fix).toContain('Set filter.foreign_chains = "accept"');
    expect(r!.fix).toContain('iptables -I DOCKER-USER -i virbr0 -j ACCEPT');
    expect(r!.fix).toContain('iptables -I DOCKER-USER -o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT');
  });

  it.each(['foreign-docker', 'foreign-ufw'])('%s after kvmnftd applied: every drop chain handled (info)', (name) => {
    const c = loadCase(name);
    const before = checkDropChains(facts({ ...withLive(c.live), libvirt: { networks: c.inputs } }));
    expect(before.length).toBeGreaterThan(0);
    expect(before.every((f) => f.severity === 'error')).toBe(true);
    const live = applyBatch(c.live, plan(c.inputs, c.config, c.live, c.facts).batch);
    const after = checkDropChains(facts({ ...withLive(live), libvirt: { networks: c.inputs } }));
    expect(after.map((f) => f.title.split(' (hook')[0])).toEqual(before.map((f) => f.title.split(' (hook')[0]));
    for (const f of after) {
      expect(f.severity, f.title).toBe('info');
      expect(f.title).toMatch(
        /would drop .*: kvmnftd lets them through \(mark accept in ip6? filter (DOCKER-USER|ufw6?-before-(input|forward))\)/,
      );
      expect(f.evidence[0]).toMatch(/^handled by kvmnftd/);
    }
  });

  it('names what to list in filter.foreign_chains_extra for a chain of no known owner, and never a ban table', () => {
    const live = besideAdmin('ip', 'extra', { name: 'in', hook: 'input', policy: 'drop' });
    const [f] = checkDropChains(facts(withLive(live)));
    expect(f!.evidence.join('\n')).toContain('not handled: no chain kvmnftd knows');
    expect(f!.fix).toContain('filter.foreign_chains_extra = ["ip extra in"]');
    const ban = besideAdmin('inet', 'f2b-table', { name: 'f2b-chain', hook: 'input', policy: 'drop' });
    const [b] = checkDropChains(facts(withLive(ban)));
    expect(b!.evidence.join('\n')).toContain("not handled, never: it is fail2ban's table: a ban must stay a ban");
    expect(b!.fix).not.toContain('foreign_chains_extra');
    const bridge = besideAdmin('bridge', 'br', { name: 'f', hook: 'forward', policy: 'drop' });
    const brnf = facts({ ...withLive(bridge), libvirt: { networks: [ISOLATED] } });
    expect(checkDropChains(brnf)[0]!.evidence.join('\n')).toContain('kvmnftd writes only into ip, ip6 and inet');
  });

  it("counts libvirt's own accepts one jump deep (iptables backend under a FORWARD policy DROP)", () => {
    const established = { match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } };
    const live = iptablesForwardDrop(
      [
        [counter, jump('LIBVIRT_FWI')],
        [counter, jump('LIBVIRT_FWO')],
      ],
      {
        name: 'LIBVIRT_FWI',
        rules: [
          [ifname('oifname', 'virbr0'), established, counter, accept],
          [ifname('oifname', 'virbr0'), counter, xtTarget('REJECT')],
        ],
      },
      { name: 'LIBVIRT_FWO', rules: [[ifname('iifname', 'virbr0'), counter, accept]] },
    );
    expect(checkDropChains(facts(withLive(live)))).toEqual([]);
  });

  it('only flags the forward hook for isolated networks when bridged frames reach it', () => {
    const live = ruleset([
      ADMIN,
      { family: 'inet', name: 'x', chains: [{ name: 'f', hook: 'forward', policy: 'drop' }] },
      { family: 'bridge', name: 'br', chains: [{ name: 'f', hook: 'forward', policy: 'drop' }] },
    ]);
    const base = facts({ ...withLive(live), libvirt: { networks: [ISOLATED] }, sysctl: { ipv6AcceptRa1: [] } });
    expect(checkDropChains(base).map((f) => f.title.slice(0, 30))).toEqual(['table bridge br chain f (hook ']);
    const brnf = checkDropChains({ ...base, sysctl: { bridgeNfCallIptables: '1', ipv6AcceptRa1: [] } });
    expect(brnf.map((f) => f.title.slice(0, 25))).toEqual(['table inet x chain f (hoo', 'table bridge br chain f (']);
  });

  it('matches chain families to network address families', () => {
    const live = besideAdmin('ip', 'v4only', { name: 'f', hook: 'forward', policy: 'drop' });
    expect(checkDropChains(facts({ ...withLive(live), libvirt: { networks: [ROUTED6] } }))).toEqual([]);
    expect(
      checkDropChains(facts({ ...withLive(live), libvirt: { networks: [DEFAULT, ROUTED6] } }))[0]!.networks,
    ).toEqual(['default']);
  });

  it('treats a wildcard iifname accept as covering the bridge', () => {
    const wildcard = [[ifname('iifname', 'virbr*'), accept]];
    const live = besideAdmin('inet', 'x', { name: 'i', hook: 'input', policy: 'drop', rules: wildcard });
    expect(checkDropChains(facts(withLive(live)))).toEqual([]);
  });
});

// ---- host settings ----------------------------------------------------------

describe('forwarding sysctls', () => {
  it('ipv4-forwarding-off only while a network forwards IPv4', () => {
    expect(ids(checkForwarding(facts({ sysctl: { ipv4Forward: '0', ipv6AcceptRa1: [] } })))).toEqual([
      'ipv4-forwarding-off',
    ]);
    expect(
      checkForwarding(facts({ sysctl: { ipv4Forward: '0', ipv6AcceptRa1: [] }, libvirt: { networks: [ISOLATED] } })),
    ).toEqual([]);
    expect(checkForwarding(facts({ sysctl: { ipv4Forward: '1', ipv6AcceptRa1: [] } }))).toEqual([]);
  });
  it('ipv6-forwarding-off names the accept_ra interfaces to fix first', () => {
    const [f] = checkForwarding(
      facts({
        sysctl: { ipv4Forward: '1', ipv6Forward: '0', ipv6AcceptRa1: ['eth0'] },
        libvirt: { networks: [ROUTED6] },
      }),
    );
    expect(f).toMatchObject({ id: 'ipv6-forwarding-off', severity: 'warning', networks: ['r6'] });
    expect(f!.fix).toContain('sysctl -w net.ipv6.conf.eth0.accept_ra=2');
  });
});

describe('br-netfilter', () => {
  it('warns when bridge-nf-call-iptables = 1 and networks are active', () => {
    expect(checkBrNetfilter(facts({ sysctl: { bridgeNfCallIptables: '1', ipv6AcceptRa1: [] } }))[0]).toMatchObject({
      id: 'br-netfilter',
      severity: 'warning',
    });
    expect(
      checkBrNetfilter(
        facts({ sysctl: { bridgeNfCallIptables: '1', ipv6AcceptRa1: [] }, libvirt: { networks: [] } }),
      )[0]!.severity,
    ).toBe('info');
    expect(
      checkBrNetfilter(facts({ sysctl: { bridgeNfCallIptables: '0', bridgeNfCallIp6tables: '0', ipv6AcceptRa1: [] } })),
    ).toEqual([]);
    expect(checkBrNetfilter(facts({ sysctl: { ipv6AcceptRa1: [] } }))).toEqual([]); // module not loaded
  });
});

// ---- libvirt ------------------------------------------------------------------

describe('libvirt', () => {
  it('libvirt-firewall-backend names the backend seen in the ruleset', () => {
    const [f] = checkLibvirtBackend(facts(withLive(LIVE_LIBVIRT9)));
    expect(f).toMatchObject({ id: 'libvirt-firewall-backend', severity: 'info' });
    expect(f!.title).toContain('iptables');
    const nftCfg = checkLibvirtBackend(facts({ ...withLive(LIVE_LIBVIRT9), libvirtConfiguredBackend: 'nftables' }));
    expect(nftCfg[0]!.evidence.join('\n')).toContain('differs from the chains in the ruleset');
  });
  it('libvirt-chains-missing after a flush, with the FirewallD1.Reloaded fix', () => {
    const found = checkLibvirtBackend(facts(withLive(ruleset([ADMIN]))));
    expect(ids(found)).toEqual(['libvirt-firewall-backend', 'libvirt-chains-missing']);
    expect(found[1]!.fix).toContain('org.fedoraproject.FirewallD1.Reloaded');
    expect(ids(checkLibvirtBackend(facts({ ...withLive(ruleset([ADMIN])), libvirt: { networks: [] } })))).toEqual([
      'libvirt-firewall-backend',
    ]);
  });
  it('libvirt-chains-missing says when the daemon gave up broadcasting, and what then', () => {
    const daemonDegraded =
      "libvirt's own firewall chains are still missing after 3 FirewallD1.Reloaded broadcasts: libvirt does not hear them";
    const [, f] = checkLibvirtBackend(facts({ ...withLive(ruleset([ADMIN])), daemonDegraded }));
    expect(f!.evidence).toContain(`the kvmnftd daemon gave up: ${daemonDegraded}`);
    expect(f!.fix).toMatch(/iptables-legacy.*systemctl restart libvirtd/s);
  });
  it('libvirt-dbus-unavailable when org.libvirt neither runs nor activates, or there is no bus', () => {
    expect(checkLibvirtDbus(facts())).toEqual([]);
    expect(checkLibvirtDbus(facts({ bus: { libvirtDbus: 'activatable', firewalld: false } }))).toEqual([]);
    expect(checkLibvirtDbus(facts({ bus: { libvirtDbus: 'absent', firewalld: false } }))[0]!.fix).toContain(
      'apt-get install libvirt-dbus',
    );
    expect(checkLibvirtDbus(facts({ bus: { error: 'connect ENOENT' } }))[0]!.id).toBe('libvirt-dbus-unavailable');
  });
  it('libvirt-unreachable and network-invalid', () => {
    expect(ids(checkLibvirtReachable(facts({ libvirt: { error: 'virsh: no socket' } })))).toEqual([
      'libvirt-unreachable',
    ]);
    const bad = xml("<name>bad</name><bridge name='v*'/><ip address='10.1.0.1' prefix='24'/>");
    expect(ids(checkLibvirtReachable(facts({ libvirt: { networks: [DEFAULT, bad] } })))).toEqual(['network-invalid']);
  });
});

// ---- nft version ----------------------------------------------------------------

describe('nft-too-old and nft-unusable', () => {
  it('parses and compares versions', () => {
    expect(parseNftVersion('nftables v1.0.6 (Lester Gooch #5)')).toBe('1.0.6');
    expect(compareVersions('1.0.10', '1.0.6')).toBe(1);
    expect(compareVersions('0.9.8', '1.0.6')).toBe(-1);
  });
  it('warns below the tested floor (nft-too-old), errors when nft cannot run (nft-unusable)', () => {
    expect(checkNftVersion(facts())).toEqual([]);
    expect(checkNftVersion(facts({ nft: { version: '1.1.3' } }))).toEqual([]);
    expect(checkNftVersion(facts({ nft: { version: '0.9.8' } }))[0]).toMatchObject({
      id: 'nft-too-old',
      severity: 'warning',
    });
    expect(checkNftVersion(facts({ nft: { error: 'nft not found' } }))[0]).toMatchObject({
      id: 'nft-unusable',
      severity: 'error',
      evidence: ['nft not found'],
    });
  });
});

// ---- tables -----------------------------------------------------------------------

describe('tables', () => {
  it('admin-table-missing suggests the table that does drop', () => {
    const live = ruleset([{ family: 'ip', name: 'fw', chains: [{ name: 'input', hook: 'input', policy: 'drop' }] }]);
    const [f] = checkAdminTable(facts(withLive(live)));
    expect(f).toMatchObject({ id: 'admin-table-missing', severity: 'error' });
    expect(f!.fix).toContain('family = "ip" table = "fw"');
    expect(checkAdminTable(facts())).toEqual([]);
    const noForward = ruleset([
      { family: 'inet', name: 'filter', chains: [{ name: 'input', hook: 'input', policy: 'drop' }] },
    ]);
    expect(checkAdminTable(facts(withLive(noForward)))[0]).toMatchObject({
      id: 'admin-chain-missing',
      title: expect.stringContaining('forward') as unknown,
    });
  });
  it('rules-not-applied when the plan is not empty', () => {
    expect(checkRulesApplied(facts(withLive(ruleset([ADMIN]), 21)))[0]!.title).toContain('21 nft commands');
    expect(checkRulesApplied(facts())).toEqual([]);
  });
  it('rules-not-applied with filter.jump = "none" when the admin chain does not jump to ours', () => {
    const config = defaultConfig();
    config.filter.jump = 'none';
    const own = { name: 'kvmnftd_input', rules: [[ifname('iifname', 'virbr0'), accept]] };
    const without = ruleset([{ ...ADMIN, chains: [...ADMIN.chains, own] }]);
    const [f] = checkRulesApplied(facts(withLive(without), config));
    expect(f).toMatchObject({ id: 'rules-not-applied', severity: 'error' });
    expect(f!.title).toContain('inet filter input does not jump to kvmnftd_input');
    const withJump = ruleset([
      {
        ...ADMIN,
        chains: [
          { name: 'input', hook: 'input', policy: 'drop', rules: [[jump('kvmnftd_input')]] },
          ADMIN.chains[1]!,
          own,
        ],
      },
    ]);
    expect(checkRulesApplied(facts(withLive(withJump), config))).toEqual([]);
  });
  it('ruleset-unreadable', () => {
    expect(ids(checkRuleset(facts({ ruleset: { error: 'nft: Operation not permitted' } })))).toEqual([
      'ruleset-unreadable',
    ]);
  });
  it("iptables-table-collision for a native table ip nat, not for iptables-nft's own", () => {
    const own = ruleset([
      { family: 'ip', name: 'nat', chains: [{ name: 'POSTROUTING', type: 'nat', hook: 'postrouting', prio: 100 }] },
    ]);
    expect(checkIptablesNameCollision(facts(withLive(own)))).toEqual([]);
    expect(checkIptablesNameCollision(facts(withLive(LIVE_LIBVIRT9)))).toEqual([]);
    const admins = ruleset([
      { family: 'ip', name: 'nat', chains: [{ name: 'postrouting', type: 'nat', hook: 'postrouting', prio: 100 }] },
    ]);
    const [f] = checkIptablesNameCollision(facts(withLive(admins)));
    expect(f).toMatchObject({ id: 'iptables-table-collision', severity: 'warning' });
    expect(f!.fix).toContain('nft delete table ip nat');
  });
});

// ---- other firewall managers ---------------------------------------------------------

describe('firewalld and iptables-legacy', () => {
  it('firewalld-running says kvmnftd is the wrong tool', () => {
    expect(checkFirewalld(facts())).toEqual([]);
    const [f] = checkFirewalld(facts({ bus: { libvirtDbus: 'running', firewalld: true } }));
    expect(f).toMatchObject({ id: 'firewalld-running', severity: 'error' });
    expect(f!.title).toContain('wrong tool');
  });
  const SAVE =
    '# Generated by iptables-save v1.8.9\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -i virbr0 -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n';
  it('summarises an iptables-save dump', () => {
    expect(summariseIptablesSave(SAVE, 'iptables-legacy')).toEqual({
      rules: ['iptables-legacy -t filter -A FORWARD -i virbr0 -j ACCEPT', 'iptables-legacy -t filter -A INPUT -j DROP'],
      dropPolicies: ['iptables-legacy -t filter -P FORWARD DROP'],
    });
  });
  it('iptables-legacy-rules: error when they drop, nothing when empty or not installed', () => {
    expect(checkIptablesLegacy(facts())).toEqual([]);
    expect(checkIptablesLegacy(facts({ iptablesLegacy: { installed: true, ipv4: '', ipv6: '' } }))).toEqual([]);
    const [f] = checkIptablesLegacy(facts({ iptablesLegacy: { installed: true, ipv4: SAVE, ipv6: '' } }));
    expect(f).toMatchObject({ id: 'iptables-legacy-rules', severity: 'error', networks: ['default'] });
    expect(f!.evidence).toContain('iptables-legacy -t filter -P FORWARD DROP');
    const quiet = checkIptablesLegacy(
      facts({
        iptablesLegacy: {
          installed: true,
          ipv4: '*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n',
          ipv6: '',
        },
      }),
    );
    expect(quiet[0]!.severity).toBe('warning');
  });
});

// ---- the whole doctor ----------------------------------------------------------------

describe('diagnose', () => {
  it('sorts errors first and exits 3 when anything is above info', () => {
    const all = diagnose(
      facts({
        ...withLive(LIVE_LIBVIRT9),
        bus: { libvirtDbus: 'absent', firewalld: true },
        sysctl: { ipv4Forward: '0', ipv6AcceptRa1: [] },
      }),
    );
    expect(ids(all)).toEqual([
      'firewalld-running',
      'ipv4-forwarding-off',
      'libvirt-firewall-backend',
      'libvirt-dbus-unavailable',
    ]);
    const report = doctorReport(all, new Date(0));
    expect(report).toMatchObject({
      schema: 'kvmnftd.doctor/1',
      exit_code: 3,
      summary: { error: 2, warning: 0, info: 2 },
    });
    expect(renderDoctor(report)).toContain('ERROR [firewalld-running]');
  });
  it('renamed findings: the new id in the text and first in ids; for one release the old id in the JSON id', () => {
    const renamed = [
      ...checkNftVersion(facts({ nft: { error: 'nft not found' } })),
      ...checkAdminTable(
        facts(withLive(ruleset([{ family: 'inet', name: 'filter', chains: [{ name: 'input', hook: 'input' }] }]))),
      ),
      ...checkIptablesNameCollision(
        facts(withLive(ruleset([{ family: 'ip', name: 'filter', chains: [{ name: 'mine', hook: 'input' }] }]))),
      ),
    ];
    expect(ids(renamed)).toEqual(['nft-unusable', 'admin-chain-missing', 'iptables-table-collision']);
    const report = doctorReport(
      [...renamed, ...checkFirewalld(facts({ bus: { libvirtDbus: 'absent', firewalld: true } }))],
      new Date(0),
    );
    expect(report.findings.map((f) => [f.id, f.ids])).toEqual([
      ['nft-too-old', ['nft-unusable', 'nft-too-old']],
      ['admin-table-missing', ['admin-chain-missing', 'admin-table-missing']],
      ['ip-nat-collision', ['iptables-table-collision', 'ip-nat-collision']],
      ['firewalld-running', ['firewalld-running']],
    ]);
    const text = renderDoctor(report);
    expect(text).toContain('ERROR [nft-unusable] (was nft-too-old) nft cannot be run');
    expect(text).toContain('ERROR [firewalld-running] firewalld is running');
    // Aliases belong to current ids, and an alias is never itself renamed.
    for (const [id, old] of Object.entries(FINDING_ALIASES)) {
      expect(FINDING_IDS, id).toContain(id);
      expect(Object.keys(FINDING_ALIASES), old).not.toContain(old);
    }
  });
  it('a healthy host has only notes and exits 0', () => {
    const report = doctorReport(diagnose(facts(withLive(LIVE_LIBVIRT9))), new Date(0));
    expect(ids(report.findings)).toEqual(['libvirt-firewall-backend']);
    expect(report.exit_code).toBe(0);
  });
});

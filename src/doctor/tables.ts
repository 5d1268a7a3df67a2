// The admin's table and kvmnftd's rules in it; an admin `table ip nat` that
// fights iptables-nft over the name. Pure.
import { libvirtBackendsPresent } from '../nft/libvirt-chains.js';
import {
  adminBaseChainOf,
  adminTable,
  isAdminTable,
  jumpTarget,
  missingBaseChains,
  OWN_CHAINS,
  OWNER_MARKER_CHAIN,
  ownTableClaim,
} from '../nft/ownership.js';
import { dropsByDefault } from './drop-chains.js';
import { activeNetworks, cannotGather, liveRuleset, type DoctorFacts, type Finding } from './types.js';

export function checkRuleset(facts: DoctorFacts): Finding[] {
  if (!('error' in facts.ruleset)) return [];
  return cannotGather(facts.ruleset.error, {
    id: 'ruleset-unreadable',
    severity: 'error',
    title: 'cannot read the nftables ruleset: nothing about it can be checked',
    fix: 'Run as root (CAP_NET_ADMIN) and install nftables: apt-get install nftables.',
  });
}

/** `nat.table` names a table kvmnftd did not create (and will not adopt): it applies no NAT. */
export function checkOwnTable(facts: DoctorFacts): Finding[] {
  const live = liveRuleset(facts);
  if (!live) return [];
  const claim = ownTableClaim(live, facts.config);
  if (claim.kind !== 'foreign') return [];
  const name = facts.config.nat.table;
  return [
    {
      id: 'nat-table-not-owned',
      severity: 'error',
      title: `table inet ${name} (nat.table) is not kvmnftd's: kvmnftd neither changes nor deletes it, and applies no NAT rules`,
      evidence: [
        `table inet ${name} has no ${OWNER_MARKER_CHAIN} chain, kvmnftd's mark`,
        `${claim.why}, so it is not the table kvmnftd 0.1.0 wrote either`,
      ],
      fix:
        `Give kvmnftd a table of its own in /etc/kvmnftd/kvmnftd.toml: [nat] table = "kvmnftd" (any name no ` +
        `other table uses), then systemctl reload kvmnftd. If this table really is a leftover of kvmnftd, ` +
        `delete it: nft delete table inet ${name}.`,
      networks: activeNetworks(facts)
        .filter((n) => n.mode === 'nat')
        .map((n) => n.name),
    },
  ];
}

export function checkAdminTable(facts: DoctorFacts): Finding[] {
  const live = liveRuleset(facts);
  const nets = activeNetworks(facts);
  if (!live || nets.length === 0) return [];
  const { family, table } = facts.config.filter;
  const admin = adminTable(live, facts.config);
  if (!admin) {
    const candidates = [...live.tables.values()].filter((t) =>
      [...t.chains.values()].some(
        (c) => (c.hook === 'input' || c.hook === 'forward') && dropsByDefault(c) !== undefined,
      ),
    );
    return [
      {
        id: 'admin-table-missing',
        severity: 'error',
        title: `the admin table ${family} ${table} (filter.family/filter.table) does not exist: kvmnftd applies only its NAT rules`,
        evidence: [
          `no table ${family} ${table} in nft list tables`,
          candidates.length > 0
            ? `tables with a dropping input/forward chain: ${candidates.map((t) => `${t.family} ${t.name}`).join(', ')}`
            : 'no table has a dropping input/forward chain',
        ],
        fix:
          candidates.length > 0
            ? `Point kvmnftd at your table in /etc/kvmnftd/kvmnftd.toml: [filter] family = "${candidates[0]!.family}" table = "${candidates[0]!.name}" (and input_chain/forward_chain if your chains are named differently), then kvmnftd apply.`
            : `Load your ruleset (systemctl start nftables), or nothing drops guest traffic and no filter rules are needed.`,
      },
    ];
  }
  const missing = missingBaseChains(admin, facts.config);
  if (missing.length > 0) {
    return [
      {
        id: 'admin-chain-missing',
        severity: 'error',
        title: `base chain${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${family} ${table} do${missing.length > 1 ? '' : 'es'} not exist: kvmnftd has nowhere to put its jump`,
        evidence: [`chains of ${family} ${table}: ${[...admin.chains.keys()].join(', ') || 'none'}`],
        fix: `Name your base chains in /etc/kvmnftd/kvmnftd.toml: [filter] input_chain = "..." forward_chain = "...", then kvmnftd apply.`,
      },
    ];
  }
  return [];
}

export function checkRulesApplied(facts: DoctorFacts): Finding[] {
  if (!('live' in facts.ruleset) || !('networks' in facts.libvirt)) return [];
  const n = facts.ruleset.plannedCommands;
  if (n === 0) return unjumpedOwnChains(facts);
  return [
    {
      id: 'rules-not-applied',
      severity: 'error',
      title: `kvmnftd's rules are not (all) in place: the next apply would run ${n} nft command${n === 1 ? '' : 's'}`,
      evidence: [`kvmnftd plan: ${n} command${n === 1 ? '' : 's'}`],
      fix: 'See what is missing with kvmnftd plan --diff (or kvmnftd status). Then kvmnftd apply once, or let the daemon keep them: systemctl enable --now kvmnftd.',
    },
  ];
}

/** filter.jump = "none": the admin's own rules must jump to kvmnftd's chains. Do they? */
function unjumpedOwnChains(facts: DoctorFacts): Finding[] {
  const live = liveRuleset(facts);
  const { family, table, jump } = facts.config.filter;
  const admin = live ? adminTable(live, facts.config) : undefined;
  if (jump !== 'none' || !admin || activeNetworks(facts).length === 0) return [];
  const out: Finding[] = [];
  for (const own of OWN_CHAINS) {
    const base = adminBaseChainOf(own, facts.config);
    if (!admin.chains.get(own)?.rules.length) continue;
    if ((admin.chains.get(base)?.rules ?? []).some((r) => jumpTarget(r) === own)) continue;
    out.push({
      id: 'rules-not-applied',
      severity: 'error',
      title: `filter.jump = "none" but ${family} ${table} ${base} does not jump to ${own}: kvmnftd's rules there are never reached`,
      evidence: [`chain ${own} has ${admin.chains.get(own)!.rules.length} rules`, `no rule in ${base} jumps to it`],
      fix: `Add the jump to your ruleset file, in chain ${base} before any drop: jump ${own}  (then nft -f your file), or set filter.jump = "first" and let kvmnftd add it.`,
    });
  }
  return out;
}

const IPTABLES_CHAINS: Record<string, string[]> = {
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
};

/**
 * iptables-nft owns `ip|ip6 filter|nat|mangle` by name. Base chains there that
 * iptables does not know make `iptables -t nat ...` fail ("incompatible"),
 * which breaks libvirt's iptables backend and Docker.
 */
export function checkIptablesNameCollision(facts: DoctorFacts): Finding[] {
  const live = liveRuleset(facts);
  if (!live) return [];
  const out: Finding[] = [];
  const libvirtIptables = libvirtBackendsPresent(live).includes('iptables');
  for (const t of live.tables.values()) {
    const builtin = t.family === 'ip' || t.family === 'ip6' ? IPTABLES_CHAINS[t.name] : undefined;
    if (!builtin) continue;
    const foreign = [...t.chains.values()].filter((c) => c.hook !== undefined && !builtin.includes(c.name));
    if (foreign.length === 0) continue;
    const isAdmin = isAdminTable(t, facts.config);
    const cmd = t.family === 'ip6' ? 'ip6tables' : 'iptables';
    out.push({
      id: 'iptables-table-collision',
      severity: t.name === 'nat' || libvirtIptables ? 'warning' : 'info',
      title: `table ${t.family} ${t.name} has nft base chains iptables-nft does not know (${foreign.map((c) => c.name).join(', ')}): ${cmd} -t ${t.name} fails on it, and libvirt's iptables backend and Docker use exactly that table`,
      evidence: [
        ...foreign.map((c) => `chain ${c.name}: type ${c.type ?? '?'} hook ${c.hook ?? '?'} priority ${c.prio ?? 0}`),
        `${cmd}-nft -t ${t.name} -S then says: table \`${t.name}' is incompatible, use 'nft' tool.`,
        ...(isAdmin ? ['this is the table kvmnftd is configured to use (filter.table)'] : []),
      ],
      fix:
        t.name === 'nat'
          ? `kvmnftd does libvirt's NAT in its own table (inet ${facts.config.nat.table}): the masquerade snippet of the usual how-tos is not needed. Rename or remove your table: nft delete table ${t.family} ${t.name}, and in your nftables.conf call it e.g. table ${t.family} admin_nat.`
          : `Rename your table in nftables.conf (e.g. table inet filter instead of ${t.family} ${t.name}) and set [filter] table accordingly; leave ${t.family} ${t.name} to iptables-nft.`,
    });
  }
  return out;
}

// Every base chain on the input or forward hook, in any table and family,
// that drops what it does not accept (policy drop, or an unconditional
// drop/reject as its last rule) and that kvmnftd's jump does not reach. In
// nftables an accept ends only the current base chain: the packet still
// traverses every other base chain on the same hook, and a drop anywhere is
// final (docs/troubleshooting.md). So each such chain drops guest traffic
// unless it accepts it itself: a second admin table, Docker's chains, an
// iptables-nft FORWARD policy DROP. Each is named, with whether kvmnftd
// handles it (filter.foreign_chains: which chain of the owners table it
// reaches, and whether kvmnftd's mark accept and marking chain are in
// place), or why not. Pure.
import { parseChainRef, refusedChainRef } from '../config/chain-ref.js';
import type { Config } from '../config/config.js';
import { modeForwards, type Network } from '../libvirt/model.js';
import { foreignTargets, targetText, type ForeignTarget } from '../nft/foreign-chains.js';
import type { Expr, Json } from '../nft/json.js';
import {
  adminBaseChainOf,
  exprJumpTarget,
  isAdminTable,
  isOwnChain,
  MARK_FORWARD_CHAIN,
  MARK_INPUT_CHAIN,
  networkAccepted,
  OWN_CHAINS,
  ownChainOn,
  ownTable,
} from '../nft/ownership.js';
import { describeRule } from '../nft/render-text.js';
import { ruleKey, type LiveChain, type LiveRule, type LiveTable, type Ruleset } from '../nft/ruleset.js';
import { activeNetworks, liveRuleset, type DoctorFacts, type Finding } from './types.js';

const FAMILIES = new Set(['ip', 'ip6', 'inet', 'bridge']);
const IPTABLES_BUILTIN = new Set(['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING']);
const MAX_DEPTH = 4;

type Obj = { [key: string]: Json };
const isObj = (v: Json | undefined): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function verdictOf(rule: LiveRule): 'accept' | 'drop' | 'reject' | 'return' | { jump: string } | undefined {
  for (const e of rule.expr) {
    if ('accept' in e) return 'accept';
    if ('drop' in e) return 'drop';
    if ('reject' in e) return 'reject';
    if ('return' in e) return 'return';
    const target = exprJumpTarget(e);
    if (target !== undefined) return { jump: target };
    const xt = e['xt'];
    if (isObj(xt) && xt['type'] === 'target') {
      const name = xt['name'];
      if (name === 'ACCEPT') return 'accept';
      if (name === 'DROP') return 'drop';
      if (name === 'REJECT') return 'reject';
      if (name === 'RETURN') return 'return';
    }
  }
  return undefined;
}

/** True when the rule has no match at all: it applies to every packet that reaches it. */
function unconditional(rule: LiveRule): boolean {
  return rule.expr.every(
    (e) =>
      'counter' in e ||
      'drop' in e ||
      'reject' in e ||
      'log' in e ||
      ('xt' in e && isObj(e['xt']) && e['xt']['type'] === 'target'),
  );
}

/** How the chain ends for a packet no rule accepted: its policy, or an unconditional drop/reject last rule. */
export function dropsByDefault(chain: LiveChain): string | undefined {
  const last = chain.rules[chain.rules.length - 1];
  if (last && unconditional(last)) {
    const v = verdictOf(last);
    if (v === 'drop' || v === 'reject')
      return `its last rule "${describeRule(last.expr, last.comment)}" ${v === 'drop' ? 'drops' : 'rejects'} everything that reaches it`;
  }
  if (chain.policy === 'drop') return 'policy drop';
  return undefined;
}

function ifnameMatches(pattern: string, name: string): boolean {
  return pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : pattern === name;
}

/** Does the rule match packets in (iif) or out (oif) of the bridge by name? */
function matchesBridge(expr: Expr[], key: 'iifname' | 'oifname', bridge: string): boolean {
  return expr.some((e) => {
    const m = e['match'];
    if (!isObj(m) || m['op'] === '!=') return false;
    const left = m['left'];
    if (!isObj(left) || !isObj(left['meta']) || left['meta']['key'] !== key) return false;
    const right = m['right'];
    if (typeof right === 'string') return ifnameMatches(right, bridge);
    if (isObj(right) && Array.isArray(right['set']))
      return right['set'].some((x) => typeof x === 'string' && ifnameMatches(x, bridge));
    return false;
  });
}

/**
 * Does the chain (or a chain it jumps to, in the same table) accept traffic
 * in (iif) or out (oif) of the bridge? A jump whose own match names the
 * bridge counts when its target accepts anything.
 */
function accepts(
  table: LiveTable,
  chain: LiveChain,
  key: 'iifname' | 'oifname',
  bridge: string,
  depth = 0,
  viaBridgeMatch = false,
): boolean {
  if (depth > MAX_DEPTH) return false;
  for (const rule of chain.rules) {
    const v = verdictOf(rule);
    const named = viaBridgeMatch || matchesBridge(rule.expr, key, bridge);
    if (v === 'accept' && named) return true;
    if (typeof v === 'object') {
      if (isOwnChain(v.jump)) return true; // kvmnftd's jump
      const target = table.chains.get(v.jump);
      if (target && accepts(table, target, key, bridge, depth + 1, named)) return true;
    }
  }
  return false;
}

function familyCarries(family: string, net: Network): boolean {
  if (family === 'ip') return net.ips.some((ip) => ip.cidr.family === 4);
  if (family === 'ip6') return net.ips.some((ip) => ip.cidr.family === 6);
  return true;
}

function owner(table: LiveTable, chain: LiveChain): { who: string; iptables: boolean; docker: boolean } {
  const docker = /docker/i.test(table.name) || [...table.chains.keys()].some((c) => c.startsWith('DOCKER'));
  const iptables =
    (table.family === 'ip' || table.family === 'ip6') &&
    ['filter', 'nat', 'mangle', 'raw', 'security'].includes(table.name) &&
    IPTABLES_BUILTIN.has(chain.name);
  if (docker && iptables) return { who: 'Docker, through iptables-nft', iptables, docker };
  if (docker) return { who: 'Docker (nftables)', iptables, docker };
  if (iptables) return { who: 'iptables-nft (iptables rules shown as nft)', iptables, docker };
  return { who: 'another nft table', iptables, docker };
}

function fixFor(
  table: LiveTable,
  chain: LiveChain,
  hook: 'input' | 'forward',
  nets: Network[],
  ipt: { iptables: boolean; docker: boolean },
  adminKey: string,
): string {
  const cmds: string[] = [];
  const ip = table.family === 'ip6' ? 'ip6tables' : 'iptables';
  for (const n of nets) {
    const br = n.bridge;
    if (ipt.iptables) {
      const into = ipt.docker && hook === 'forward' && table.chains.has('DOCKER-USER') ? 'DOCKER-USER' : chain.name;
      if (hook === 'input') cmds.push(`${ip} -I ${into} -i ${br} -j ACCEPT`);
      else
        cmds.push(
          `${ip} -I ${into} -i ${br} -j ACCEPT`,
          `${ip} -I ${into} -o ${br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
        );
    } else if (hook === 'input') {
      cmds.push(
        `nft insert rule ${table.family} ${table.name} ${chain.name} iifname "${br}" udp dport { 53, 67, 547 } accept`,
        `nft insert rule ${table.family} ${table.name} ${chain.name} iifname "${br}" tcp dport 53 accept`,
      );
    } else {
      cmds.push(
        `nft insert rule ${table.family} ${table.name} ${chain.name} iifname "${br}" accept`,
        `nft insert rule ${table.family} ${table.name} ${chain.name} oifname "${br}" ct state established,related accept`,
      );
    }
  }
  const lasting = ipt.docker
    ? 'Docker re-creates its chains when it restarts: keep these in a unit that runs after docker.service (iptables: DOCKER-USER is the chain Docker leaves alone).'
    : ipt.iptables
      ? 'Save them where your iptables rules are restored from (e.g. /etc/iptables/rules.v4), or remove the drop policy if nothing needs it.'
      : `Add the same rules to the file that defines table ${table.family} ${table.name}, or merge that table into the one kvmnftd manages (filter.table).`;
  return `Accept the guests' traffic in this chain too (kvmnftd's rules live in ${adminKey} only):\n${cmds.map((c) => `  ${c}`).join('\n')}\n${lasting}`;
}

// ---- does kvmnftd handle the chain? ------------------------------------------

/** Whether kvmnftd lets its accepted traffic through a foreign drop chain, and if not, why. */
export type Handling =
  | { kind: 'handled'; via: ForeignTarget }
  | { kind: 'not-in-place'; via: ForeignTarget; missing: string }
  | { kind: 'report'; via: ForeignTarget | undefined }
  | { kind: 'not-an-entry' }
  | { kind: 'never'; why: string };

/** The chain and the chains it jumps to in its table (a few levels deep). */
function reachable(table: LiveTable, chain: LiveChain, depth = 0, seen = new Set<string>()): string[] {
  if (depth > MAX_DEPTH || seen.has(chain.name)) return [];
  seen.add(chain.name);
  const out = [chain.name];
  for (const rule of chain.rules) {
    const v = verdictOf(rule);
    const target = typeof v === 'object' ? table.chains.get(v.jump) : undefined;
    if (target) out.push(...reachable(table, target, depth + 1, seen));
  }
  return out;
}

export function handling(live: Ruleset, table: LiveTable, chain: LiveChain, config: Config): Handling {
  const family = table.family;
  const ref = parseChainRef(`${family} ${table.name} ${chain.name}`);
  if (!ref)
    return { kind: 'never', why: 'kvmnftd writes only into ip, ip6 and inet tables, chains named as nft names' };
  const why = refusedChainRef(ref, {
    natTable: config.nat.table,
    ownChains: OWN_CHAINS,
    admin: { family: config.filter.family, table: config.filter.table, chains: [] },
  });
  if (why !== undefined) return { kind: 'never', why };
  const names = reachable(table, chain);
  const via = foreignTargets(config).find(
    (t) => t.family === family && t.table === table.name && names.includes(t.chain),
  );
  if (config.filter.foreignChains === 'report') return { kind: 'report', via };
  if (!via) return { kind: 'not-an-entry' };
  const markChain = chain.hook === 'input' ? MARK_INPUT_CHAIN : MARK_FORWARD_CHAIN;
  const marking = ownTable(live, config)?.chains.get(markChain);
  const target = table.chains.get(via.chain);
  const ruleInPlace = target?.rules.some((r) => ruleKey(r) === ruleKey(via.rule)) ?? false;
  const missing = [
    ...(ruleInPlace ? [] : [`its mark accept in ${targetText(via)}`]),
    ...(marking ? [] : [`its marking chain inet ${config.nat.table} ${markChain}`]),
  ];
  return missing.length === 0
    ? { kind: 'handled', via }
    : { kind: 'not-in-place', via, missing: missing.join(' and ') };
}

/** The finding's handling line (evidence) and what to do about it, per kind. */
function handlingText(h: Handling, table: LiveTable, chain: LiveChain, manual: string): { seen: string; fix: string } {
  const ref = `"${table.family} ${table.name} ${chain.name}"`;
  switch (h.kind) {
    case 'handled':
      return {
        seen:
          `handled by kvmnftd (filter.foreign_chains = "accept"): ${h.via.owner} chain ${targetText(h.via)} ` +
          'holds its mark accept, and its marking chain is in place',
        fix: 'Nothing to do: kvmnftd puts its mark accept back whenever the owner rebuilds the chain.',
      };
    case 'not-in-place':
      return {
        seen: `kvmnftd handles it through ${h.via.owner} chain ${targetText(h.via)}, but ${h.missing} is not in place`,
        fix:
          'Start the daemon (systemctl start kvmnftd) or run kvmnftd apply; ' +
          'kvmnftd status says what else is pending.',
      };
    case 'report':
      return {
        seen:
          'not handled: filter.foreign_chains = "report"' +
          (h.via ? ` (kvmnftd would write into ${targetText(h.via)})` : ''),
        fix: h.via
          ? `Set filter.foreign_chains = "accept" in kvmnftd.toml, or ${lower(manual)}`
          : `List it in filter.foreign_chains_extra = [${ref}] with filter.foreign_chains = "accept", ` +
            `or ${lower(manual)}`,
      };
    case 'not-an-entry':
      return {
        seen: "not handled: no chain kvmnftd knows (Docker's DOCKER-USER, ufw's ufw-before-*) is reached from it",
        fix:
          `Let kvmnftd write its one mark accept there: filter.foreign_chains_extra = [${ref}] in kvmnftd.toml. ` +
          `Or ${lower(manual)}`,
      };
    case 'never':
      return { seen: `not handled, never: ${h.why}`, fix: manual };
  }
}

const lower = (s: string): string => s.charAt(0).toLowerCase() + s.slice(1);

export function checkDropChains(facts: DoctorFacts): Finding[] {
  const live = liveRuleset(facts);
  if (!live) return [];
  const nets = activeNetworks(facts);
  const { config } = facts;
  const brNf = facts.sysctl.bridgeNfCallIptables === '1';
  const findings: Finding[] = [];
  for (const table of live.tables.values()) {
    if (!FAMILIES.has(table.family)) continue;
    for (const chain of table.chains.values()) {
      if (chain.type !== undefined && chain.type !== 'filter') continue;
      if (chain.hook !== 'input' && chain.hook !== 'forward') continue;
      const hook = chain.hook;
      const isAdmin = isAdminTable(table, config) && chain.name === adminBaseChainOf(ownChainOn(hook), config);
      if (isAdmin) continue; // kvmnftd's own jump; a missing one is rules-not-applied
      const how = dropsByDefault(chain);
      if (!how) continue;
      const affected = nets.filter((n) => {
        if (!familyCarries(table.family, n)) return false;
        if (!networkAccepted(n, config)) return false;
        if (hook === 'input') return n.ips.length > 0 && !accepts(table, chain, 'iifname', n.bridge);
        // forward: routed/NATed traffic crosses it; bridged guest-to-guest traffic only
        // in the bridge family, or with br_netfilter calling iptables.
        const routes = modeForwards(n.mode);
        const bridged = table.family === 'bridge' || brNf;
        if (!routes && !bridged) return false;
        return !(accepts(table, chain, 'iifname', n.bridge) && accepts(table, chain, 'oifname', n.bridge));
      });
      if (affected.length === 0) continue;
      const o = owner(table, chain);
      const adminKey = `${config.filter.family} ${config.filter.table}`;
      const names = affected.map((n) => `${n.name} (${n.bridge})`).join(', ');
      const h = handling(live, table, chain, config);
      const how2 = handlingText(h, table, chain, fixFor(table, chain, hook, affected, o, adminKey));
      const traffic = hook === 'input' ? 'DHCP/DNS requests' : 'forwarded traffic';
      const what = `${traffic} of network${affected.length > 1 ? 's' : ''} ${names}`;
      const where =
        `table ${table.family} ${table.name} chain ${chain.name} ` + `(hook ${hook}, priority ${chain.prio ?? 0})`;
      findings.push({
        id: 'foreign-drop-chain',
        severity: h.kind === 'handled' ? 'info' : 'error',
        title:
          h.kind === 'handled'
            ? `${where} would drop ${what}: kvmnftd lets them through (mark accept in ${targetText(h.via)})`
            : `${where} drops ${what}: kvmnftd's accepts in ${adminKey} do not count there`,
        evidence: [
          how2.seen,
          `table ${table.family} ${table.name}, chain ${chain.name}: type ${chain.type ?? 'filter'} hook ${hook} priority ${chain.prio ?? 0}; ${how}`,
          `no rule there (or in a chain it jumps to) accepts traffic ${hook === 'input' ? 'in from' : 'in from and out to'} ${affected.map((n) => n.bridge).join(', ')}`,
          `looks like: ${o.who}`,
          ...(table.family === 'bridge' || (hook === 'forward' && brNf && affected.some((n) => !modeForwards(n.mode)))
            ? ['bridged guest-to-guest frames cross this hook (bridge family or br_netfilter)']
            : []),
        ],
        fix: how2.fix,
        networks: affected.map((n) => n.name),
      });
    }
  }
  return findings;
}

// A network's policy ([networks.<name>] over [networks."*"], key by key, over the defaults), resolved into
// typed values, and the config-level problems of those tables. Pure. What a forward mode allows is decided at
// plan time (nft/policy.ts), where the network's mode and addresses are known.
import type { Config, NetworkPolicyConfig } from './config.js';
import { EGRESS_SYNTAX, parseEgress, parseService, SERVICE_SYNTAX, type EgressEntry, type Service } from './egress.js';
import { joinKey } from './kinds.js';
import type { Broken } from './port-forward.js';
import { cidrContains } from '../net/ip.js';

/** The table of defaults for every network. */
export const ALL_NETWORKS = '*';

export const POLICY_KEYS = ['host_services', 'isolate_guests', 'egress', 'log_drops'] as const;
export type PolicyKey = (typeof POLICY_KEYS)[number];

export interface NetworkPolicy {
  hostServices: Service[];
  isolateGuests: boolean;
  /** undefined: unrestricted (the default); [] allows nothing. */
  egress: EgressEntry[] | undefined;
  logDrops: boolean;
  /** Where each key that is set comes from: the network's own table, or "*". */
  from: Partial<Record<PolicyKey, 'own' | 'all'>>;
}

/** The policy of network `name`; entries that do not parse are left out (the config rules refuse them). */
export function networkPolicy(config: Pick<Config, 'networks'>, name: string): NetworkPolicy {
  const own = Object.hasOwn(config.networks, name) ? config.networks[name] : undefined;
  const all = Object.hasOwn(config.networks, ALL_NETWORKS) ? config.networks[ALL_NETWORKS] : undefined;
  const from: NetworkPolicy['from'] = {};
  const pick = <P extends keyof NetworkPolicyConfig>(key: PolicyKey, prop: P): NetworkPolicyConfig[P] => {
    if (own?.[prop] !== undefined) from[key] = 'own';
    else if (all?.[prop] !== undefined) from[key] = 'all';
    return own?.[prop] ?? all?.[prop];
  };
  const services = pick('host_services', 'hostServices') ?? [];
  const egress = pick('egress', 'egress');
  return {
    hostServices: services.flatMap((t) => parseService(t) ?? []),
    isolateGuests: pick('isolate_guests', 'isolateGuests') ?? false,
    egress: egress?.flatMap((t) => parseEgress(t) ?? []),
    logDrops: pick('log_drops', 'logDrops') ?? false,
    from,
  };
}

/** Whether some network may isolate its guests: then the pass reads bridge ports and follows guests' starts. */
export function mayIsolateGuests(config: Pick<Config, 'networks'>): boolean {
  return Object.values(config.networks).some((t) => t.isolateGuests === true);
}

/** Whether the policy changes anything at all (no key set, or every key at its default). */
export function hasPolicy(p: NetworkPolicy): boolean {
  return p.hostServices.length > 0 || p.isolateGuests || p.egress !== undefined || p.logDrops;
}

/** Every config-level problem of the [networks.*] tables, each naming its key (`networks.lab.egress[2]`). */
export function networkPolicyProblems(config: Pick<Config, 'networks' | 'filter'>): Broken[] {
  const out: Broken[] = [];
  for (const [name, table] of Object.entries(config.networks)) {
    const at = joinKey('networks', name);
    (table.hostServices ?? []).forEach((t, i) => {
      if (parseService(t) === undefined)
        out.push({ key: `${at}.host_services[${i}]`, message: `expected ${SERVICE_SYNTAX}, got ${JSON.stringify(t)}` });
    });
    (table.egress ?? []).forEach((t, i) => {
      if (parseEgress(t) === undefined)
        out.push({ key: `${at}.egress[${i}]`, message: `expected ${EGRESS_SYNTAX}, got ${JSON.stringify(t)}` });
    });
    out.push(...overlappingPairs(table.egress ?? [], at));
    if (table.egress !== undefined && config.filter.jump !== 'first')
      out.push({
        key: `${at}.egress`,
        message:
          `needs filter.jump = "first" (it is ${JSON.stringify(config.filter.jump)}): the admin's own rules before ` +
          "kvmnftd's jump could accept what egress drops",
      });
  }
  return out;
}

/**
 * DEST:PROTO/PORT entries that overlap without one holding the other: nft refuses such elements in one
 * concatenation's set (measured: `10.0.0.0/8 . tcp . 80-90` beside `10.1.0.0/16 . tcp . 85-95` is EEXIST), so
 * the config does.
 */
function overlappingPairs(texts: readonly string[], at: string): Broken[] {
  const pairs = texts.map((t) => parseEgress(t));
  const out: Broken[] = [];
  pairs.forEach((b, j) => {
    if (!b?.dest || !b.service) return;
    const i = pairs.findIndex((a, k) => {
      if (k >= j || !a?.dest || !a.service || a.service.proto !== b.service!.proto) return false;
      const nested = cidrContains(a.dest, b.dest!) || cidrContains(b.dest!, a.dest);
      const [p, q] = [a.service.ports, b.service!.ports];
      const overlap = p.start <= q.end && q.start <= p.end;
      const holds =
        (cidrContains(a.dest, b.dest!) && p.start <= q.start && q.end <= p.end) ||
        (cidrContains(b.dest!, a.dest) && q.start <= p.start && p.end <= q.end);
      return nested && overlap && !holds;
    });
    if (i >= 0)
      out.push({
        key: `${at}.egress[${j}]`,
        message:
          `${JSON.stringify(texts[j])} overlaps ${JSON.stringify(texts[i])} (egress[${i}]) without one holding the ` +
          'other: write one entry that holds both, or make them disjoint',
      });
  });
  return out;
}

// A network's policy ([networks.<name>] over [networks."*"], key by key, over the defaults), resolved into
// typed values, and the config-level problems of those tables. Pure. What a forward mode allows is decided at
// plan time (nft/policy.ts), where the network's mode and addresses are known.
import type { Config, NetworkPolicyConfig } from './config.js';
import { EGRESS_SYNTAX, parseEgress, parseService, SERVICE_SYNTAX, type EgressEntry, type Service } from './egress.js';
import { joinKey } from './kinds.js';
import type { Broken } from './port-forward.js';

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

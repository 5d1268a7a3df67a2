// A network's policy ([networks.<name>]) as rules: host_services as accepts in kvmnftd_input, egress and
// isolate_guests as drops first in kvmnftd_forward, isolate_guests again in kvmnftd's own `bridge` table (per
// port of the bridge), and log_drops as a rate-limited `log` before each of those drops. Pure. What each
// forward mode allows:
//
//   key             nat  route  isolated  open
//   host_services   yes  yes    yes       no
//   isolate_guests  yes  yes    yes       no
//   egress          yes  yes    no        no
//   log_drops       yes  yes    yes       no
//
// A key the mode cannot use is an error when the network's own table sets it, and ignored (an info note)
// when it comes from [networks."*"]. An `open` network that sets egress gets no accepts at all (fail closed).
import type { Config } from '../config/config.js';
import type { EgressEntry } from '../config/egress.js';
import { networkPolicy, type NetworkPolicy, type PolicyKey } from '../config/network-policy.js';
import { joinKey } from '../config/kinds.js';
import type { ForwardMode, Network } from '../libvirt/model.js';
import { formatIp, maskOf, parseIp, type Cidr, type Family } from '../net/ip.js';
import { addrValue, m, s, type BaseChainSpec, type Expr, type Json, type L4Service, type RuleSpec } from './json.js';
import { logPrefix, networkTag } from './ownership.js';

/** `limit rate 5/second burst 10 packets`: what log_drops lets through to the kernel log. */
export const LOG_RATE = 5;
export const LOG_BURST = 10;

const NOT_FOR: Record<ForwardMode, readonly PolicyKey[]> = {
  nat: [],
  route: [],
  isolated: ['egress'],
  open: ['host_services', 'isolate_guests', 'egress', 'log_drops'],
};

const WHY: Record<ForwardMode, string> = {
  nat: '',
  route: '',
  isolated: 'an isolated network forwards nothing',
  open: "kvmnftd leaves an open network's traffic to the administrator (filter.accept_open_networks)",
};

export interface PolicyProblem {
  network: string;
  /** `networks.lab.egress`, as the config names it. */
  key: string;
  level: 'error' | 'info';
  message: string;
}

export interface AppliedPolicy {
  policy: NetworkPolicy;
  problems: PolicyProblem[];
  /** An open network that sets egress: kvmnftd accepts none of its traffic. */
  refuseOpen: boolean;
}

/** The network's policy with the keys its mode cannot use taken out, and why. */
export function appliedPolicy(net: Network, config: Config, families: ReadonlySet<Family>): AppliedPolicy {
  const policy = networkPolicy(config, net.name);
  const problems: PolicyProblem[] = [];
  let refuseOpen = false;
  for (const key of NOT_FOR[net.mode]) {
    const from = policy.from[key];
    if (from === undefined) continue;
    const table = from === 'own' ? net.name : '*';
    problems.push({
      network: net.name,
      key: `${joinKey('networks', table)}.${key}`,
      level: from === 'own' ? 'error' : 'info',
      message:
        from === 'own'
          ? `not for forward mode '${net.mode}' (${WHY[net.mode]}): refused`
          : `does not apply to forward mode '${net.mode}'; ignored for this network`,
    });
    if (key === 'host_services') policy.hostServices = [];
    if (key === 'isolate_guests') policy.isolateGuests = false;
    if (key === 'log_drops') policy.logDrops = false;
    if (key === 'egress') {
      if (from === 'own' && net.mode === 'open') refuseOpen = true;
      policy.egress = undefined;
    }
  }
  if (policy.egress !== undefined) {
    const missing = [...new Set(net.ips.map((ip) => ip.cidr.family))].filter((f) => !families.has(f));
    for (const f of missing)
      problems.push({
        network: net.name,
        key: `${joinKey('networks', policy.from.egress === 'own' ? net.name : '*')}.egress`,
        level: 'error',
        message:
          `cannot be enforced on IPv${f}: filter.family = "${config.filter.family}" gives kvmnftd no IPv${f} ` +
          `rules; this network's IPv${f} traffic out is left to your own ruleset (use filter.family = "inet")`,
      });
  }
  return { policy, problems, refuseOpen };
}

/** host_services: accepts in kvmnftd_input for the bridge. */
export function hostServiceRules(net: Network, policy: NetworkPolicy): RuleSpec[] {
  const tag = networkTag(net.name);
  return policy.hostServices.map((svc) => ({
    expr: [m.iifname(net.bridge), m.dports(svc.proto, svc.ports), s.counter(), s.accept()],
    comment: tag,
  }));
}

/**
 * The drops first in kvmnftd_forward: egress (per family: whatever the guest sends out of the bridge, in a
 * connection it opened, that no entry allows), then isolate_guests (routed guest-to-guest).
 */
export function forwardPolicyRules(
  net: Network,
  policy: NetworkPolicy,
  families: ReadonlySet<Family>,
  inet: boolean,
): RuleSpec[] {
  const rules: RuleSpec[] = [];
  if (policy.egress !== undefined) {
    const out = [m.iifname(net.bridge), m.oifnameNot(net.bridge)];
    // A packet conntrack does not track (an admin's `notrack`) has no direction for the rules below to judge:
    // it is dropped whole, or it would pass the out-of-bridge accept unjudged.
    rules.push(...drops(net, policy, [...out, m.ctState('untracked')]));
    const base = [...out, m.ctDirection('original')];
    for (const family of [4, 6] as const)
      if (families.has(family))
        rules.push(...drops(net, policy, [...base, ...egressNotAllowed(policy.egress, family, inet)]));
  }
  if (policy.isolateGuests) rules.push(...drops(net, policy, [m.iifname(net.bridge), m.oifname(net.bridge)]));
  return rules;
}

/** The base chain of kvmnftd's own `bridge` table. */
export const BRIDGE_FORWARD_SPEC: BaseChainSpec = { type: 'filter', hook: 'forward', prio: 0, policy: 'accept' };

/**
 * isolate_guests in kvmnftd's `bridge` table: every frame the bridge forwards out of or into one of its ports
 * (its guests' taps, as the kernel lists them when the pass runs: host/bridge-ports.ts) is dropped. A frame
 * the bridge forwards always goes from one port to another, so "either end is a port of this bridge" is
 * "guest to guest": DHCP, DNS and the way out go to the bridge device itself (the host), which the bridge
 * delivers, never forwards. A tap that joins before the pass that names it is still cut off from every
 * guest already named (their `oifname`/`iifname` drops). Matched by the port's name, which every kernel can
 * (`meta ibrname` needs nft_meta_bridge). One drop per port and direction: a guest starting or stopping
 * adds or removes its own rules and leaves the others' counters alone. `ports` must be safe names
 * (isSafeIfname: desired.ts leaves out and reports the others).
 */
export function bridgeRules(net: Network, policy: NetworkPolicy, ports: readonly string[]): RuleSpec[] {
  if (!policy.isolateGuests) return [];
  return [...ports]
    .sort()
    .flatMap((port) => [...drops(net, policy, [m.iifname(port)]), ...drops(net, policy, [m.oifname(port)])]);
}

/** The counted drop of what `matches`, after a rate-limited log of it when the network logs its drops. */
function drops(net: Network, policy: NetworkPolicy, matches: Expr[]): RuleSpec[] {
  const tag = networkTag(net.name);
  const log: RuleSpec[] = policy.logDrops
    ? [{ expr: [...matches, s.limit(LOG_RATE, LOG_BURST), s.log(logPrefix(net.name))], comment: tag }]
    : [];
  return [...log, { expr: [...matches, s.counter(), s.drop()], comment: tag }];
}

/**
 * The matches of "no entry allows this packet" for one family: not to an allowed destination, not to an
 * allowed service, not to an allowed service of a destination. No entry of a kind: no match of that kind; no
 * destination of the family at all: `meta nfproto` alone selects the family in an `inet` table (everything
 * of it is dropped but the services allowed anywhere). nft refuses overlapping elements in a concatenation's
 * set, and merges an address set's intervals: entries that another covers are left out, addresses merged.
 */
function egressNotAllowed(entries: readonly EgressEntry[], family: Family, inet: boolean): Expr[] {
  const dests: Cidr[] = [];
  const services: L4Service[] = [];
  const both: Array<{ dest: Cidr; service: L4Service }> = [];
  for (const e of entries) {
    if (e.dest && e.dest.family !== family) continue;
    if (e.dest && e.service) both.push({ dest: e.dest, service: e.service });
    else if (e.dest) dests.push(e.dest);
    else if (e.service) services.push(e.service);
  }
  const mergedServices = mergeServices(services);
  const pairs = both.filter(
    (b, i) =>
      !dests.some((d) => covers(d, b.dest)) &&
      !mergedServices.some((x) => serviceCovers(x, b.service)) &&
      !both.some(
        (o, j) => j !== i && covers(o.dest, b.dest) && serviceCovers(o.service, b.service) && (j < i || !same(o, b)),
      ),
  );
  const out: Expr[] = [];
  if (dests.length === 0 && pairs.length === 0 && inet) out.push(m.nfproto(family));
  if (dests.length > 0) out.push(m.daddrsNot(family, addressIntervals(dests)));
  if (mergedServices.length > 0) out.push(m.servicesNot(mergedServices));
  if (pairs.length > 0) out.push(m.destServicesNot(family, pairs));
  return out;
}

const same = (a: { dest: Cidr; service: L4Service }, b: { dest: Cidr; service: L4Service }): boolean =>
  covers(a.dest, b.dest) &&
  covers(b.dest, a.dest) &&
  serviceCovers(a.service, b.service) &&
  serviceCovers(b.service, a.service);

function interval(c: Cidr): [bigint, bigint] {
  const v = parseIp(c.network)!.value;
  const bits = c.family === 4 ? 32 : 128;
  return [v, v | (((1n << BigInt(bits)) - 1n) ^ maskOf(c.family, c.prefix))];
}

function covers(outer: Cidr, inner: Cidr): boolean {
  const [a, b] = interval(outer);
  const [c, d] = interval(inner);
  return outer.family === inner.family && a <= c && d <= b;
}

function serviceCovers(outer: L4Service, inner: L4Service): boolean {
  return outer.proto === inner.proto && outer.ports.start <= inner.ports.start && inner.ports.end <= outer.ports.end;
}

/** Port ranges of one protocol that overlap or touch, as one range each. */
function mergeServices(services: readonly L4Service[]): L4Service[] {
  const out: L4Service[] = [];
  const sorted = [...services].sort((a, b) =>
    a.proto !== b.proto ? (a.proto < b.proto ? -1 : 1) : a.ports.start - b.ports.start,
  );
  for (const x of sorted) {
    const last = out[out.length - 1];
    if (last && last.proto === x.proto && x.ports.start <= last.ports.end + 1)
      last.ports = { start: last.ports.start, end: Math.max(last.ports.end, x.ports.end) };
    else out.push({ proto: x.proto, ports: { ...x.ports } });
  }
  return out;
}

/**
 * Destinations as nft lists an interval set it merged: overlapping and adjacent blocks become one interval,
 * listed as a prefix (an address for one) when it is exactly one block, else as a range.
 */
export function addressIntervals(cidrs: readonly Cidr[]): Json[] {
  const family = cidrs[0]!.family;
  const spans = cidrs.map(interval).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const merged: Array<[bigint, bigint]> = [];
  for (const [a, b] of spans) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1] + 1n) last[1] = last[1] > b ? last[1] : b;
    else merged.push([a, b]);
  }
  const bits = family === 4 ? 32 : 128;
  return merged.map(([a, b]) => {
    const size = b - a + 1n;
    const prefix = bits - (size.toString(2).length - 1);
    if ((size & (size - 1n)) === 0n && (a & (size - 1n)) === 0n)
      return addrValue({ family, network: formatIp(family, a), prefix });
    return { range: [formatIp(family, a), formatIp(family, b)] };
  });
}

// Port forwards ([[port_forward]]) as rules: pure, fed forwards whose target
// address is already known. Everything lives in kvmnftd's own `inet` table,
// except the forward accept, which goes into kvmnftd_forward (desired.ts puts
// it before the bridge's `return`), and, through the owners table of
// foreign-chains.ts, the mark accept in libvirt's own rejecting chains.
//
//   pf_prerouting  nat, hook prerouting, priority -150 (before anyone's dstnat
//                  at -100): DNAT of connections to one of the host's own
//                  addresses (`fib daddr type local`, or `host_address`), so
//                  traffic routed through the host is never hijacked;
//   pf_output      nat, hook output, priority -150: the same for connections
//                  the host opens to its own non-loopback addresses (a
//                  connection to 127.0.0.1 or ::1 cannot leave the host: the
//                  kernel drops a loopback source on a real interface unless
//                  route_localnet is set, and IPv6 has no such switch);
//   pf_postrouting nat, hook postrouting, nat.priority: hairpin masquerade for
//                  a guest of the same network reaching the host's address,
//                  so that the guest's reply goes back through the host.
//
// The forward accept matches `ct status dnat` as well as the guest and its
// port: the guest's private address stays closed to anyone who routes to it
// directly.
import type { PortForwardConfig } from '../config/port-forward.js';
import { sourceCidr, targetRef, toPortRange } from '../config/port-forward.js';
import type { Network } from '../libvirt/model.js';
import { cidrOf, type Cidr, type Family } from '../net/ip.js';
import { ipProto, m, s, type BaseChainSpec, type Expr, type RuleSpec } from './json.js';
import { networkTag } from './ownership.js';

export const PF_PREROUTING_CHAIN = 'pf_prerouting';
export const PF_OUTPUT_CHAIN = 'pf_output';
export const PF_POSTROUTING_CHAIN = 'pf_postrouting';
/** Before Docker's and everyone's dstnat (-100); nft refuses a nat chain at -200 or lower. */
export const PF_DNAT_PRIORITY = -150;

/**
 * Where a forward comes from, which names it in notes, status and doctor: a `[[port_forward]]` entry of the
 * config (its index), or an entry of a domain's metadata (h/pf-meta: src/libvirt/metadata-forwards.ts).
 */
export type ForwardOrigin = { kind: 'config'; index: number } | { kind: 'metadata'; domain: string; entry: number };

/** A forward's name: `port_forward[2]`, or `domain web1 metadata forward[0]`. */
export function forwardName(origin: ForwardOrigin): string {
  return origin.kind === 'config'
    ? `port_forward[${origin.index}]`
    : `domain ${origin.domain} metadata forward[${origin.entry}]`;
}

/** Why a forward's `to` has no address (resolving it through libvirt: src/libvirt/forward-targets.ts). */
export interface Unresolved {
  /** not-running: no running domain of that name; not-on-network: the guest has no interface on the forward's
   * network; no-lease: no DHCP lease (yet) for its MAC on that network. */
  kind: 'not-running' | 'not-on-network' | 'no-lease';
  message: string;
}

/** A forward and the guest addresses its `to` resolved to (empty: waiting, and why). */
export interface ForwardTarget {
  origin: ForwardOrigin;
  forward: PortForwardConfig;
  addresses: string[];
  unresolved?: Unresolved;
}

export interface ForwardNote {
  level: 'info' | 'warn' | 'error';
  /** The forward's name (forwardName). */
  forward: string;
  network?: string;
  message: string;
}

/**
 * What became of one forward: active (it has rules), waiting (its network is not active, or its guest has no
 * known address: no rules until it has) or invalid (it can never work as configured).
 */
export type ForwardState = 'active' | 'waiting' | 'invalid';

/** What keeps a forward from being (wholly) active; doctor's findings are chosen by it. */
export type ForwardProblem =
  Unresolved['kind'] | 'network-inactive' | 'network-mode' | 'outside-network' | 'family-not-filtered' | 'no-fit';

export interface ForwardOutcome {
  /** forwardName(target.origin). */
  name: string;
  target: ForwardTarget;
  state: ForwardState;
  /** Why waiting or invalid, or what an active forward leaves out (the notes' messages); empty otherwise. */
  reasons: string[];
  /** The first problem met (undefined: active with every address). */
  problem?: ForwardProblem;
  /** The guest addresses its rules send to (active only). */
  addresses: string[];
  /** Its DNAT rules in pf_prerouting and its forward accepts in kvmnftd_forward: status reads their counters. */
  prerouting: RuleSpec[];
  accepts: RuleSpec[];
}

export interface ForwardRules {
  prerouting: RuleSpec[];
  output: RuleSpec[];
  postrouting: RuleSpec[];
  /** network name -> the accepts kvmnftd_forward gets before that bridge's return. */
  accepts: Map<string, RuleSpec[]>;
  notes: ForwardNote[];
  /** Every forward, in the order of the targets: what it became (status, doctor). */
  outcomes: ForwardOutcome[];
}

/** The targets of the config's forwards whose `to` is an address; names and MACs wait for libvirt. */
export function addressTargets(forwards: readonly PortForwardConfig[]): ForwardTarget[] {
  return forwards.map((forward, index) => {
    const ref = targetRef(forward.to);
    return { origin: { kind: 'config', index }, forward, addresses: ref.kind === 'address' ? [ref.address] : [] };
  });
}

const LOOPBACK: Record<Family, Cidr> = { 4: cidrOf('127.0.0.0', 8)!, 6: cidrOf('::1', 128)! };

/**
 * The rules of every forward whose network is active and whose guest address
 * is known and on that network. `families`: what the admin table holds (no
 * forward accept can be written for another family, so no DNAT either).
 */
export function forwardRules(
  targets: readonly ForwardTarget[],
  networks: readonly Network[],
  families: ReadonlySet<Family>,
): ForwardRules {
  const out: ForwardRules = {
    prerouting: [],
    output: [],
    postrouting: [],
    accepts: new Map(),
    notes: [],
    outcomes: [],
  };
  for (const t of targets) {
    const f = t.forward;
    const outcome: ForwardOutcome = {
      name: forwardName(t.origin),
      target: t,
      state: 'waiting',
      reasons: [],
      addresses: [],
      prerouting: [],
      accepts: [],
    };
    out.outcomes.push(outcome);
    const note = (level: ForwardNote['level'], problem: ForwardProblem, message: string): void => {
      out.notes.push({ level, forward: outcome.name, network: f.network, message });
      outcome.reasons.push(message);
      outcome.problem ??= problem;
    };
    const net = networks.find((n) => n.name === f.network);
    if (!net) {
      note('info', 'network-inactive', `waiting: network ${f.network} is not active`);
      continue;
    }
    if (net.mode !== 'nat' && net.mode !== 'route') {
      outcome.state = 'invalid';
      note(
        'error',
        'network-mode',
        `network ${f.network} has forward mode '${net.mode}': only nat and route networks forward ports`,
      );
      continue;
    }
    if (t.addresses.length === 0) {
      const why = t.unresolved ?? { kind: 'no-lease', message: `${f.to} has no known address on network ${f.network}` };
      note('info', why.kind, `waiting: ${why.message}`);
      continue;
    }
    for (const address of t.addresses) {
      const guest = cidrOf(address, address.includes(':') ? 128 : 32);
      const subnet = guest && net.ips.map((ip) => ip.cidr).find((c) => contains(c, guest));
      if (!guest || !subnet) {
        note(
          'error',
          'outside-network',
          `${address} is not inside a subnet of network ${f.network}: no rules (a forward never leaves it)`,
        );
        continue;
      }
      if (!families.has(guest.family)) {
        note(
          'warn',
          'family-not-filtered',
          `${address}: filter.family holds no IPv${guest.family} rules, so no forward for it`,
        );
        continue;
      }
      const rules = rulesFor(f, net, guest, subnet);
      if (!rules) continue;
      out.prerouting.push(rules.prerouting);
      out.output.push(rules.output);
      out.postrouting.push(rules.hairpin);
      out.accepts.set(net.name, [...(out.accepts.get(net.name) ?? []), rules.accept]);
      outcome.addresses.push(guest.network);
      outcome.prerouting.push(rules.prerouting);
      outcome.accepts.push(rules.accept);
    }
    if (outcome.addresses.length > 0) outcome.state = 'active';
    else {
      outcome.state = 'invalid';
      if (outcome.reasons.length === 0) {
        outcome.reasons.push(`no address of ${f.to} fits host_address and from (${t.addresses.join(', ')})`);
        outcome.problem = 'no-fit';
      }
    }
  }
  return out;
}

function rulesFor(
  f: PortForwardConfig,
  net: Network,
  guest: Cidr,
  subnet: Cidr,
): { prerouting: RuleSpec; output: RuleSpec; hairpin: RuleSpec; accept: RuleSpec } | undefined {
  const family = guest.family;
  const proto = ipProto(family);
  const tag = networkTag(net.name);
  const host = f.hostAddress === undefined ? undefined : sourceCidr(f.hostAddress);
  if (host && host.family !== family) return undefined;
  const sources = f.from.flatMap((text) => {
    const c = sourceCidr(text);
    return c && c.family === family ? [c] : [];
  });
  // `from` given, but nothing of this family: no source may use the forward in this family.
  if (f.from.length > 0 && sources.length === 0) return undefined;
  const from = sources.length > 0 ? [m.saddrs(sources)] : [];
  const toPorts = toPortRange(f);
  const dnat = s.dnat(proto, guest.network, { proto: f.proto, host: f.hostPort, to: toPorts });
  const hostPort = m.dports(f.proto, f.hostPort);
  const daddr: Expr[] = host ? [m.daddr(host)] : [m.localDaddr()];
  const rule = (...expr: Expr[]): RuleSpec => ({ expr, comment: tag });
  const toGuest = [m.daddr(guest), m.dports(f.proto, toPorts)];
  return {
    prerouting: rule(...daddr, ...from, hostPort, s.counter(), dnat),
    output: rule(
      ...(host ? [m.daddr(host)] : [m.localDaddr(), m.daddrNot(LOOPBACK[family])]),
      ...from,
      hostPort,
      s.counter(),
      dnat,
    ),
    // No iifname: the input device is not known at postrouting (it never matches there); the source subnet
    // says "a guest of this network".
    hairpin: rule(m.oifname(net.bridge), m.saddr(subnet), ...toGuest, m.ctDnat(), s.counter(), s.masquerade()),
    accept: rule(m.oifname(net.bridge), ...toGuest, m.ctDnat(), s.counter(), s.accept()),
  };
}

function contains(subnet: Cidr, address: Cidr): boolean {
  return subnet.family === address.family && cidrOf(address.network, subnet.prefix)?.network === subnet.network;
}

export const pfBaseSpec = (hook: 'prerouting' | 'output' | 'postrouting', natPriority: number): BaseChainSpec => ({
  type: 'nat',
  hook,
  prio: hook === 'postrouting' ? natPriority : PF_DNAT_PRIORITY,
  policy: 'accept',
});

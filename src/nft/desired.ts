// What kvmnftd wants to exist, declared per network: the rule templates.
// Pure data; diffing against the live ruleset happens in plan.ts.
import type { Config } from '../config/config.js';
import type { Network, NetworkIp } from '../libvirt/model.js';
import { isSafeIfname } from '../net/ifname.js';
import { cidrOf, type Cidr, type Family } from '../net/ip.js';
import { ipProto, m, s, type BaseChainSpec, type Expr, type RuleSpec } from './json.js';
import { joinKey } from '../config/kinds.js';
import { appliedPolicy, bridgeRules, forwardPolicyRules, hostServiceRules, type PolicyProblem } from './policy.js';
import {
  forwardsThroughOwnRules,
  NAT_BASE_CHAIN,
  natChainName,
  networkAccepted,
  networkTag,
  TAG,
} from './ownership.js';

export interface DesiredChain {
  name: string;
  base?: BaseChainSpec;
  rules: RuleSpec[];
}

export interface DesiredState {
  /** NAT chains of kvmnftd's own `inet` table. */
  natChains: DesiredChain[];
  /**
   * Marking chains of kvmnftd's own table (accept-mark.ts), set by the
   * planner when foreign chains are handled. With natChains empty too, the
   * table should not exist.
   */
  marking: DesiredChain[];
  /** Port forward chains of kvmnftd's own table (port-forward.ts), set by the planner. */
  forwardChains: DesiredChain[];
  /** The rules of the base chain of kvmnftd's own `bridge` table (isolate_guests); empty: no such table. */
  bridge: RuleSpec[];
  /** Keys of [networks.*] refused or ignored for a network's forward mode or the filter family (policy.ts). */
  policyProblems: PolicyProblem[];
  /** kvmnftd_input / kvmnftd_forward contents, for the admin table. */
  input: RuleSpec[];
  forward: RuleSpec[];
  /** True when at least one network forwards IPv4 (ip_forward must be on). */
  forwardsIpv4: boolean;
  forwardsIpv6: boolean;
}

export function natBaseSpec(config: Config): BaseChainSpec {
  return { type: 'nat', hook: 'postrouting', prio: config.nat.priority, policy: 'accept' };
}

const ND_TYPES = ['nd-router-solicit', 'nd-neighbor-solicit', 'nd-neighbor-advert'];
const MULTICAST_V4 = cidrOf('224.0.0.0', 24)!;
const BROADCAST_V4 = cidrOf('255.255.255.255', 32)!;
const MULTICAST_V6 = cidrOf('ff02::', 16)!;

/** Per bridge, the names of its ports as the kernel lists them (host/bridge-ports.ts): isolate_guests' input. */
export type BridgePorts = Readonly<Record<string, readonly string[]>>;

/**
 * Networks must be valid and active; the result is deterministic (sorted by name). `forwardAccepts`: per
 * network, the port forwards' accepts (port-forward.ts), placed before that bridge's `return`.
 */
export function desiredState(
  networks: readonly Network[],
  config: Config,
  forwardAccepts: ReadonlyMap<string, RuleSpec[]> = new Map(),
  bridgePorts: BridgePorts = {},
): DesiredState {
  const sorted = [...networks].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const holds = familiesOf(config);
  const state: DesiredState = {
    natChains: [],
    marking: [],
    forwardChains: [],
    bridge: [],
    policyProblems: [],
    input: [],
    forward: [],
    forwardsIpv4: false,
    forwardsIpv6: false,
  };
  const natJumps: RuleSpec[] = [];
  // The forward chain in libvirt's order: guest-to-guest, then everything
  // INTO each bridge, then everything OUT of each bridge. Each "into" section
  // ends in `return` so that one network's "out" accept can never open
  // another network's guests (e.g. a routed guest reaching into a NAT bridge).
  // Before all of them, the policy drops (egress, isolate_guests: policy.ts),
  // keyed on the bridge the packet comes from: an accept of any section
  // (another network's "into", say a routed network's) would otherwise let a
  // restricted guest's packet through before its own network's drop.
  const policy: RuleSpec[] = [];
  const cross: RuleSpec[] = [];
  const into: RuleSpec[] = [];
  const outOf: RuleSpec[] = [];

  for (const net of sorted) {
    const tag = networkTag(net.name);
    const rule = (...expr: Expr[]): RuleSpec => ({ expr: [...expr, s.counter(), s.accept()], comment: tag });
    const stop = (...expr: Expr[]): RuleSpec => ({ expr: [...expr, s.counter(), s.return()], comment: tag });
    const ips = net.ips.filter((ip) => holds.has(ip.cidr.family));
    const applied = appliedPolicy(net, config, holds);
    state.policyProblems.push(...applied.problems);
    const accepted = networkAccepted(net, config) && !applied.refuseOpen;
    policy.push(...forwardPolicyRules(net, applied.policy, holds, config.filter.family === 'inet'));
    if (applied.policy.isolateGuests) {
      const ports = Object.hasOwn(bridgePorts, net.bridge) ? (bridgePorts[net.bridge] ?? []) : [];
      for (const port of ports.filter((p) => !isSafeIfname(p)))
        state.policyProblems.push({
          network: net.name,
          key: `${joinKey('networks', applied.policy.from.isolate_guests === 'own' ? net.name : '*')}.isolate_guests`,
          level: 'error',
          message: `port ${JSON.stringify(port)} of bridge ${net.bridge} is not isolated: nft cannot match that name exactly`,
        });
      state.bridge.push(...bridgeRules(net, applied.policy, ports.filter(isSafeIfname)));
    }

    if (net.mode === 'open') {
      if (accepted) {
        state.input.push(rule(m.iifname(net.bridge)));
        into.push(rule(m.oifname(net.bridge)));
        outOf.push(rule(m.iifname(net.bridge)));
      }
    } else {
      state.input.push(...inputRules(net, ips, rule), ...hostServiceRules(net, applied.policy));
      if (!applied.policy.isolateGuests) cross.push(rule(m.iifname(net.bridge), m.oifname(net.bridge)));
      for (const ip of ips) into.push(...intoBridge(net, ip.cidr, rule));
      into.push(...(forwardAccepts.get(net.name) ?? []));
      into.push(stop(m.oifname(net.bridge)));
      for (const ip of ips) outOf.push(...outOfBridge(net, ip.cidr, rule));
      outOf.push(stop(m.iifname(net.bridge)));
    }
    if (forwardsThroughOwnRules(net, config)) {
      for (const ip of net.ips) {
        if (ip.cidr.family === 4) state.forwardsIpv4 = true;
        else state.forwardsIpv6 = true;
      }
    }

    const natRules = net.mode === 'nat' ? natRulesFor(net) : [];
    if (natRules.length > 0) {
      const chain = natChainName(net.bridge);
      state.natChains.push({ name: chain, rules: natRules });
      natJumps.push({ expr: [s.jump(chain)], comment: tag });
    }
  }

  state.forward = [...policy, ...cross, ...into, ...outOf];
  if (natJumps.length > 0) {
    state.natChains.unshift({
      name: NAT_BASE_CHAIN,
      base: natBaseSpec(config),
      rules: natJumps,
    });
  }
  return state;
}

/**
 * Our chains never accept what conntrack calls invalid: a leading rule hands
 * it back to the admin's chain (whose own `ct state invalid drop` may come
 * after a `first` jump). Applied last, once the chain's contents are final.
 */
export function withInvalidGuard(rules: RuleSpec[]): RuleSpec[] {
  return rules.length === 0 ? rules : [invalidGuard(), ...rules];
}

/** `ct state invalid return comment "kvmnftd"`, the first rule of kvmnftd's filter chains. No counter. */
export function invalidGuard(): RuleSpec {
  return { expr: [m.ctState('invalid'), s.return()], comment: TAG };
}

export function familiesOf(config: Config): Set<Family> {
  switch (config.filter.family) {
    case 'ip':
      return new Set([4]);
    case 'ip6':
      return new Set([6]);
    default:
      return new Set([4, 6]);
  }
}

type RuleFn = (...expr: Expr[]) => RuleSpec;

/** What libvirt's dnsmasq serves on the bridge: DNS, DHCP, DHCPv6/ND, TFTP. */
function inputRules(net: Network, ips: NetworkIp[], rule: RuleFn): RuleSpec[] {
  if (ips.length === 0) return [];
  const br = m.iifname(net.bridge);
  const rules: RuleSpec[] = [];
  if (net.dns) rules.push(rule(br, m.dport('udp', 53)), rule(br, m.dport('tcp', 53)));
  if (ips.some((ip) => ip.cidr.family === 4)) rules.push(rule(br, m.dport('udp', 67)));
  if (ips.some((ip) => ip.cidr.family === 6))
    rules.push(rule(br, m.dport('udp', 547)), rule(br, m.icmpv6Types(ND_TYPES)));
  if (ips.some((ip) => ip.tftp)) rules.push(rule(br, m.dport('udp', 69)));
  return rules;
}

/** What may enter the bridge towards one of its subnets. */
function intoBridge(net: Network, subnet: Cidr, rule: RuleFn): RuleSpec[] {
  const back = [m.oifname(net.bridge), m.daddr(subnet), ...(net.forwardDev ? [m.iifname(net.forwardDev)] : [])];
  switch (net.mode) {
    case 'nat':
      // libvirt routes (does not masquerade) IPv6 in a NAT network unless <nat ipv6='yes'>.
      return [
        subnet.family === 4 || net.nat?.ipv6 ? rule(...back, m.ctState('established', 'related')) : rule(...back),
      ];
    case 'route':
      return [rule(...back)];
    default:
      return []; // isolated: guest-to-guest only
  }
}

/** What may leave the bridge from one of its subnets. */
function outOfBridge(net: Network, subnet: Cidr, rule: RuleFn): RuleSpec[] {
  if (net.mode !== 'nat' && net.mode !== 'route') return [];
  return [rule(m.iifname(net.bridge), m.saddr(subnet), ...(net.forwardDev ? [m.oifname(net.forwardDev)] : []))];
}

/** libvirt's masquerade semantics, one chain per NAT network. */
function natRulesFor(net: Network): RuleSpec[] {
  const nat = net.nat;
  if (!nat) return [];
  const tag = networkTag(net.name);
  const rules: RuleSpec[] = [];
  const dev = net.forwardDev ? [m.oifname(net.forwardDev)] : [];
  for (const ip of net.ips) {
    const subnet = ip.cidr;
    if (subnet.family === 6 && !nat.ipv6) continue;
    const from = [...dev, m.saddr(subnet)];
    const skip = subnet.family === 4 ? [MULTICAST_V4, BROADCAST_V4] : [MULTICAST_V6];
    for (const dst of skip) rules.push({ expr: [...from, m.daddr(dst), s.counter(), s.return()], comment: tag });
    const outside = [...from, m.daddrNot(subnet)];
    const address = subnet.family === 4 ? nat.address : undefined;
    const translate = (ports?: { start: number; end: number }): Expr =>
      address ? s.snat(ipProto(subnet.family), address, ports) : s.masquerade(ports);
    for (const proto of ['tcp', 'udp'] as const) {
      rules.push({ expr: [m.l4proto(proto), ...outside, s.counter(), translate(nat.ports)], comment: tag });
    }
    rules.push({ expr: [...outside, s.counter(), translate()], comment: tag });
  }
  return rules;
}

// Port forwards that will never work, or not yet (issue 13). Pure: reads the
// plan's outcome per forward (src/nft/port-forward.ts decides active /
// waiting / invalid and why), the host's listening sockets and the live
// ruleset. The IPv6 forwarding finding is host.ts's (it names the forwards).
import { shadowedListeners } from '../host/listeners.js';
import { presentTargets, targetText } from '../nft/foreign-chains.js';
import { type ForwardOutcome, type ForwardProblem } from '../nft/port-forward.js';
import { portRangeText } from '../config/kinds.js';
import { forwardOutcomes, liveRuleset, type DoctorFacts, type Finding } from './types.js';

const NOT_ON_NETWORK: ReadonlySet<ForwardProblem> = new Set(['not-on-network', 'outside-network']);
const NO_ADDRESS: ReadonlySet<ForwardProblem> = new Set(['not-running', 'no-lease']);

const what = (o: ForwardOutcome): string => {
  const f = o.target.forward;
  return `${o.name} (${f.proto} ${portRangeText(f.hostPort)} -> ${f.to} on network ${f.network})`;
};

export function checkForwardTargets(facts: DoctorFacts): Finding[] {
  const out: Finding[] = [];
  for (const o of forwardOutcomes(facts)) {
    const f = o.target.forward;
    if (o.problem !== undefined && NOT_ON_NETWORK.has(o.problem))
      out.push({
        id: 'forward-target-not-on-network',
        severity: 'error',
        title: `${what(o)}: the target is not on network ${f.network}, so the forward has no rules`,
        evidence: o.reasons,
        fix:
          `Point ${o.name}.to at a guest of network ${f.network} (its domain name, its MAC on that network, or an ` +
          `address inside the network's subnets), or set ${o.name}.network to the guest's network.`,
        networks: [f.network],
      });
    else if (o.problem !== undefined && NO_ADDRESS.has(o.problem))
      out.push({
        id: 'forward-guest-no-address',
        severity: 'warning',
        title: `${what(o)} is waiting: ${o.problem === 'not-running' ? 'the guest is not running' : 'the guest has no address yet'}`,
        evidence: o.reasons,
        fix:
          o.problem === 'not-running'
            ? `Start the domain (virsh start ${f.to}); the forward follows within seconds.`
            : 'kvmnftd takes the address from the DHCP lease libvirt records (/var/lib/libvirt/dnsmasq/<bridge>.status). ' +
              'Check that the guest runs a DHCP client on that interface; a guest with a static address needs it as to.',
        networks: [f.network],
      });
  }
  return out;
}

export function checkForwardShadowing(facts: DoctorFacts): Finding[] {
  return facts.config.portForward.flatMap((f, index): Finding[] => {
    const hit = shadowedListeners(facts.listeners, f);
    if (hit.length === 0) return [];
    const name = `port_forward[${index}]`;
    return [
      {
        id: 'forward-port-shadowed',
        severity: 'warning',
        title: `${name} takes ${f.proto} port ${portRangeText(f.hostPort)}, where a host socket listens: connections to it from outside reach the guest, never that socket`,
        evidence: hit.map(
          (l) => `listening: ${l.proto} ${l.address.includes(':') ? `[${l.address}]` : l.address}:${l.port}`,
        ),
        fix: `Move the host service or ${name}.host_port to another port (ss -lntup shows the socket's process), or set ${name}.host_address to an address the service does not listen on.`,
        networks: [f.network],
      },
    ];
  });
}

/**
 * With filter.foreign_chains = "report" kvmnftd writes no accept into libvirt's own rejecting chains
 * (LIBVIRT_FWI, guest_input): a forwarded connection into a NAT network is rejected there.
 */
export function checkForwardsBlocked(facts: DoctorFacts): Finding[] {
  const live = liveRuleset(facts);
  if (!live || facts.config.filter.foreignChains !== 'report') return [];
  const libvirt = presentTargets(live, facts.config).filter((t) => t.owner === 'libvirt');
  const forwards = forwardOutcomes(facts).filter((o) => o.state !== 'invalid');
  if (libvirt.length === 0 || forwards.length === 0) return [];
  return [
    {
      id: 'forward-blocked-by-libvirt',
      severity: 'error',
      title:
        `filter.foreign_chains = "report": kvmnftd writes nothing into libvirt's ${libvirt.map(targetText).join(', ')}, ` +
        `whose reject comes before any accept of kvmnftd's: ${forwards.map((o) => o.name).join(', ')} cannot pass`,
      evidence: [
        ...libvirt.map((t) => `${targetText(t)} exists (libvirt's own chain)`),
        ...forwards.map((o) => `${what(o)}: ${o.state}`),
      ],
      fix:
        'Set filter.foreign_chains = "accept" (kvmnftd then keeps one narrow mark accept first in those chains, only for ' +
        'the DNATed connections of its forwards), or remove the forwards. docs/rules.md, "Port forwards", explains why an accept elsewhere cannot pass libvirt\'s reject.',
      networks: [...new Set(forwards.map((o) => o.target.forward.network))],
    },
  ];
}

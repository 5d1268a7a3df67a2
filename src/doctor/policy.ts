// [networks.<name>] policies: a key the network's mode (or filter.family) cannot use, and what each policy
// drops, named with what it allows ("network lab: egress allows only 10.0.0.0/8, tcp/443; 57 packets
// dropped"), from the counters of kvmnftd's own drop rules; with log_drops on, the destinations dropped
// most, from the kernel log ("203.0.113.9:tcp/443 is dropped").
import { egressText } from '../config/egress.js';
import { familiesOf } from '../nft/desired.js';
import {
  BRIDGE_FORWARD_CHAIN,
  logPrefix,
  networkTag,
  OWN_FORWARD_CHAIN,
  adminTable,
  ownBridgeTable,
} from '../nft/ownership.js';
import { droppedFlows } from './drop-log.js';
import { appliedPolicy } from '../nft/policy.js';
import { ruleCounter, type LiveChain } from '../nft/ruleset.js';
import { activeNetworks, liveRuleset, type DoctorFacts, type Finding } from './types.js';

export function checkPolicies(facts: DoctorFacts): Finding[] {
  const live = liveRuleset(facts);
  const families = familiesOf(facts.config);
  const out: Finding[] = [];
  for (const net of activeNetworks(facts)) {
    const { policy, problems } = appliedPolicy(net, facts.config, families);
    for (const p of problems.filter((x) => x.level === 'error'))
      out.push({
        id: 'network-policy-refused',
        severity: 'error',
        title: `network ${net.name}: ${p.key}: ${p.message}`,
        evidence: [
          `network ${net.name}: forward mode '${net.mode}'`,
          `filter.family = "${facts.config.filter.family}"`,
        ],
        fix: `Remove ${p.key} from the config (or set it in a network whose mode can use it: docs/rules.md), then kvmnftd check and systemctl reload kvmnftd.`,
        networks: [net.name],
      });
    if (!live) continue;
    const tag = networkTag(net.name);
    const forward = adminTable(live, facts.config)?.chains.get(OWN_FORWARD_CHAIN);
    const bridge = ownBridgeTable(live, facts.config)?.chains.get(BRIDGE_FORWARD_CHAIN);
    const dropped = (chain: LiveChain | undefined, bridged: boolean): number =>
      (chain?.rules ?? [])
        .filter((r) => r.comment === tag && r.expr.some((e) => 'drop' in e))
        .filter((r) => bridged || JSON.stringify(r.expr).includes('"direction"'))
        .reduce((n, r) => n + (ruleCounter(r)?.packets ?? 0), 0);
    const egressDrops = dropped(forward, false);
    const isolationDrops = dropped(bridge, true);
    // What the kernel log names: egress drops came in through the bridge and leave it (isolation's came in
    // through a port, or go back into the bridge).
    const logged = policy.logDrops && facts.dropLog && 'lines' in facts.dropLog ? facts.dropLog.lines : [];
    const prefix = logPrefix(net.name);
    const egressFlows = droppedFlows(
      logged.filter((l) => l.includes(`IN=${net.bridge} `) && !l.includes(`OUT=${net.bridge} `)),
      prefix,
    );
    if (policy.egress !== undefined && egressDrops > 0) {
      const allows =
        policy.egress.length === 0 ? 'allows nothing' : `allows only ${policy.egress.map(egressText).join(', ')}`;
      const named =
        egressFlows.length > 0
          ? `; ${egressFlows.map((f) => f.flow).join(', ')} ${egressFlows.length > 1 ? 'are' : 'is'} dropped`
          : '';
      out.push({
        id: 'policy-drops',
        severity: 'info',
        title: `network ${net.name}: egress ${allows}${named}; ${egressDrops} packets dropped`,
        evidence: [
          `counters of the egress drops (comment "${tag}") in ${OWN_FORWARD_CHAIN}: ${egressDrops} packets`,
          ...egressFlows.map((f) => `kernel log ("${prefix}"): ${f.packets} logged packets to ${f.flow}`),
        ],
        fix: `If a guest needs more, add its destination or service to networks.${net.name}.egress (docs/rules.md); log_drops = true names the dropped flows in the kernel log (journalctl -k).`,
        networks: [net.name],
      });
    }
    if (policy.isolateGuests && isolationDrops > 0)
      out.push({
        id: 'policy-drops',
        severity: 'info',
        title: `network ${net.name}: isolate_guests drops traffic between its guests; ${isolationDrops} frames dropped`,
        evidence: [
          `counters of the drops (comment "${tag}") in bridge ${facts.config.nat.table} ${BRIDGE_FORWARD_CHAIN}`,
        ],
        fix: `If the guests must talk to each other, set networks.${net.name}.isolate_guests = false.`,
        networks: [net.name],
      });
  }
  return out;
}

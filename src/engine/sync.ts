// One pass: read networks and the live ruleset, plan, apply. Shared by the
// one-shot CLI and the daemon's reconciler.
import type { Config } from '../config/config.js';
import { ensureIpv4Forwarding, ipv6ForwardingRisk } from '../host/forwarding.js';
import type { NetworkParse } from '../libvirt/model.js';
import type { Logger } from '../log/logger.js';
import type { NftRunner } from '../nft/nft-runner.js';
import { plan, type Plan, type PlanNote } from '../nft/plan.js';
import { indexRuleset } from '../nft/ruleset.js';

export interface SyncResult {
  plan: Plan;
  applied: boolean;
  durationMs: number;
}

export async function computePlan(networks: NetworkParse[], config: Config, nft: NftRunner): Promise<Plan> {
  return plan(networks, config, indexRuleset(await nft.listRuleset()));
}

export async function syncOnce(networks: NetworkParse[], config: Config, nft: NftRunner, log: Logger): Promise<SyncResult> {
  const started = performance.now();
  const result = await computePlan(networks, config, nft);
  logNotes(result.notes, log);
  const applied = result.batch.nftables.length > 0;
  if (applied) await nft.apply(result.batch);
  const durationMs = Math.round((performance.now() - started) * 10) / 10;
  await checkForwarding(result, config, log);
  return { plan: result, applied, durationMs };
}

export function logNotes(notes: readonly PlanNote[], log: Logger): void {
  for (const note of notes) {
    const fields = { ...(note.network ? { network: note.network } : {}), ...(note.field ? { field: note.field } : {}) };
    log[note.level](fields, note.network ? `network ${note.network}: ${note.message}` : note.message);
  }
}

async function checkForwarding(result: Plan, config: Config, log: Logger): Promise<void> {
  if (result.desired.forwardsIpv4) {
    const outcome = await ensureIpv4Forwarding(config.forwarding.manageIpv4);
    if (outcome.kind === 'enabled') log.info('enabled net.ipv4.ip_forward (a network forwards IPv4)');
    else if (outcome.kind === 'off-unmanaged') log.warn('net.ipv4.ip_forward is 0 and forwarding.manage_ipv4 = false: guests cannot reach beyond the host');
    else if (outcome.kind === 'failed') log.error(`could not enable net.ipv4.ip_forward: ${outcome.error}`);
  }
  if (result.desired.forwardsIpv6) {
    const v6 = await ipv6ForwardingRisk();
    if (!v6.on) {
      const risk = v6.raInterfaces.length > 0 ? `; enabling it would make ${v6.raInterfaces.join(', ')} ignore router advertisements (set accept_ra=2 there first)` : '';
      log.warn(`net.ipv6.conf.all.forwarding is 0: IPv6 guests are not forwarded. kvmnftd does not switch it on${risk}`);
    }
  }
}

// One pass: read the live ruleset, plan, apply, check forwarding. Shared by
// the one-shot CLI and the daemon's reconciler. Findings come back as
// messages so that the daemon can log each one once, not once per pass.
import type { Config } from '../config/config.js';
import { ensureIpv4Forwarding, ipv6ForwardingRisk } from '../host/forwarding.js';
import type { NetworkParse } from '../libvirt/model.js';
import type { Logger } from '../log/logger.js';
import type { NftRunner } from '../nft/nft-runner.js';
import { plan, type Plan } from '../nft/plan.js';
import type { Ruleset } from '../nft/ruleset.js';

export interface SyncMessage {
  level: 'info' | 'warn' | 'error';
  text: string;
  fields: Record<string, string>;
}

export interface SyncResult {
  plan: Plan;
  /** The ruleset as read before applying. */
  live: Ruleset;
  applied: boolean;
  durationMs: number;
  messages: SyncMessage[];
}

export async function syncOnce(networks: NetworkParse[], config: Config, nft: NftRunner): Promise<SyncResult> {
  const started = performance.now();
  const live = await nft.readRuleset();
  const result = plan(networks, config, live);
  const applied = result.batch.nftables.length > 0;
  if (applied) await nft.apply(result.batch);
  const durationMs = Math.round((performance.now() - started) * 10) / 10;
  const messages = [...planMessages(result), ...(await forwardingMessages(result, config))];
  return { plan: result, live, applied, durationMs, messages };
}

export function planMessages(result: Plan): SyncMessage[] {
  return result.notes.map((note) => ({
    level: note.level,
    text: note.network ? `network ${note.network}: ${note.message}` : note.message,
    fields: { ...(note.network ? { network: note.network } : {}), ...(note.field ? { field: note.field } : {}) },
  }));
}

export function logMessages(messages: readonly SyncMessage[], log: Logger): void {
  for (const m of messages) log[m.level](m.fields, m.text);
}

async function forwardingMessages(result: Plan, config: Config): Promise<SyncMessage[]> {
  const out: SyncMessage[] = [];
  if (result.desired.forwardsIpv4) {
    const outcome = await ensureIpv4Forwarding(config.forwarding.manageIpv4);
    if (outcome.kind === 'enabled')
      out.push({ level: 'info', text: 'enabled net.ipv4.ip_forward (a network forwards IPv4)', fields: {} });
    else if (outcome.kind === 'off-unmanaged')
      out.push({
        level: 'warn',
        text: 'net.ipv4.ip_forward is 0 and forwarding.manage_ipv4 = false: guests cannot reach beyond the host',
        fields: {},
      });
    else if (outcome.kind === 'failed')
      out.push({ level: 'error', text: `could not enable net.ipv4.ip_forward: ${outcome.error}`, fields: {} });
  }
  if (result.desired.forwardsIpv6) {
    const v6 = await ipv6ForwardingRisk();
    if (!v6.on) {
      const risk =
        v6.raInterfaces.length > 0
          ? `; enabling it would make ${v6.raInterfaces.join(', ')} ignore router advertisements (set accept_ra=2 there first)`
          : '';
      out.push({
        level: 'warn',
        text: `net.ipv6.conf.all.forwarding is 0: IPv6 guests are not forwarded. kvmnftd does not switch it on${risk}`,
        fields: {},
      });
    }
  }
  return out;
}

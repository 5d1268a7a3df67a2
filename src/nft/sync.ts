// One pass with I/O: read the live ruleset, plan, apply, check forwarding.
// Shared by the one-shot `kvmnftd apply`/`remove` and the daemon's pass.
// Findings come back as messages (src/log/messages.ts) so that the daemon can
// log each one once, not once per pass.
import type { Config } from '../config/config.js';
import { ensureIpv4Forwarding, ipv6ForwardingRisk } from '../host/forwarding.js';
import type { NetworkParse } from '../libvirt/model.js';
import type { LogMessage } from '../log/messages.js';
import type { NftRunner } from './nft-runner.js';
import { plan, type Plan } from './plan.js';
import type { Ruleset } from './ruleset.js';

export interface SyncResult {
  plan: Plan;
  /** The ruleset as read before applying. */
  live: Ruleset;
  applied: boolean;
  durationMs: number;
  messages: LogMessage[];
}

export interface SyncOptions {
  /** Asked before a non-empty batch is applied; false holds it back (the daemon's convergence guard). */
  mayApply?: (plan: Plan, live: Ruleset) => boolean;
}

export async function syncOnce(
  networks: NetworkParse[],
  config: Config,
  nft: NftRunner,
  options: SyncOptions = {},
): Promise<SyncResult> {
  const started = performance.now();
  const live = await nft.readRuleset();
  const result = plan(networks, config, live);
  const applied = result.batch.nftables.length > 0 && (options.mayApply?.(result, live) ?? true);
  if (applied) await nft.apply(result.batch);
  const durationMs = Math.round((performance.now() - started) * 10) / 10;
  const messages = [...planMessages(result), ...(await forwardingMessages(result, config))];
  return { plan: result, live, applied, durationMs, messages };
}

/** The plan's notes as messages, for the log. */
export function planMessages(result: Plan): LogMessage[] {
  return result.notes.map((note) => ({
    level: note.level,
    text: note.network ? `network ${note.network}: ${note.message}` : note.message,
    fields: { ...(note.network ? { network: note.network } : {}), ...(note.field ? { field: note.field } : {}) },
  }));
}

async function forwardingMessages(result: Plan, config: Config): Promise<LogMessage[]> {
  const out: LogMessage[] = [];
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

// One pass with I/O: read the live ruleset, plan, apply, check forwarding.
// Shared by the one-shot `kvmnftd apply`/`remove` and the daemon's pass.
// Findings come back as messages (src/log/messages.ts) so that the daemon can
// log each one once, not once per pass.
//
// A transaction that fails (someone changed the ruleset between the read and
// the commit: DOCKER-USER deleted, a table re-created) is planned again from
// a fresh read and tried once more. If that fails too and the plan has a
// foreign part (foreign-chains.ts), the plan without it is applied, and the
// result says why the foreign part is missing (degraded); the next pass
// tries the whole plan again. Never nothing: the networks' own rules go in.
import type { Config } from '../config/config.js';
import { ensureIpv4Forwarding, ipv6ForwardingRisk } from '../host/forwarding.js';
import type { NetworkParse } from '../libvirt/model.js';
import type { LogMessage } from '../log/messages.js';
import type { NftRunner } from './nft-runner.js';
import { plan as planWith, type Plan, type PlanFacts, type PlanOptions } from './plan.js';
import type { Ruleset } from './ruleset.js';

export interface SyncResult {
  plan: Plan;
  /** The ruleset as read before applying. */
  live: Ruleset;
  applied: boolean;
  durationMs: number;
  /**
   * Where durationMs went, ms: reading the ruleset (the first read; what is left of it when it was under way),
   * planning it, committing (with any retry).
   */
  stages: { readMs: number; planMs: number; commitMs: number };
  messages: LogMessage[];
  /** Why the plan was applied without its foreign part; undefined when it was applied whole (or not needed). */
  foreignDegraded?: string;
}

export interface SyncOptions {
  /** Asked before a non-empty batch is applied; false holds it back (the daemon's convergence guard). */
  mayApply?: (plan: Plan, live: Ruleset) => boolean;
  /** What libvirt and the host say about guests, the same for every plan() of the pass (PlanFacts). */
  facts?: PlanFacts;
  /** The ruleset's read, already under way (the daemon starts it while libvirt answers); else read here. */
  live?: Promise<Ruleset>;
}

export async function syncOnce(
  networks: NetworkParse[],
  config: Config,
  nft: NftRunner,
  options: SyncOptions = {},
): Promise<SyncResult> {
  const started = performance.now();
  const facts = options.facts ?? {};
  const plan = planner(facts);
  let live = await (options.live ?? nft.readRuleset());
  const read = performance.now();
  let result = plan(networks, config, live);
  let applied = result.batch.nftables.length > 0 && (options.mayApply?.(result, live) ?? true);
  const planned = performance.now();
  let foreignDegraded: string | undefined;
  if (applied) {
    const outcome = await applyWithRetry(networks, config, nft, { live, plan: result }, facts);
    ({ live, plan: result, foreignDegraded } = outcome);
    applied = outcome.committed;
  }
  const ended = performance.now();
  const stages = { readMs: tenths(read - started), planMs: tenths(planned - read), commitMs: tenths(ended - planned) };
  const messages = [...planMessages(result), ...(await forwardingMessages(result, config))];
  return {
    plan: result,
    live,
    applied,
    durationMs: tenths(ended - started),
    stages,
    messages,
    ...(foreignDegraded ? { foreignDegraded } : {}),
  };
}

/** A pass's stages as its log line names them (the daemon's pass and `kvmnftd apply`). */
export function stageFields(stages: SyncResult['stages']): { read_ms: number; plan_ms: number; commit_ms: number } {
  return { read_ms: stages.readMs, plan_ms: stages.planMs, commit_ms: stages.commitMs };
}

/** Milliseconds to one decimal, as the logs give them. */
export const tenths = (value: number): number => Math.round(value * 10) / 10;

/**
 * Applies the plan; on failure re-reads, re-plans and tries once more; when
 * that fails too, applies the plan without the foreign part if that is a
 * different batch (else the failure stands). Returns the plan applied last,
 * and whether a transaction was committed (a re-plan may find nothing to do).
 */
export async function applyWithRetry(
  networks: NetworkParse[],
  config: Config,
  nft: NftRunner,
  first: { live: Ruleset; plan: Plan },
  facts: PlanFacts = {},
): Promise<{ live: Ruleset; plan: Plan; committed: boolean; foreignDegraded?: string }> {
  const plan = planner(facts);
  try {
    await nft.apply(first.plan.batch);
    return { ...first, committed: true };
  } catch {
    // Planned from a snapshot someone changed since: once more from a fresh read.
  }
  let live = await nft.readRuleset();
  const again = plan(networks, config, live);
  let failure: unknown;
  try {
    const committed = again.batch.nftables.length > 0;
    if (committed) await nft.apply(again.batch);
    return { live, plan: again, committed };
  } catch (err) {
    failure = err;
  }
  live = await nft.readRuleset();
  const without = plan(networks, config, live, { foreign: false });
  const whole = plan(networks, config, live);
  if (JSON.stringify(without.batch) === JSON.stringify(whole.batch)) throw failure;
  const committed = without.batch.nftables.length > 0;
  if (committed) await nft.apply(without.batch);
  const why = failure instanceof Error ? failure.message : String(failure);
  return {
    live,
    plan: without,
    committed,
    foreignDegraded: `applied without the mark accepts in ${describeHandled(whole)}: ${why}`,
  };
}

/** plan() with the same facts on every call of one pass. */
function planner(
  facts: PlanFacts,
): (networks: NetworkParse[], config: Config, live: Ruleset, options?: PlanOptions) => Plan {
  return (networks, config, live, options = {}) => planWith(networks, config, live, { ...options, ...facts });
}

function describeHandled(p: Plan): string {
  const names = p.foreign.handled.map((h) => `${h.family} ${h.table} ${h.chain}`);
  return names.length > 0 ? names.join(', ') : 'foreign chains';
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

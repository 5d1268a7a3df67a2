// `kvmnftd status`: pure evaluation of gathered facts into a report whose JSON
// form is documented (docs/status.schema.json, docs/operation.md). Compares
// the live ruleset with the plan, network by network.
import type { Config } from '../config/config.js';
import type { NetworkParse } from '../libvirt/model.js';
import { cidrText } from '../net/ip.js';
import type { RuleSpec } from '../nft/json.js';
import {
  adminBaseChainOf,
  adminTable,
  jumpTarget,
  natChainName,
  NAT_BASE_CHAIN,
  networkTag,
  OWN_FORWARD_CHAIN,
  OWN_INPUT_CHAIN,
  ourJumpInPlace,
  ownTable,
  sameBase,
  taggedNetwork,
} from '../nft/ownership.js';
import { targetText } from '../nft/foreign-chains.js';
import { plan, type PlanFacts } from '../nft/plan.js';
import { PF_PREROUTING_CHAIN, type ForwardOutcome, type ForwardState } from '../nft/port-forward.js';
import { RULE_KINDS, tallyCounters, type CounterTally, type RuleKind } from '../nft/rule-kind.js';
import { ruleCounter, ruleKey, type LiveChain, type LiveRule, type Ruleset } from '../nft/ruleset.js';
import { portRangeText } from '../config/kinds.js';
import { toPortRange } from '../config/port-forward.js';

export const STATUS_SCHEMA_ID = 'kvmnftd.status/1';

export type RuleState = 'ok' | 'missing' | 'stale' | 'not-needed';
/** A jump's state; 'unknown' when libvirt or the ruleset could not be read. */
export type JumpState = RuleState | 'unknown';

export interface SystemdFacts {
  /** False when systemd is not the init system (or its bus API did not answer). */
  available: boolean;
  activeState?: string;
  subState?: string;
  statusText?: string;
  error?: string;
}

export interface DaemonFacts {
  /** PID from the runtime directory's PID file, when that process is alive. */
  pid?: number;
  /** The daemon's own state file (runtime directory). */
  state?: {
    transport: 'dbus' | 'virsh' | null;
    status: string;
    lastPassAt: string | null;
    lastChangeAt: string | null;
    /** Why the daemon's last write of the [metrics] textfile failed, or null. */
    metricsError: string | null;
  };
  systemd: SystemdFacts;
}

/** What `kvmnftd status` gathered (through src/status/gather.ts and the nft and libvirt adapters). */
export interface StatusInputs {
  config: Config;
  configSource: string;
  /** Parse results of every active network, or why libvirt could not be read. */
  libvirt:
    | {
        source: 'libvirt' | 'xml-files';
        networks: NetworkParse[];
        /**
         * The port forwards resolved against them and the isolating bridges' ports (libvirt/guest-facts.ts), as
         * every plan() gets them. Absent: only forwards whose `to` is an address have one, no port is known.
         */
        facts?: PlanFacts;
      }
    | { source: 'libvirt' | 'xml-files'; error: string };
  ruleset: { live: Ruleset } | { error: string };
  daemon: DaemonFacts;
  checkedAt: Date;
}

export interface NetworkStatus {
  name: string;
  bridge: string;
  mode: string;
  subnets: string[];
  nat: RuleState;
  input: RuleState;
  forward: RuleState;
  ok: boolean;
  /** Its rules' counters per kind (nft/rule-kind.ts, as `kvmnftd metrics`); null: no rule of that kind. */
  counters: Record<RuleKind, CounterValues | null>;
}

/** A counter's values; null when the rule is not in the live ruleset. */
export interface CounterValues {
  packets: number;
  bytes: number;
}

/** One port forward in `kvmnftd status`. */
export interface ForwardStatus {
  /** `port_forward[2]` (or `domain web1 metadata forward[0]`). */
  name: string;
  network: string;
  proto: string;
  host_port: string;
  host_address: string | null;
  /** As configured: a domain name, a MAC or an address. */
  to: string;
  to_port: string;
  /** The guest addresses it resolved to and sends to (empty unless active). */
  target: string[];
  state: ForwardState;
  /** Why waiting or invalid (or what an active forward leaves out); null otherwise. */
  reason: string | null;
  /** Its rules in the live ruleset: all in place ("ok"), some missing, or none needed (not active). */
  rules: RuleState;
  /** Its DNAT in pf_prerouting (the first packet of each connection from outside) and its forward accept. */
  counters: { dnat: CounterValues | null; accept: CounterValues | null };
}

/** The JSON document `kvmnftd status --json` prints (snake_case keys). */
export interface StatusReport {
  schema: typeof STATUS_SCHEMA_ID;
  checked_at: string;
  ok: boolean;
  exit_code: 0 | 1 | 3;
  config: { source: string; admin_table: string; nat_table: string; jump: string };
  libvirt: { source: 'libvirt' | 'xml-files'; reachable: boolean; error: string | null };
  ruleset: {
    readable: boolean;
    error: string | null;
    admin_table_present: boolean | null;
    networks_with_rules: string[];
  };
  daemon: {
    running: boolean | null;
    pid: number | null;
    transport: 'dbus' | 'virsh' | null;
    status_text: string | null;
    last_pass_at: string | null;
    last_change_at: string | null;
    /** Why the daemon's last write of its [metrics] textfile failed; null when it did not fail (or is off). */
    metrics_error: string | null;
    systemd: {
      available: boolean;
      active_state: string | null;
      sub_state: string | null;
      status_text: string | null;
      error: string | null;
    };
  };
  jumps: { input: JumpState; forward: JumpState };
  /** Docker's and ufw's chains (filter.foreign_chains): "FAMILY TABLE CHAIN" handled, and pending. */
  foreign_chains: { mode: 'accept' | 'report'; handled: string[]; pending: string[] };
  networks: NetworkStatus[];
  /** Every port forward: its resolved target, its state and its counters (null when not planned). */
  forwards: ForwardStatus[];
  skipped: Array<{ name: string; reason: string }>;
  pending_commands: number | null;
  problems: string[];
}

/** Ordered rule keys of one network's rules (by comment tag) in a chain. */
function tagged(chain: LiveChain | undefined, tag: string): string[] {
  return (chain?.rules ?? []).filter((r) => r.comment === tag).map(ruleKey);
}

function compare(wanted: readonly RuleSpec[], live: string[]): RuleState {
  if (wanted.length === 0) return live.length === 0 ? 'not-needed' : 'stale';
  if (live.length === 0) return 'missing';
  const keys = wanted.map(ruleKey);
  return keys.length === live.length && keys.every((k, i) => k === live[i]) ? 'ok' : 'stale';
}

/** Names of networks that have rules in the live ruleset (from their comment tags). */
export function networksWithRules(live: Ruleset): string[] {
  const names = new Set<string>();
  for (const t of live.tables.values()) {
    for (const c of t.chains.values()) {
      for (const r of c.rules) {
        const name = taggedNetwork(r.comment);
        if (name !== undefined) names.add(name);
      }
    }
  }
  return [...names].sort();
}

export function evaluateStatus(facts: StatusInputs): StatusReport {
  const { config } = facts;
  const problems: string[] = [];
  const adminName = `${config.filter.family} ${config.filter.table}`;
  const live = 'live' in facts.ruleset ? facts.ruleset.live : undefined;
  const inputs = 'networks' in facts.libvirt ? facts.libvirt.networks : undefined;
  const planFacts = 'networks' in facts.libvirt ? facts.libvirt.facts : undefined;
  if (!live && 'error' in facts.ruleset) problems.push(`cannot read the ruleset: ${facts.ruleset.error}`);
  if (!inputs && 'error' in facts.libvirt) problems.push(`cannot read libvirt's networks: ${facts.libvirt.error}`);

  const networks: NetworkStatus[] = [];
  let forwards: ForwardStatus[] = [];
  const skipped: StatusReport['skipped'] = [];
  let jumps: StatusReport['jumps'] = { input: 'unknown', forward: 'unknown' };
  let pending: number | null = null;
  const foreign: StatusReport['foreign_chains'] = { mode: config.filter.foreignChains, handled: [], pending: [] };
  const admin = live ? adminTable(live, config) : undefined;

  if (live && inputs) {
    const p = plan(inputs, config, live, planFacts ?? {});
    pending = p.batch.nftables.length;
    forwards = p.forwards.map((o) => forwardStatus(o, live, config));
    for (const f of forwards)
      if (f.state === 'active' && f.rules !== 'ok') problems.push(`${f.name}: rules ${f.rules}`);
    for (const note of p.notes) {
      if (note.level === 'error' && note.network) skipped.push({ name: note.network, reason: note.message });
      else if (note.level !== 'info')
        problems.push(note.network ? `network ${note.network}: ${note.message}` : note.message);
    }
    const own = ownTable(live, config);
    const inputChain = admin?.chains.get(OWN_INPUT_CHAIN);
    const forwardChain = admin?.chains.get(OWN_FORWARD_CHAIN);
    const postrouting = own?.chains.get(NAT_BASE_CHAIN);
    // Present when any rule of the base chain jumps to ours (with filter.jump = "none" the admin's
    // own jump counts); in place when it is the tagged jump the planner keeps.
    const jumpState = (own: string, wanted: number): RuleState => {
      if (wanted === 0) return 'not-needed';
      const base = admin?.chains.get(adminBaseChainOf(own, config));
      if (!base?.rules.some((r) => jumpTarget(r) === own)) return 'missing';
      if (config.filter.jump === 'none') return 'ok';
      return ourJumpInPlace(base, own, config.filter.jump) ? 'ok' : 'stale';
    };
    const input = jumpState(OWN_INPUT_CHAIN, p.desired.input.length);
    const forward = jumpState(OWN_FORWARD_CHAIN, p.desired.forward.length);
    jumps = { input, forward };
    for (const [which, state] of [
      ['input', input],
      ['forward', forward],
    ] as const) {
      if (state === 'missing')
        problems.push(
          `the ${which} jump to ${which === 'input' ? OWN_INPUT_CHAIN : OWN_FORWARD_CHAIN} is missing from ${adminName}`,
        );
      if (state === 'stale')
        problems.push(`the ${which} jump in ${adminName} is not where filter.jump = "${config.filter.jump}" puts it`);
    }

    const tally = tallyCounters(live);
    for (const n of p.networks) {
      const tag = networkTag(n.name);
      const natWanted = p.desired.natChains.find((c) => c.name === natChainName(n.bridge));
      let nat: RuleState = 'not-needed';
      if (natWanted) {
        const liveNat = own?.chains.get(natWanted.name);
        const jumpKey = ruleKey({ expr: [{ jump: { target: natWanted.name } }], comment: tag });
        const jumped = (postrouting?.rules ?? []).some((r) => ruleKey(r) === jumpKey);
        const base = p.desired.natChains.find((c) => c.base !== undefined)?.base;
        const baseOk = postrouting !== undefined && base !== undefined && sameBase(postrouting, base);
        if (!liveNat && !jumped) nat = 'missing';
        else
          nat =
            liveNat && jumped && baseOk && compare(natWanted.rules, liveNat.rules.map(ruleKey)) === 'ok'
              ? 'ok'
              : 'stale';
      }
      const input = compare(
        p.desired.input.filter((r) => r.comment === tag),
        tagged(inputChain, tag),
      );
      const forward = compare(
        p.desired.forward.filter((r) => r.comment === tag),
        tagged(forwardChain, tag),
      );
      const jumpOk = (s: RuleState, j: JumpState): boolean => s === 'not-needed' || (s === 'ok' && j === 'ok');
      const ok = (nat === 'ok' || nat === 'not-needed') && jumpOk(input, jumps.input) && jumpOk(forward, jumps.forward);
      networks.push({
        name: n.name,
        bridge: n.bridge,
        mode: n.mode,
        subnets: n.ips.map((ip) => cidrText(ip.cidr)),
        nat,
        input,
        forward,
        ok,
        counters: countersOf(tally, n.name),
      });
      for (const [part, state] of [
        ['NAT', nat],
        ['input', input],
        ['forward', forward],
      ] as const) {
        if (state === 'missing' || state === 'stale') problems.push(`network ${n.name}: ${part} rules ${state}`);
      }
    }
    // A handled chain: its mark accept in place, and the marking chains the plan wants all there.
    const markingInPlace = p.desired.marking.every((c) => own?.chains.has(c.name) ?? false);
    for (const h of p.foreign.handled) {
      const inPlace = markingInPlace && h.live.rules.some((r) => ruleKey(r) === ruleKey(h.rule));
      (inPlace ? foreign.handled : foreign.pending).push(targetText(h));
    }
    if (foreign.pending.length > 0)
      problems.push(`kvmnftd's mark accept is not in place in ${foreign.pending.join(', ')}`);
    for (const s of skipped) problems.push(`network ${s.name}: ${s.reason}`);
    if (pending > 0) problems.push(`the next apply would run ${pending} nft commands (kvmnftd plan --diff shows them)`);
  }

  const d = facts.daemon;
  const sd = d.systemd;
  const metricsError = d.pid !== undefined ? (d.state?.metricsError ?? null) : null;
  if (metricsError !== null) problems.push(`the daemon's metrics textfile: ${metricsError}`);
  const running =
    d.pid !== undefined
      ? true
      : sd.available && sd.activeState !== undefined
        ? sd.activeState === 'active' || sd.activeState === 'reloading'
        : d.state === undefined
          ? false
          : null;
  const exit: 0 | 1 | 3 = !live || !inputs ? 1 : problems.length > 0 || pending !== 0 ? 3 : 0;
  return {
    schema: STATUS_SCHEMA_ID,
    checked_at: facts.checkedAt.toISOString(),
    ok: exit === 0,
    exit_code: exit,
    config: {
      source: facts.configSource,
      admin_table: adminName,
      nat_table: `inet ${config.nat.table}`,
      jump: config.filter.jump,
    },
    libvirt: {
      source: facts.libvirt.source,
      reachable: inputs !== undefined,
      error: 'error' in facts.libvirt ? facts.libvirt.error : null,
    },
    ruleset: {
      readable: live !== undefined,
      error: 'error' in facts.ruleset ? facts.ruleset.error : null,
      admin_table_present: live ? admin !== undefined : null,
      networks_with_rules: live ? networksWithRules(live) : [],
    },
    daemon: {
      running,
      pid: d.pid ?? null,
      transport: d.pid !== undefined ? (d.state?.transport ?? null) : null,
      status_text: sd.statusText ?? (d.pid !== undefined ? (d.state?.status ?? null) : null),
      last_pass_at: d.pid !== undefined ? (d.state?.lastPassAt ?? null) : null,
      last_change_at: d.pid !== undefined ? (d.state?.lastChangeAt ?? null) : null,
      metrics_error: metricsError,
      systemd: {
        available: sd.available,
        active_state: sd.activeState ?? null,
        sub_state: sd.subState ?? null,
        status_text: sd.statusText ?? null,
        error: sd.error ?? null,
      },
    },
    jumps,
    foreign_chains: foreign,
    networks,
    forwards,
    skipped,
    pending_commands: pending,
    problems,
  };
}

/** One network's sums per kind; every kind present, null where the network has no rule of it. */
function countersOf(tally: CounterTally, network: string): Record<RuleKind, CounterValues | null> {
  const kinds = tally.get(network);
  const entry = (k: RuleKind): [RuleKind, CounterValues | null] => {
    const t = kinds?.get(k);
    return [k, t ? { packets: t.packets, bytes: t.bytes } : null];
  };
  return Object.fromEntries(RULE_KINDS.map(entry)) as Record<RuleKind, CounterValues | null>;
}

/** The live rule that is this wanted rule, if any. */
function liveRule(chain: LiveChain | undefined, wanted: RuleSpec): LiveRule | undefined {
  const key = ruleKey(wanted);
  return chain?.rules.find((r) => ruleKey(r) === key);
}

/** Counters of the live rules that are these wanted ones, summed; null when none of them is in place. */
function counters(chain: LiveChain | undefined, wanted: readonly RuleSpec[]): CounterValues | null {
  const found = wanted.flatMap((w) => {
    const rule = liveRule(chain, w);
    const c = rule && ruleCounter(rule);
    return c ? [c] : [];
  });
  if (found.length === 0) return null;
  return found.reduce((a, c) => ({ packets: a.packets + c.packets, bytes: a.bytes + c.bytes }));
}

/** One forward's line in the report: the plan's outcome, its rules' presence and counters in the live ruleset. */
function forwardStatus(o: ForwardOutcome, live: Ruleset, config: Config): ForwardStatus {
  const f = o.target.forward;
  const prerouting = ownTable(live, config)?.chains.get(PF_PREROUTING_CHAIN);
  const forwardChain = adminTable(live, config)?.chains.get(OWN_FORWARD_CHAIN);
  const wanted: Array<[LiveChain | undefined, RuleSpec]> = [
    ...o.prerouting.map((r): [LiveChain | undefined, RuleSpec] => [prerouting, r]),
    ...o.accepts.map((r): [LiveChain | undefined, RuleSpec] => [forwardChain, r]),
  ];
  const present = wanted.filter(([chain, r]) => liveRule(chain, r) !== undefined).length;
  return {
    name: o.name,
    network: f.network,
    proto: f.proto,
    host_port: portRangeText(f.hostPort),
    host_address: f.hostAddress ?? null,
    to: f.to,
    to_port: portRangeText(toPortRange(f)),
    target: o.addresses,
    state: o.state,
    reason: o.reasons.length > 0 ? o.reasons.join('; ') : null,
    rules: wanted.length === 0 ? 'not-needed' : present === wanted.length ? 'ok' : 'missing',
    counters: { dnat: counters(prerouting, o.prerouting), accept: counters(forwardChain, o.accepts) },
  };
}

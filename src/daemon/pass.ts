// The daemon's pass: plan from libvirt's active networks (or, while libvirt
// is away, the last ones it reported), apply under the daemon's apply lock, ask libvirt to
// re-create its own chains after a flush, and log what changed and each
// finding once while it persists. The Reconciler schedules passes (coalescing,
// back-off); failures are logged by how long they last.
import type { ReloadOutcome } from '../libvirt/firewalld-reload.js';
import { gatherGuestFacts, planFactsFrom, type DomainXml } from '../libvirt/guest-facts.js';
import type { NetworkParse } from '../libvirt/model.js';
import type { Logger } from '../log/logger.js';
import { RepeatFilter, type LogMessage } from '../log/messages.js';
import { libvirtChainsMissing } from '../nft/libvirt-chains.js';
import type { NftRunner } from '../nft/nft-runner.js';
import { planDiff, renderDiff } from '../nft/diff.js';
import { monitorScope, ownedOrWrittenTables } from '../nft/monitor-scope.js';
import { foreignDigest } from '../nft/ownership.js';
import type { Plan, PlanFacts } from '../nft/plan.js';
import type { ForwardOutcome } from '../nft/port-forward.js';
import type { Ruleset } from '../nft/ruleset.js';
import { stageFields, syncOnce, tenths, type SyncResult } from '../nft/sync.js';
import type { DaemonApplyLock } from './apply-lock.js';
import { AnswerOrLast, LIBVIRT_ANSWER_DEADLINE_MS } from './answer-or-last.js';
import { ConvergenceGuard } from './convergence-guard.js';
import type { Backoff } from './backoff.js';
import { LibvirtRestorer } from './libvirt-restore.js';
import { DEFAULT_BACKOFF, Reconciler } from './reconciler.js';
import type { DaemonState } from './state.js';

/** The one line a plan applied without its foreign part is logged with (while it persists). */
function foreignMessages(result: SyncResult): LogMessage[] {
  if (result.foreignDegraded === undefined) return [];
  return [
    {
      level: 'warn',
      fields: {},
      text: `degraded: ${result.foreignDegraded}; the next pass tries the whole plan again`,
    },
  ];
}

/** Consecutive failures (about 4 s with the default back-off) after which a failure is an error. */
const PERSISTENT_FAILURES = 5;
/** Triggers that re-arm a suspended apply (convergence-guard.ts): a periodic check, a reload. */
export const REARMING_TRIGGERS: ReadonlySet<string> = new Set(['periodic check', 'reload']);

export interface PassDeps {
  state: DaemonState;
  /** The daemon's lifelong apply lock (apply-lock.ts): a pass commits only while it is held. */
  applyLock: Pick<DaemonApplyLock, 'held' | 'ours'>;
  nft: NftRunner;
  log: Logger;
  /** Called after every pass and every failure: the status follows. */
  changed: () => void;
  /** Broadcasts org.fedoraproject.FirewallD1.Reloaded (replaceable in tests). */
  announce?: () => Promise<ReloadOutcome>;
  /** One read-plan-apply (replaceable in tests). */
  sync?: typeof syncOnce;
  /** libvirt's guests for port forwards (replaceable in tests). */
  guestFacts?: typeof gatherGuestFacts;
  backoff?: Backoff;
}

export class DaemonPass {
  /** Resolves when the first pass has ended, whatever its outcome. */
  readonly firstPass: Promise<void>;
  private firstPassDone: () => void = () => undefined;
  private readonly reconciler: Reconciler;
  private readonly restorer: LibvirtRestorer;
  private readonly findings: RepeatFilter;
  private readonly guard = new ConvergenceGuard();

  constructor(private readonly deps: PassDeps) {
    this.firstPass = new Promise((resolve) => (this.firstPassDone = resolve));
    this.findings = new RepeatFilter(deps.log);
    this.reconciler = new Reconciler(
      {
        pass: (reasons, since) => this.run(reasons, since),
        onFailure: (error, attempt, retryInMs, repeated) => this.failed(error, attempt, retryInMs, repeated),
        onRecovered: (failures) => this.recovered(failures),
      },
      deps.backoff ?? DEFAULT_BACKOFF,
    );
    this.restorer = new LibvirtRestorer(
      // dbus-next is loaded when a broadcast is first needed (with --events virsh, maybe never).
      deps.announce ?? (async () => (await import('../libvirt/firewalld-reload.js')).announceFirewallReload()),
      () => this.triggerDrift('libvirt chains still missing'),
      deps.log,
    );
  }

  /** Something may have changed, libvirt's state included: a pass follows (see Reconciler) and asks libvirt. */
  trigger(reason: string): void {
    this.libvirtUnchanged = false;
    if (REARMING_TRIGGERS.has(reason)) this.guard.rearm();
    this.reconciler.trigger(reason);
  }

  /**
   * The ruleset changed (nft monitor), and nothing libvirt reports: a pass follows, which plans from libvirt's
   * last answers unless something else asked for fresh ones meanwhile. A repair after a flush then waits for
   * nft alone. libvirt says when its state changes (events; a reconnect, a reload and the periodic check also
   * ask afresh), so its last answers are its state until it says otherwise.
   */
  triggerDrift(reason: string): void {
    this.reconciler.trigger(reason);
  }

  /** No libvirt event, reconnect, reload, periodic check or other non-ruleset trigger since libvirt last answered. */
  private libvirtUnchanged = false;

  /** Resolves when no pass is running or pending. */
  idle(): Promise<void> {
    return this.reconciler.idle();
  }

  /** Schedules nothing more; waits for a running pass to end. */
  async stop(): Promise<void> {
    this.restorer.stop();
    await this.reconciler.stop();
  }

  private async run(reasons: string[], since: number): Promise<void> {
    const { state } = this.deps;
    const started = performance.now();
    state.passStartedAt = Date.now();
    // libvirt is asked unless only the ruleset changed since its last answers (see triggerDrift). Marked
    // before asking: an event during the question makes the next pass ask again.
    const ask = !this.libvirtUnchanged || state.lastNetworks === undefined;
    this.libvirtUnchanged = true;
    // While libvirt answers (10-16 ms after a net-start's event: libvirtd finishes the start first), nft reads
    // the ruleset. What others change after this read reaches the monitor and starts another pass; kvmnftd's own
    // rules change only in passes, one at a time, under the apply lock (not yet ours: a CLI apply may commit).
    const live = ask && state.watch && this.deps.applyLock.ours ? this.deps.nft.readRuleset() : undefined;
    live?.catch(() => undefined); // a pass that ends before its sync leaves the read unused
    try {
      const networks = await this.networks(ask);
      if (networks === undefined) return; // nothing known yet: the status names libvirt
      const facts = await this.planFacts(networks, ask);
      // Where a pass's time goes, for the log: waiting to start, libvirt's answers, then read, plan, commit (sync.ts).
      const stages = { wait_ms: tenths(started - since), libvirt_ms: tenths(performance.now() - started) };
      await this.deps.applyLock.held(); // at once, except while a CLI apply held it when the daemon started
      // A forward's new guest address or a bridge's new port is an input change, as a network's or the config's is.
      const inputs = JSON.stringify([networks, state.config, facts]);
      const result = await this.sync(networks, inputs, facts, live);
      state.scope = monitorScope(result.live, ownedOrWrittenTables(state.config));
      this.judgeConvergence(result, inputs);
      state.foreignDegraded = result.foreignDegraded;
      const messages = [...result.messages, ...foreignMessages(result), ...this.checkLibvirtChains(result)];
      this.findings.logNew(messages);
      this.record(result, messages, reasons, since, { ...stages, ...stageFields(result.stages) });
    } catch (err) {
      this.libvirtUnchanged = false; // whatever failed, the retry asks libvirt afresh
      throw err;
    } finally {
      state.passStartedAt = undefined;
      state.lastPassAt = new Date();
      state.figures.passes++;
      state.figures.lastPassMs = tenths(performance.now() - started);
      this.firstPassDone();
      this.deps.changed();
    }
  }

  /**
   * Without libvirt, plan from the last networks it reported, so that a flush
   * during a libvirtd restart is still repaired; the reconnect loop, not the
   * reconciler's back-off, brings fresh state back. A libvirt that is slow to
   * answer (busy restoring its rules) gets the same: see answer-or-last.ts.
   */
  private async networks(ask: boolean): Promise<NetworkParse[] | undefined> {
    const { state } = this.deps;
    const watch = state.watch;
    if (!watch || !ask) return state.lastNetworks;
    const networks = await this.networkAnswers.get(
      () => watch.activeNetworks(),
      () => this.trigger('libvirt answered late'),
    );
    state.lastNetworks = networks;
    return networks;
  }

  private readonly networkAnswers = new AnswerOrLast<NetworkParse[]>(LIBVIRT_ANSWER_DEADLINE_MS);
  private readonly domainAnswers = new AnswerOrLast<DomainXml[]>(LIBVIRT_ANSWER_DEADLINE_MS);

  /**
   * The port forwards with their guest addresses and the isolating bridges' ports: libvirt's guests asked once
   * per pass (only when a forward names one), through the open event source; while libvirt is away, its last
   * answer stands.
   */
  private async planFacts(networks: NetworkParse[], ask: boolean): Promise<PlanFacts> {
    const { state } = this.deps;
    const watch = state.watch;
    const lastDomains = this.domainAnswers.last;
    const facts = await (this.deps.guestFacts ?? gatherGuestFacts)(state.config, networks, {
      domains: watch
        ? () =>
            !ask && lastDomains !== undefined
              ? Promise.resolve(lastDomains)
              : this.domainAnswers.get(
                  () => watch.runningDomains(),
                  () => this.trigger('libvirt answered late'),
                )
        : () => Promise.reject(new Error('libvirt is away')),
      ...(state.guestFacts ? { previous: state.guestFacts } : {}),
    });
    state.guestFacts = facts;
    return planFactsFrom(state.config, networks, facts);
  }

  /** What was not kvmnftd's in the ruleset the batch last put to the guard was planned from. */
  private foreignAtCheck = '';

  private sync(
    networks: NetworkParse[],
    inputs: string,
    facts: PlanFacts,
    live?: Promise<Ruleset>,
  ): Promise<SyncResult> {
    return (this.deps.sync ?? syncOnce)(networks, this.deps.state.config, this.deps.nft, {
      mayApply: (plan, live) => this.mayApply(inputs, plan, live),
      facts,
      ...(live ? { live } : {}),
    });
  }

  /** The convergence guard's verdict; the first time it holds a batch back, one error line with the diff. */
  private mayApply(inputs: string, plan: Plan, live: Ruleset): boolean {
    // Someone else's change (ufw rewriting its chains in steps, Docker restarting) is not an echo of ours.
    this.foreignAtCheck = foreignDigest(live, this.deps.state.config);
    const verdict = this.guard.check(inputs, plan.batch, Date.now(), this.foreignAtCheck, live);
    if (verdict.apply) return true;
    if (verdict.firstTime) {
      const diff = renderDiff(planDiff(live, plan.batch)).trimEnd();
      this.deps.log.error(
        { commands: plan.batch.nftables.length },
        `not applying: ${verdict.reason}; kvmnftd waits for a network or config change, a reload or the periodic ` +
          `check. This is a bug in kvmnftd: please report it with this diff:\n${diff}`,
      );
    }
    return false;
  }

  /** Tell the guard how the pass ended: committed, nothing to do, or held back. */
  private judgeConvergence(result: SyncResult, inputs: string): void {
    if (result.applied) this.guard.committed(inputs, result.plan.batch, this.foreignAtCheck);
    else if (result.plan.batch.nftables.length === 0) this.guard.converged();
    this.deps.state.suspended = this.guard.suspended;
  }

  /** After a foreign flush libvirt's own chains are gone: restore them, or say how. */
  private checkLibvirtChains(result: SyncResult): LogMessage[] {
    const { state } = this.deps;
    const missing = libvirtChainsMissing(result.live, result.plan.networks);
    if (state.config.daemon.restoreLibvirtRules) {
      // A new set of networks, or a new connection to libvirt, starts the attempts afresh.
      const situation = `${state.watch?.transport ?? 'none'}:${result.plan.networks.map((n) => n.name).join(',')}`;
      void this.restorer.observe(missing, situation).finally(() => {
        state.restoreGaveUp = this.restorer.gaveUp;
        state.figures.libvirtRestores = this.restorer.broadcasts;
      });
      return [];
    }
    if (!missing) return [];
    return [
      {
        level: 'warn',
        fields: {},
        text:
          "libvirt's own firewall chains are gone (was the ruleset flushed?) and " +
          'daemon.restore_libvirt_rules = false: restart libvirtd (or virtnetworkd) before starting networks',
      },
    ];
  }

  /** The pass succeeded: record what it found and log what it changed. */
  private record(
    result: SyncResult,
    messages: LogMessage[],
    reasons: string[],
    since: number,
    stages: Record<string, number>,
  ): void {
    const { state, log } = this.deps;
    const before = new Set(state.networks);
    const now = result.plan.networks.map((n) => n.name);
    const started = now.filter((n) => !before.has(n));
    const stopped = state.networks.filter((n) => !now.includes(n));
    state.networks = now;
    const forwardChanges = this.forwardChanges(result.plan.forwards);
    state.planError = messages.find((m) => m.level === 'error')?.text;
    state.passError = undefined;
    if (state.watch) state.reconnectAttempts = 0; // the event source proved itself
    if (!result.applied) {
      const held = result.plan.batch.nftables.length > 0;
      log.debug(
        { event: reasons[0], duration_ms: result.durationMs, latency_ms: tenths(performance.now() - since), ...stages },
        held
          ? `not applying ${result.plan.batch.nftables.length} nft commands (suspended)`
          : 'ruleset already up to date',
      );
      return;
    }
    state.lastChange = { at: new Date(), ms: result.durationMs };
    const what = [
      ...started.map((n) => `network ${n} up`),
      ...stopped.map((n) => `network ${n} down`),
      ...forwardChanges,
    ];
    state.figures.transactions++;
    if (what.length === 0) state.figures.driftRepairs++;
    const summary =
      what.length > 0 ? what.join(', ') : `repaired drift (${[...new Set(reasons)].slice(0, 3).join(', ')})`;
    const commands = result.plan.batch.nftables.length;
    log.info(
      {
        event: reasons[0],
        networks: now.join(','),
        commands,
        duration_ms: result.durationMs,
        latency_ms: tenths(performance.now() - since),
        ...stages,
      },
      `${summary}: applied ${commands} nft commands in ${result.durationMs} ms`,
    );
  }

  /** Each forward's state and target at the last successful pass (the log says which ones changed). */
  private forwardStates = new Map<string, string>();

  /** `port_forward[0] to 192.168.122.7`, `port_forward[1] waiting`: the forwards whose state or target changed. */
  private forwardChanges(outcomes: readonly ForwardOutcome[]): string[] {
    const next = new Map(
      outcomes.map((o) => [o.name, o.state === 'active' ? `to ${o.addresses.join(', ')}` : o.state] as const),
    );
    const changed = [...next].filter(([name, text]) => this.forwardStates.get(name) !== text);
    this.forwardStates = next;
    return changed.map(([name, text]) => `${name} ${text}`);
  }

  private failed(error: Error, attempt: number, retryInMs: number, repeated: boolean): void {
    const { state, log } = this.deps;
    state.passError = error.message;
    // A new error is a warning (libvirtd restarts cause short ones); one
    // that persists becomes an error, once; retries in between are debug.
    if (!repeated)
      log.warn({ attempt, retry_ms: retryInMs }, `reconcile failed: ${error.message} (retrying with back-off)`);
    else if (attempt === PERSISTENT_FAILURES)
      log.error({ attempt }, `reconcile still failing after ${attempt} attempts: ${error.message}`);
    else log.debug({ attempt, retry_ms: retryInMs }, 'reconcile failed again');
    this.deps.changed();
  }

  private recovered(failures: number): void {
    this.deps.state.passError = undefined;
    this.deps.log.info({ failures }, `reconcile succeeded again after ${failures} failed attempts`);
  }
}

// The daemon's [metrics] textfile: every `interval` seconds, the live rule
// counters and the daemon's own figures, rendered as `kvmnftd metrics` prints
// them, written atomically (metrics/textfile.ts). A failure is logged once per
// distinct error (not every interval) and kept in the state for `kvmnftd
// status`; the next success says so once. SIGHUP re-reads [metrics]; SIGTERM
// clears the timer.
import type { Config } from '../config/config.js';
import type { Logger } from '../log/logger.js';
import { renderMetrics } from '../metrics/exposition.js';
import { figuresOf, metricsInputs } from '../metrics/gather.js';
import { writeTextfile } from '../metrics/textfile.js';
import type { Ruleset } from '../nft/ruleset.js';
import type { DaemonState } from './state.js';

export interface MetricsWriterDeps {
  state: DaemonState;
  log: Logger;
  readRuleset: () => Promise<Ruleset>;
  /** The state changed (a write started or stopped failing): the status follows. */
  changed: () => void;
  /** Replaceable in tests. */
  write?: (path: string, text: string) => void;
}

export class MetricsWriter {
  private timer: NodeJS.Timeout | undefined;
  private settings: Config['metrics'] | undefined;
  private running: Promise<void> | undefined;

  constructor(private readonly deps: MetricsWriterDeps) {}

  /** (Re)starts writing with these settings, the first write at once; off when `textfile` is not set. */
  set(settings: Config['metrics']): void {
    const same =
      this.timer !== undefined &&
      this.settings !== undefined &&
      this.settings.textfile === settings.textfile &&
      this.settings.interval === settings.interval;
    if (same) return;
    this.clear();
    this.settings = settings;
    if (settings.textfile === undefined) {
      this.fail(undefined);
      return;
    }
    this.timer = setInterval(() => void this.writeOnce(), settings.interval * 1000);
    void this.writeOnce();
  }

  /** Writes the file now (a write already under way is not doubled); resolves when done. */
  writeOnce(): Promise<void> {
    this.running ??= this.write().finally(() => (this.running = undefined));
    return this.running;
  }

  /** No more writes; resolves when a write under way has ended. */
  async stop(): Promise<void> {
    this.clear();
    this.settings = undefined;
    await this.running;
  }

  private clear(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  private async write(): Promise<void> {
    const path = this.settings?.textfile;
    if (path === undefined) return;
    const { state } = this.deps;
    const { inputs, rulesetError } = await metricsInputs(this.deps.readRuleset, figuresOf(state));
    if (this.settings?.textfile !== path) return; // stopped or re-pointed meanwhile
    try {
      (this.deps.write ?? writeTextfile)(path, renderMetrics(inputs));
      this.fail(rulesetError === undefined ? undefined : `cannot read the ruleset: ${rulesetError}`, path);
    } catch (err) {
      this.fail(`cannot write ${path}: ${(err as Error).message}`, path);
    }
  }

  /** Records the outcome; logs only a new error, and the recovery from one. */
  private fail(error: string | undefined, path?: string): void {
    const { state, log } = this.deps;
    const before = state.metricsError;
    if (error === before) return;
    state.metricsError = error;
    if (error !== undefined) log.warn(`metrics textfile: ${error} (logged once while it persists)`);
    else if (path !== undefined) log.info(`metrics textfile: ${path} written again`);
    this.deps.changed();
  }
}

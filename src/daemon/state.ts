// The daemon's state: one object that its units (the pass, the libvirt
// connection, reload, stop) read and write. What the daemon reports about
// itself (STATUS=, the state file) is derived from it in status.ts.
import type { Config } from '../config/config.js';
import type { GuestFacts } from '../libvirt/guest-facts.js';
import type { NetworkParse } from '../libvirt/model.js';
import type { MonitorScope } from '../nft/monitor-scope.js';
import type { LibvirtWatch } from './libvirt-watch.js';

export interface DaemonState {
  /** The configuration in force (SIGHUP replaces it). */
  config: Config;
  /** The open libvirt event source; undefined while libvirt is away. */
  watch: LibvirtWatch | undefined;
  /** Why there is no event source; undefined while connected. */
  watchFault: string | undefined;
  /** Failed attempts to open the event source since one last served a pass: the reconnect back-off. */
  reconnectAttempts: number;
  /** The networks libvirt last reported: while libvirt is away, a pass plans from them. */
  lastNetworks: NetworkParse[] | undefined;
  /** libvirt's guests as the last pass saw them (port forwards); while libvirt is away, a pass keeps them. */
  guestFacts: GuestFacts | undefined;
  /** Names of the networks the last plan covered. */
  networks: string[];
  /** The last transaction applied: when, and how long it took. */
  lastChange: { at: Date; ms: number } | undefined;
  /** The last pass's failure, until a pass succeeds. */
  passError: string | undefined;
  /** What the last plan had to leave out (its first error). */
  planError: string | undefined;
  /** Why the last pass applied its plan without the foreign part (sync.ts); the next pass tries it whole again. */
  foreignDegraded: string | undefined;
  /** Why applying is suspended: the plan after an own transaction was not empty (convergence-guard.ts). */
  suspended: string | undefined;
  /** Why the FirewallD1.Reloaded broadcasts stopped while libvirt's chains are missing (libvirt-restore.ts). */
  restoreGaveUp: string | undefined;
  /** Which `nft monitor` events start a pass, from the ruleset the last pass read. */
  scope: MonitorScope | undefined;
  /** Date.now() when the running pass started; undefined between passes. */
  passStartedAt: number | undefined;
  /** When the last pass ended. */
  lastPassAt: Date | undefined;
  /** READY=1 was sent: from then on every change is published. */
  ready: boolean;
  /** SIGTERM/SIGINT arrived: nothing new is started. */
  stopping: boolean;
  /** The daemon's own figures since it started (`kvmnftd metrics`, the [metrics] textfile). */
  figures: DaemonCounts;
  /** Why the last write of the [metrics] textfile failed; undefined once one succeeds (or it is off). */
  metricsError: string | undefined;
}

/** Counts since the daemon started, and the last pass's duration. */
export interface DaemonCounts {
  passes: number;
  transactions: number;
  driftRepairs: number;
  libvirtRestores: number;
  /** undefined before the first pass ended. */
  lastPassMs: number | undefined;
}

export function initialState(config: Config): DaemonState {
  return {
    config,
    watch: undefined,
    watchFault: 'not connected yet',
    reconnectAttempts: 0,
    lastNetworks: undefined,
    guestFacts: undefined,
    networks: [],
    lastChange: undefined,
    passError: undefined,
    planError: undefined,
    foreignDegraded: undefined,
    suspended: undefined,
    restoreGaveUp: undefined,
    scope: undefined,
    passStartedAt: undefined,
    lastPassAt: undefined,
    ready: false,
    stopping: false,
    figures: { passes: 0, transactions: 0, driftRepairs: 0, libvirtRestores: 0, lastPassMs: undefined },
    metricsError: undefined,
  };
}

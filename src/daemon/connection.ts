// Keeps libvirt's event source open: connect, and after a fault or a failed
// connect try again with back-off. Events trigger a pass; so does every
// connect, as a level-triggered catch-up for events missed while away.
import { metadataForwardsOn } from '../config/port-forward.js';
import { guestFactsNeeded } from '../libvirt/guest-facts.js';
import type { Logger } from '../log/logger.js';
import { backoffMs, type Backoff } from './backoff.js';
import { openWatch, type EventsMode } from './libvirt-watch.js';
import type { DaemonState } from './state.js';

const RECONNECT: Backoff = { baseMs: 500, maxMs: 30_000 };

export interface ConnectionDeps {
  state: DaemonState;
  events: EventsMode;
  log: Logger;
  trigger: (reason: string) => void;
  /** Called when the source is lost: the status follows. */
  changed: () => void;
  /** Opens the event source (replaceable in tests). */
  open?: typeof openWatch;
}

export class LibvirtConnection {
  private timer: NodeJS.Timeout | undefined;
  /** The last "which transport and why" line logged, to log it only when it changes. */
  private transportNote: string | undefined;

  constructor(private readonly deps: ConnectionDeps) {}

  /** Opens the event source; on failure, schedules the next attempt. Never throws. */
  async connect(): Promise<void> {
    const { state, log, trigger } = this.deps;
    this.timer = undefined;
    if (state.stopping) return;
    let live = false; // events during the connect itself are covered by the catch-up pass below
    try {
      const open = this.deps.open ?? openWatch;
      const { watch: opened, why } = await open(
        this.deps.events,
        state.config.libvirtUri,
        {
          onChange: (reason, network) => {
            if (!live) return;
            log.debug(
              { event: reason, ...(network ? { network } : {}) },
              `event: ${reason}${network ? ` (${network})` : ''}`,
            );
            trigger(reason);
          },
          onNote: (message) => log.warn(`${message}; one-shot virsh meanwhile`),
          onFault: (reason) => {
            // During the connect itself a fault surfaces as openWatch's rejection.
            if (!live || state.watch !== opened) return;
            state.watch = undefined;
            if (reason !== state.watchFault) log.warn(`lost the libvirt event source: ${reason}; reconnecting`);
            state.watchFault = reason;
            opened.close();
            this.scheduleReconnect();
            this.deps.changed();
          },
        },
        undefined,
        guestFactsNeeded(state.config),
        metadataForwardsOn(state.config),
      );
      if (state.stopping) {
        opened.close();
        return;
      }
      state.watch = opened;
      live = true;
      if (why !== this.transportNote) log.info({ transport: opened.transport }, why);
      this.transportNote = why;
      if (state.reconnectAttempts > 0)
        log.info({ transport: opened.transport }, `event source connected after ${state.reconnectAttempts} attempts`);
      state.watchFault = undefined;
      // Events may have been missed while disconnected: level-triggered catch-up.
      trigger('event source connected');
    } catch (err) {
      const reason = (err as Error).message;
      if (reason !== state.watchFault)
        log.warn(`cannot open a libvirt event source: ${reason}; retrying with back-off`);
      state.watchFault = reason;
      this.scheduleReconnect();
      // At start-up the first pass decides READY; later, drift is still
      // caught by the nft monitor while libvirt is away.
      if (!state.ready) trigger('event source unavailable');
    }
  }

  /** libvirt_uri changed, or whether forwards need libvirt's guests: drop the open source and connect anew. */
  reopen(): void {
    const { state } = this.deps;
    if (!state.watch) return; // the reconnect loop uses the new URI already
    state.watch.close();
    state.watch = undefined;
    state.watchFault = 'reconnecting for a new configuration';
    void this.connect();
  }

  /** Stops reconnecting; the open source stays until close(). */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.deps.state.watch?.close();
  }

  private scheduleReconnect(): void {
    if (this.deps.state.stopping || this.timer) return;
    this.deps.state.reconnectAttempts++;
    this.timer = setTimeout(() => void this.connect(), backoffMs(this.deps.state.reconnectAttempts, RECONNECT));
  }
}

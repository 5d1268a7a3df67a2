// Process signals: SIGTERM and SIGINT stop the daemon once (a second one
// while it stops is ignored), SIGHUP reloads.
type Signal = 'SIGTERM' | 'SIGINT' | 'SIGHUP';

export interface SignalHandlers {
  stop: (signal: 'SIGTERM' | 'SIGINT') => Promise<void>;
  reload: () => Promise<void>;
}

export interface SignalSubscription {
  /** Resolves when the stop that the first SIGTERM/SIGINT started has finished. */
  stopped: Promise<void>;
  /** Removes the handlers. */
  dispose(): void;
}

/** Where signals arrive: the process (tests pass an EventEmitter). */
export interface SignalSource {
  on(signal: Signal, listener: () => void): unknown;
  off(signal: Signal, listener: () => void): unknown;
}

export function handleSignals(handlers: SignalHandlers, source: SignalSource = process): SignalSubscription {
  let stopping = false;
  let stopped: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const stop = (signal: 'SIGTERM' | 'SIGINT'): void => {
    if (stopping) return;
    stopping = true;
    void handlers.stop(signal).finally(stopped);
  };
  const listeners: Record<Signal, () => void> = {
    SIGTERM: () => stop('SIGTERM'),
    SIGINT: () => stop('SIGINT'),
    SIGHUP: () => void handlers.reload(),
  };
  for (const [signal, listener] of Object.entries(listeners)) source.on(signal as Signal, listener);
  return {
    stopped: done,
    dispose() {
      for (const [signal, listener] of Object.entries(listeners)) source.off(signal as Signal, listener);
    },
  };
}

// `kvmnftd run`: the daemon. Its own module, so that the one-shot commands
// never load the daemon's code and the daemon never loads theirs.
import { runDaemon } from '../daemon/daemon.js';
import type { Logger } from '../log/logger.js';
import type { Args } from './args.js';

const READY_TIMEOUT_MS = 20_000;

export function runDaemonCommand(args: Args, log: Logger): Promise<number> {
  return runDaemon(
    {
      ...(args.config === undefined ? {} : { configPath: args.config }),
      events: args.events,
      readyTimeoutMs: READY_TIMEOUT_MS,
    },
    log,
  );
}

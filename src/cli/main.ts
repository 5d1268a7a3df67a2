#!/usr/bin/env node
// kvmnftd's entry point: parse, load config, run one command, map errors to
// exit codes (0 ok, 1 runtime failure, 2 usage/config).
import { createRequire } from 'node:module';
import { parseCommandLine, UsageError, USAGE, type Args } from './args.js';
import { COMMAND_HELP } from './help.js';

// Each command loads its own modules, when it runs: `check` loads no logger
// and no nft code, `run` none of the operator commands' (doctor, status,
// metrics), and they none of the daemon's. What a process never imports
// costs it neither start-up time nor resident memory.

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

function version(): string {
  const require = createRequire(import.meta.url);
  return (require('../../package.json') as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  let args: Args;
  try {
    args = parseCommandLine(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`kvmnftd: ${err.message}\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    throw err;
  }
  if (args.command === 'help') {
    process.stdout.write(args.helpFor === undefined ? USAGE : COMMAND_HELP[args.helpFor]);
    return EXIT_OK;
  }
  if (args.command === 'version') {
    process.stdout.write(`kvmnftd ${version()}\n`);
    return EXIT_OK;
  }
  if (args.command === 'check') return (await import('./check.js')).runCheck(args.config);
  const { createLogger } = await import('../log/logger.js');
  const log = createLogger(args.logLevel);
  if (args.command === 'run') {
    (await import('../daemon/v8-flags.js')).applyDaemonV8Flags();
    return (await import('./run.js')).runDaemonCommand(args, log);
  }
  if (args.command === 'reload') return (await import('./commands.js')).runReload(log);
  const { ConfigError, loadConfig } = await import('../config/config.js');
  const { LockBusyError } = await import('../host/lock.js');
  try {
    const { config, source } = loadConfig(args.config);
    log.debug({ config: source }, `configuration from ${source}`);
    switch (args.command) {
      case 'plan':
        if (args.diff) return await (await import('./operator.js')).runPlanDiff(args, config, log);
        return await (await import('./commands.js')).runPlan(args, config, log);
      case 'status':
        return await (await import('./operator.js')).runStatus(args, config, source, log);
      case 'metrics':
        return await (await import('./operator.js')).runMetrics(config, log);
      case 'doctor':
        return await (await import('./operator.js')).runDoctor(args, config, log);
      case 'apply':
        return await (await import('./commands.js')).runApply(args, config, log);
      case 'remove':
        return await (await import('./commands.js')).runRemove(args, config, log);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      log.error({ file: err.file, key: err.key }, `configuration error: ${err.message}`);
      return EXIT_USAGE;
    }
    if (err instanceof LockBusyError) {
      log.error(err.message);
      return EXIT_FAILURE;
    }
    log.error((err as Error).message);
    return EXIT_FAILURE;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`kvmnftd: internal error: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = EXIT_FAILURE;
  },
);

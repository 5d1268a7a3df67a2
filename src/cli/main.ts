#!/usr/bin/env node
// kvmnftd's entry point: parse, load config, run one command, map errors to
// exit codes (0 ok, 1 runtime failure, 2 usage/config).
import { createRequire } from 'node:module';
import { ConfigError, loadConfig } from '../config/config.js';
import { LockBusyError } from '../host/lock.js';
import { createLogger } from '../log/logger.js';
import { parseCommandLine, UsageError, USAGE, type Args } from './args.js';
import { runCheck } from './check.js';
import { runApply, runDaemonCommand, runPlan, runReload, runRemove } from './commands.js';
import { COMMAND_HELP } from './help.js';
import { runDoctor, runMetrics, runPlanDiff, runStatus } from './operator.js';

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
  if (args.command === 'check') return runCheck(args.config);
  const log = createLogger(args.logLevel);
  if (args.command === 'run') return runDaemonCommand(args, log);
  if (args.command === 'reload') return runReload(log);
  try {
    const { config, source } = loadConfig(args.config);
    log.debug({ config: source }, `configuration from ${source}`);
    switch (args.command) {
      case 'plan':
        return await (args.diff ? runPlanDiff(args, config, log) : runPlan(args, config, log));
      case 'status':
        return await runStatus(args, config, source, log);
      case 'metrics':
        return await runMetrics(config, log);
      case 'doctor':
        return await runDoctor(args, config, log);
      case 'apply':
        return await runApply(args, config, log);
      case 'remove':
        return await runRemove(args, config, log);
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

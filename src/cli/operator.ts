// Operator commands: status, doctor, plan --diff. Thin wiring; the logic lives
// in src/status/ and src/doctor/ (filled in by the next commits).
import type { Config } from '../config/config.js';
import type { Logger } from '../log/logger.js';
import type { Args } from './args.js';

export function runStatus(_args: Args, _config: Config, _source: string, log: Logger): Promise<number> {
  log.error('status: not implemented yet');
  return Promise.resolve(1);
}

export function runDoctor(_args: Args, _config: Config, log: Logger): Promise<number> {
  log.error('doctor: not implemented yet');
  return Promise.resolve(1);
}

export function runPlanDiff(_args: Args, _config: Config, log: Logger): Promise<number> {
  log.error('plan --diff: not implemented yet');
  return Promise.resolve(1);
}

// plan / apply / remove: thin wiring of the adapters around the pure planner.
import type { Config } from '../config/config.js';
import { computePlan, logNotes, syncOnce } from '../engine/sync.js';
import { runningDaemon, takeLock } from '../host/lock.js';
import { runtimeDir } from '../host/runtime.js';
import { virshSource, xmlFileSource, type NetworkSource } from '../libvirt/sources.js';
import type { Logger } from '../log/logger.js';
import { nftRunner } from '../nft/nft-runner.js';
import { renderBatch } from '../nft/render-text.js';
import type { Args } from './args.js';

function sourceFor(args: Args, config: Config): NetworkSource {
  return args.fromXml.length > 0 ? xmlFileSource(args.fromXml) : virshSource(config.libvirtUri);
}

export async function runPlan(args: Args, config: Config, log: Logger): Promise<number> {
  const nft = nftRunner(runtimeDir());
  const result = await computePlan(await sourceFor(args, config)(), config, nft);
  logNotes(result.notes, log);
  process.stdout.write(args.json ? `${JSON.stringify(result.batch, null, 2)}\n` : renderBatch(result.batch.nftables));
  return 0;
}

export async function runApply(args: Args, config: Config, log: Logger): Promise<number> {
  const dir = runtimeDir();
  const networks = await sourceFor(args, config)();
  const release = takeLock(dir);
  try {
    const { plan, applied, durationMs } = await syncOnce(networks, config, nftRunner(dir), log);
    const names = plan.networks.map((n) => n.name).join(', ') || 'none';
    if (applied) log.info({ commands: plan.batch.nftables.length, duration_ms: durationMs }, `applied ${plan.batch.nftables.length} nft commands in one transaction (networks: ${names}) in ${durationMs} ms`);
    else log.info({ duration_ms: durationMs }, `ruleset already up to date (networks: ${names})`);
    return plan.notes.some((n) => n.level === 'error') ? 1 : 0;
  } finally {
    release();
  }
}

export async function runRemove(args: Args, config: Config, log: Logger): Promise<number> {
  const dir = runtimeDir();
  const daemon = runningDaemon(dir);
  if (daemon !== undefined && !args.force) {
    log.error(`the kvmnftd daemon (PID ${daemon}) is running and would put the rules back: stop it first (systemctl stop kvmnftd) or use --force`);
    return 1;
  }
  const release = takeLock(dir);
  try {
    const { plan, applied, durationMs } = await syncOnce([], config, nftRunner(dir), log);
    if (applied) log.info({ commands: plan.batch.nftables.length, duration_ms: durationMs }, `removed kvmnftd's rules in ${durationMs} ms`);
    else log.info('nothing of kvmnftd\'s to remove');
    return 0;
  } finally {
    release();
  }
}

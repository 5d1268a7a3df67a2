// plan / apply / remove: thin wiring of the adapters around the pure planner.
import type { Config } from '../config/config.js';
import { holdsDaemonLock, runningDaemon, takeLock } from '../host/lock.js';
import { runtimeDir, runtimePath } from '../host/runtime.js';
import { gatherPlanFacts } from '../libvirt/guest-facts.js';
import { commandSource } from '../libvirt/sources.js';
import type { Logger } from '../log/logger.js';
import { logMessages } from '../log/messages.js';
import { nftRunner } from '../nft/nft-runner.js';
import { nftSessionRunner } from '../nft/nft-session.js';
import { plan } from '../nft/plan.js';
import { planMessages, stageFields, syncOnce } from '../nft/sync.js';
import { renderBatch } from '../nft/render-text.js';
import { readReloadState } from '../daemon/reload.js';
import type { Args } from './args.js';

export async function runPlan(args: Args, config: Config, log: Logger): Promise<number> {
  const nft = nftRunner(runtimeDir());
  const networks = await commandSource(args.fromXml, config.libvirtUri)();
  const facts = await gatherPlanFacts(config, networks);
  const result = plan(networks, config, await nft.readRuleset(), facts);
  logMessages(planMessages(result), log);
  process.stdout.write(args.json ? `${JSON.stringify(result.batch, null, 2)}\n` : renderBatch(result.batch.nftables));
  return 0;
}

/** From this many networks, `apply` expects a batch too big for the nft session (BIG_BATCH_BYTES). */
const SPARE_FROM_NETWORKS = 2;

export async function runApply(args: Args, config: Config, log: Logger): Promise<number> {
  const dir = runtimeDir();
  // The daemon holds the apply lock for its life (daemon/apply-lock.ts), and would undo another plan at once.
  const daemon = runningDaemon(dir);
  if (daemon !== undefined) {
    log.error(
      `the kvmnftd daemon (PID ${daemon}) keeps the ruleset: change its config and run kvmnftd reload (systemctl reload kvmnftd), or stop it first`,
    );
    return 1;
  }
  // One nft process reads the ruleset and commits a small batch (nft-session.ts), where one-shot nft takes two;
  // it starts while libvirt answers. A big batch's nft starts while the ruleset is read and planned (nft-spare.ts).
  const nft = nftSessionRunner(dir);
  nft.start();
  // One network's batch fits the session (about 6 KiB); more go to a one-shot nft, started as soon as they are
  // known to be more: XML files count as active networks, libvirt's are known when it answers.
  if (args.fromXml.length >= SPARE_FROM_NETWORKS) nft.startSpare();
  try {
    const networks = await commandSource(args.fromXml, config.libvirtUri)();
    if (networks.length >= SPARE_FROM_NETWORKS) nft.startSpare();
    const facts = await gatherPlanFacts(config, networks);
    const release = takeLock(dir);
    try {
      const { plan, applied, durationMs, stages, messages, foreignDegraded } = await syncOnce(networks, config, nft, {
        facts,
      });
      const times = { duration_ms: durationMs, ...stageFields(stages) };
      logMessages(messages, log);
      if (foreignDegraded !== undefined) {
        log.warn(`${foreignDegraded}; run kvmnftd apply again`);
        return 1;
      }
      const names = plan.networks.map((n) => n.name).join(', ') || 'none';
      if (applied)
        log.info(
          { commands: plan.batch.nftables.length, ...times },
          `applied ${plan.batch.nftables.length} nft commands in one transaction (networks: ${names}) in ${durationMs} ms`,
        );
      else log.info(times, `ruleset already up to date (networks: ${names})`);
      return plan.notes.some((n) => n.level === 'error') ? 1 : 0;
    } finally {
      release();
    }
  } finally {
    nft.close();
  }
}

export async function runRemove(args: Args, config: Config, log: Logger): Promise<number> {
  const dir = runtimeDir();
  const daemon = runningDaemon(dir);
  if (daemon !== undefined && !args.force) {
    log.error(
      `the kvmnftd daemon (PID ${daemon}) is running and would put the rules back: stop it first (systemctl stop kvmnftd) or use --force`,
    );
    return 1;
  }
  // The daemon holds the apply lock for its life: with --force, remove goes without it (the daemon re-applies).
  const release = daemon === undefined ? takeLock(dir) : undefined;
  if (daemon !== undefined)
    log.warn(`the kvmnftd daemon (PID ${daemon}) is running: it puts the rules back on its next pass`);
  try {
    const { plan, applied, durationMs } = await syncOnce([], config, nftRunner(dir));
    if (applied)
      log.info(
        { commands: plan.batch.nftables.length, duration_ms: durationMs },
        `removed kvmnftd's rules in ${durationMs} ms`,
      );
    else log.info("nothing of kvmnftd's to remove");
    return 0;
  } finally {
    release?.();
  }
}

/**
 * ExecReload= helper: systemd 252 has no Type=notify-reload, and a bare
 * `kill -HUP` returns before the reload is done. This sends SIGHUP and
 * waits for the daemon to record that reload's outcome.
 */
export async function runReload(log: Logger): Promise<number> {
  const dir = runtimeDir();
  const pid = runningDaemon(dir);
  if (pid === undefined) {
    log.error('no running kvmnftd daemon to reload');
    return 1;
  }
  // The PID comes from a file: signal it only if that process really is the daemon.
  if (!holdsDaemonLock(pid, dir)) {
    log.error(`PID ${pid} does not hold ${runtimePath(dir, 'daemonLock')}: not the kvmnftd daemon, not signalled`);
    return 1;
  }
  const before = readReloadState(dir)?.generation ?? 0;
  process.kill(pid, 'SIGHUP');
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const state = readReloadState(dir);
    if (state && state.generation > before) {
      if (state.outcome === 'ok') {
        log.info('reload done');
        return 0;
      }
      log.error(`reload: ${state.outcome}`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  log.error('the daemon did not finish the reload within 60 s');
  return 1;
}

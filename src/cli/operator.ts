// Operator commands: status, doctor, plan --diff. Thin wiring: gather facts
// through the adapters, hand them to the pure evaluators, print.
import type { Config } from '../config/config.js';
import { diagnose, doctorReport, renderDoctor } from '../doctor/index.js';
import {
  busFacts,
  dropLogFact,
  iptablesLegacyFacts,
  libvirtBackendSetting,
  nftVersionFact,
  sysctlFacts,
} from '../doctor/gather.js';
import type { DoctorFacts } from '../doctor/types.js';
import { readDaemonState } from '../daemon/status.js';
import { hostListeners } from '../host/listeners.js';
import { runningDaemon } from '../host/lock.js';
import { runtimeDir } from '../host/runtime.js';
import { gatherGuestFacts, gatherPlanFacts, metadataForwardsFrom, planFactsFrom } from '../libvirt/guest-facts.js';
import type { IgnoredMetadata } from '../libvirt/metadata-forwards.js';
import type { NetworkParse } from '../libvirt/model.js';
import { commandSource } from '../libvirt/sources.js';
import type { Logger } from '../log/logger.js';
import { logMessages } from '../log/messages.js';
import { planDiff, renderDiff } from '../nft/diff.js';
import { nftRunner } from '../nft/nft-runner.js';
import { plan, type PlanFacts } from '../nft/plan.js';
import { planMessages } from '../nft/sync.js';
import type { Ruleset } from '../nft/ruleset.js';
import { renderMetrics } from '../metrics/exposition.js';
import { figuresFromStateFile, metricsInputs } from '../metrics/gather.js';
import { evaluateStatus, type StatusInputs } from '../status/evaluate.js';
import { daemonFacts } from '../status/gather.js';
import { renderStatus } from '../status/render.js';
import type { Args } from './args.js';

type Outcome<T> = { ok: T } | { error: string };

async function attempt<T>(f: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: await f() };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/**
 * The active networks, and the port forwards resolved against them (guest-facts.ts), as plan() gets them;
 * with the domains' metadata forwards that were left out, and why (doctor).
 */
function networksFrom(
  args: Args,
  config: Config,
): Promise<Outcome<{ networks: NetworkParse[]; facts: PlanFacts; metadataIgnored: IgnoredMetadata[] }>> {
  return attempt(async () => {
    const networks = await commandSource(args.fromXml, config.libvirtUri)();
    const facts = await gatherGuestFacts(config, networks);
    return {
      networks,
      facts: planFactsFrom(config, networks, facts),
      metadataIgnored: metadataForwardsFrom(config, networks, facts).ignored,
    };
  });
}

async function liveRulesetOf(dir: string): Promise<Outcome<Ruleset>> {
  return attempt(() => nftRunner(dir).readRuleset());
}

export async function runStatus(args: Args, config: Config, source: string, _log: Logger): Promise<number> {
  const dir = runtimeDir();
  const [networks, live, daemon] = await Promise.all([
    networksFrom(args, config),
    liveRulesetOf(dir),
    daemonFacts(dir),
  ]);
  const libvirtSource = args.fromXml.length > 0 ? 'xml-files' : 'libvirt';
  const facts: StatusInputs = {
    config,
    configSource: source,
    libvirt:
      'ok' in networks
        ? { source: libvirtSource, networks: networks.ok.networks, facts: networks.ok.facts }
        : { source: libvirtSource, error: networks.error },
    ruleset: 'ok' in live ? { live: live.ok } : { error: live.error },
    daemon,
    checkedAt: new Date(),
  };
  const report = evaluateStatus(facts);
  process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : renderStatus(report));
  return report.exit_code;
}

/** `kvmnftd metrics`: the exposition on stdout; exit 1 (after printing) when the ruleset could not be read. */
export async function runMetrics(_config: Config, log: Logger): Promise<number> {
  const dir = runtimeDir();
  const daemon = figuresFromStateFile(dir);
  const { inputs, rulesetError } = await metricsInputs(() => nftRunner(dir).readRuleset(), daemon);
  process.stdout.write(renderMetrics(inputs));
  if (daemon === undefined) log.info('no kvmnftd daemon runs: only the rule counters (kvmnftd_daemon_up 0)');
  if (rulesetError === undefined) return 0;
  log.error(`cannot read the ruleset: ${rulesetError}`);
  return 1;
}

export async function runDoctor(args: Args, config: Config, _log: Logger): Promise<number> {
  const dir = runtimeDir();
  const [networks, live, sysctl, nft, bus, backend, legacy, listeners] = await Promise.all([
    networksFrom(args, config),
    liveRulesetOf(dir),
    sysctlFacts(),
    nftVersionFact(),
    busFacts(),
    libvirtBackendSetting(),
    iptablesLegacyFacts(),
    hostListeners(),
  ]);
  let ruleset: DoctorFacts['ruleset'];
  if ('ok' in live) {
    const planned = 'ok' in networks ? plan(networks.ok.networks, config, live.ok, networks.ok.facts) : undefined;
    ruleset = {
      live: live.ok,
      plannedCommands: planned?.batch.nftables.length ?? 0,
      forwards: planned?.forwards ?? [],
    };
  } else ruleset = { error: live.error };
  const facts: DoctorFacts = {
    config,
    libvirt: 'ok' in networks ? { networks: networks.ok.networks } : { error: networks.error },
    ruleset,
    listeners,
    ...('ok' in networks ? { metadataIgnored: networks.ok.metadataIgnored } : {}),
    sysctl,
    nft,
    bus,
    ...(backend === undefined ? {} : { libvirtConfiguredBackend: backend }),
    iptablesLegacy: legacy,
    dropLog: dropLogFact(),
    ...daemonDegradedFact(dir),
  };
  const report = doctorReport(diagnose(facts), new Date());
  process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : renderDoctor(report));
  return report.exit_code;
}

function daemonDegradedFact(dir: string): Pick<DoctorFacts, 'daemonDegraded'> {
  const degraded = runningDaemon(dir) === undefined ? undefined : readDaemonState(dir)?.degraded;
  return degraded ? { daemonDegraded: degraded } : {};
}

export async function runPlanDiff(args: Args, config: Config, log: Logger): Promise<number> {
  const networks = await commandSource(args.fromXml, config.libvirtUri)();
  const facts = await gatherPlanFacts(config, networks);
  const live = await nftRunner(runtimeDir()).readRuleset();
  const result = plan(networks, config, live, facts);
  logMessages(planMessages(result), log);
  const lines = planDiff(live, result.batch);
  if (lines.length === 0) {
    log.info('no changes: the live ruleset is what kvmnftd wants');
    return 0;
  }
  process.stdout.write(
    `--- live ruleset\n+++ after the next apply (${result.batch.nftables.length} nft command${result.batch.nftables.length === 1 ? '' : 's'})\n${renderDiff(lines)}`,
  );
  return 0;
}

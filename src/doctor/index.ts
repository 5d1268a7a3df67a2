// `kvmnftd doctor`: every check, in the order a reader should see them.
import { checkDropChains } from './drop-chains.js';
import { checkFirewalld, checkIptablesLegacy } from './foreign.js';
import { checkForwardShadowing, checkForwardTargets, checkForwardsBlocked } from './forwards.js';
import { checkBrNetfilter, checkForwarding } from './host.js';
import { checkLibvirtBackend, checkLibvirtDbus, checkLibvirtReachable } from './libvirt.js';
import { checkMetadataForwards } from './metadata-forwards.js';
import { checkNftVersion } from './nft-version.js';
import { checkPolicies } from './policy.js';
import {
  checkAdminTable,
  checkIptablesNameCollision,
  checkOwnTable,
  checkRulesApplied,
  checkRuleset,
} from './tables.js';
import { FINDING_ALIASES, type DoctorFacts, type Finding, type Severity } from './types.js';

export const CHECKS: ReadonlyArray<(facts: DoctorFacts) => Finding[]> = [
  checkFirewalld,
  checkRuleset,
  checkLibvirtReachable,
  checkAdminTable,
  checkOwnTable,
  checkRulesApplied,
  checkDropChains,
  checkForwardsBlocked,
  checkForwardTargets,
  checkForwardShadowing,
  checkIptablesLegacy,
  checkForwarding,
  checkBrNetfilter,
  checkLibvirtBackend,
  checkIptablesNameCollision,
  checkNftVersion,
  checkLibvirtDbus,
  checkMetadataForwards,
  checkPolicies,
];

const RANK: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

/** All findings, errors first (stable within a severity). */
export function diagnose(facts: DoctorFacts): Finding[] {
  return CHECKS.flatMap((check) => check(facts))
    .map((f, i) => ({ f, i }))
    .sort((a, b) => RANK[a.f.severity] - RANK[b.f.severity] || a.i - b.i)
    .map(({ f }) => f);
}

export const DOCTOR_SCHEMA_ID = 'kvmnftd.doctor/1';

/** A finding as `doctor --json` prints it. */
export interface ReportedFinding extends Omit<Finding, 'id'> {
  /** The finding's id; for a renamed finding, for one release still its old id (FINDING_ALIASES). */
  id: string;
  /** Every id the finding answers to, its current id first: match on these. */
  ids: string[];
}

export interface DoctorReport {
  schema: typeof DOCTOR_SCHEMA_ID;
  checked_at: string;
  exit_code: 0 | 3;
  summary: Record<Severity, number>;
  findings: ReportedFinding[];
}

export function reportedFinding({ id, ...rest }: Finding): ReportedFinding {
  const alias = FINDING_ALIASES[id];
  return { id: alias ?? id, ids: alias === undefined ? [id] : [id, alias], ...rest };
}

export function doctorReport(findings: Finding[], at: Date): DoctorReport {
  const summary: Record<Severity, number> = { error: 0, warning: 0, info: 0 };
  for (const f of findings) summary[f.severity]++;
  return {
    schema: DOCTOR_SCHEMA_ID,
    checked_at: at.toISOString(),
    exit_code: summary.error + summary.warning > 0 ? 3 : 0,
    summary,
    findings: findings.map(reportedFinding),
  };
}

export function renderDoctor(report: DoctorReport): string {
  const out: string[] = [];
  for (const f of report.findings) {
    const [id, ...was] = f.ids;
    out.push(
      `${f.severity.toUpperCase()} [${id ?? f.id}]${was.length > 0 ? ` (was ${was.join(', ')})` : ''} ${f.title}`,
    );
    for (const e of f.evidence) out.push(`    seen: ${e}`);
    const [first, ...rest] = f.fix.split('\n');
    out.push(`    fix:  ${first ?? ''}`, ...rest.map((l) => `          ${l}`), '');
  }
  const s = report.summary;
  out.push(
    report.findings.length === 0
      ? 'kvmnftd doctor: nothing found'
      : `kvmnftd doctor: ${s.error} error(s), ${s.warning} warning(s), ${s.info} note(s)`,
  );
  return `${out.join('\n')}\n`;
}

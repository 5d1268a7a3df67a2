// Can nft run, and is it new enough for what kvmnftd asks of it? Pure.
import { cannotGather, type DoctorFacts, type Finding } from './types.js';

/** Versions kvmnftd is tested with (Debian 12 and 13). */
export const TESTED_NFT = ['1.0.6', '1.1.3'];

/**
 * What an older nft lacks, by the release kvmnftd knows it from. A nft
 * without JSON at all shows up as ruleset-unreadable (nft -j list ruleset
 * fails), so only the tested floor is listed here.
 */
export const NFT_FEATURES: Array<{ feature: string; since: string; severity: 'error' | 'warning' }> = [
  {
    feature:
      'the oldest release kvmnftd is tested with; an older JSON output may differ from what the planner compares (plans that never become empty) or lack JSON monitor events',
    since: '1.0.6',
    severity: 'warning',
  },
];

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split('.').map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

/** "nftables v1.0.6 (Lester Gooch #5)" -> "1.0.6" */
export function parseNftVersion(text: string): string | undefined {
  return /v?(\d+\.\d+(?:\.\d+)*)/.exec(text)?.[1];
}

export function checkNftVersion(facts: DoctorFacts): Finding[] {
  if ('error' in facts.nft)
    return cannotGather(facts.nft.error, {
      id: 'nft-unusable',
      severity: 'error',
      title: 'nft cannot be run',
      fix: 'apt-get install nftables',
    });
  const version = facts.nft.version;
  const lacking = NFT_FEATURES.filter((f) => compareVersions(version, f.since) < 0);
  if (lacking.length === 0) return [];
  const worst = lacking.some((f) => f.severity === 'error') ? 'error' : 'warning';
  return [
    {
      id: 'nft-too-old',
      severity: worst,
      title: `nft ${version} is older than kvmnftd needs`,
      evidence: lacking.map((f) => `${f.feature}: needs nft >= ${f.since}`),
      fix: `Install nftables ${TESTED_NFT[0]} or newer (Debian 12 ships ${TESTED_NFT[0]}, Debian 13 ${TESTED_NFT[1]}; on older releases from backports).`,
    },
  ];
}

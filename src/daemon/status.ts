// The one-line STATUS= text `systemctl status kvmnftd` shows.
export interface StatusFacts {
  networks: string[];
  degraded: string | undefined;
  lastChange: { at: Date; ms: number } | undefined;
}

const MAX_NAMES = 5;

export function formatStatus(f: StatusFacts): string {
  const names = f.networks.length > MAX_NAMES ? `${f.networks.slice(0, MAX_NAMES).join(', ')}, ...` : f.networks.join(', ');
  const count = `${f.networks.length} network${f.networks.length === 1 ? '' : 's'}${f.networks.length > 0 ? ` (${names})` : ''}`;
  const change = f.lastChange ? `; last change ${f.lastChange.at.toTimeString().slice(0, 8)} applied in ${f.lastChange.ms} ms` : '';
  const text = `${count}${change}`;
  return f.degraded ? `degraded: ${f.degraded.split('\n')[0]!.slice(0, 200)}; ${text}` : text;
}

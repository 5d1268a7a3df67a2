// Other firewall managers on the same host: firewalld (then kvmnftd is the
// wrong tool) and rules loaded through iptables-legacy (x_tables, evaluated
// in addition to every nft table). Pure.
import { activeNetworks, type DoctorFacts, type Finding } from './types.js';

export function checkFirewalld(facts: DoctorFacts): Finding[] {
  if ('error' in facts.bus || !facts.bus.firewalld) return [];
  return [
    {
      id: 'firewalld-running',
      severity: 'error',
      title: 'firewalld is running: kvmnftd is the wrong tool on this host',
      evidence: ['org.fedoraproject.FirewallD1 has an owner on the system bus'],
      fix: "libvirt puts its bridges into firewalld's \"libvirt\" zone and firewalld reloads libvirt's rules itself; an admin ruleset of your own beside firewalld's is not supported. Either keep firewalld and stop kvmnftd (systemctl disable --now kvmnftd; kvmnftd remove --force), or stop firewalld (systemctl disable --now firewalld) and keep your own nftables ruleset with kvmnftd.",
    },
  ];
}

export interface LegacySummary {
  rules: string[];
  dropPolicies: string[];
}

/** The -A lines and the non-ACCEPT policies of an iptables-save dump. */
export function summariseIptablesSave(dump: string, label: string): LegacySummary {
  const rules: string[] = [];
  const dropPolicies: string[] = [];
  let table = '';
  for (const raw of dump.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) table = line.slice(1);
    else if (line.startsWith('-A ')) rules.push(`${label} -t ${table} ${line}`);
    else if (line.startsWith(':')) {
      const [chain, policy] = line.slice(1).split(/\s+/);
      if (policy !== undefined && policy !== 'ACCEPT' && policy !== '-')
        dropPolicies.push(`${label} -t ${table} -P ${chain ?? '?'} ${policy}`);
    }
  }
  return { rules, dropPolicies };
}

export function checkIptablesLegacy(facts: DoctorFacts): Finding[] {
  const l = facts.iptablesLegacy;
  if (!l.installed) return [];
  const v4 = summariseIptablesSave(l.ipv4, 'iptables-legacy');
  const v6 = summariseIptablesSave(l.ipv6, 'ip6tables-legacy');
  const rules = [...v4.rules, ...v6.rules];
  const policies = [...v4.dropPolicies, ...v6.dropPolicies];
  if (rules.length === 0 && policies.length === 0) return [];
  const dropping = policies.length > 0 || rules.some((r) => /-j (DROP|REJECT)\b/.test(r));
  const nets = activeNetworks(facts);
  return [
    {
      id: 'iptables-legacy-rules',
      severity: dropping ? 'error' : 'warning',
      title: `iptables-legacy has ${rules.length} rule${rules.length === 1 ? '' : 's'}${policies.length > 0 ? ` and ${policies.length} drop polic${policies.length === 1 ? 'y' : 'ies'}` : ''}: they are evaluated in addition to nftables and nft list ruleset does not show them`,
      evidence: [
        ...policies,
        ...rules.slice(0, 8),
        ...(rules.length > 8 ? [`... and ${rules.length - 8} more (iptables-legacy-save)`] : []),
      ],
      fix: 'Find who loads them (a package using iptables-legacy, an old /etc/iptables/rules.v4, update-alternatives --display iptables). Keep a copy, then clear them: iptables-legacy-save > /root/iptables-legacy.rules; iptables-legacy -F; iptables-legacy -X; for c in INPUT FORWARD OUTPUT; do iptables-legacy -P $c ACCEPT; done (same with ip6tables-legacy), and switch to the nft backend: update-alternatives --set iptables /usr/sbin/iptables-nft.',
      ...(dropping && nets.length > 0 ? { networks: nets.map((n) => n.name) } : {}),
    },
  ];
}

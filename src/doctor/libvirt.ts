// libvirt itself: reachable? which firewall backend? are its private chains
// still there (the post-flush trap)? is libvirt-dbus there for events? Pure.
import { libvirtWritesRules } from '../libvirt/model.js';
import { libvirtBackendsPresent, libvirtChainsMissing } from '../nft/libvirt-chains.js';
import { activeNetworks, cannotGather, liveRuleset, type DoctorFacts, type Finding } from './types.js';

export function checkLibvirtReachable(facts: DoctorFacts): Finding[] {
  if ('networks' in facts.libvirt) {
    return facts.libvirt.networks.flatMap((p): Finding[] =>
      p.kind === 'invalid'
        ? [
            {
              id: 'network-invalid',
              severity: 'error',
              title: `network ${p.name} is skipped: ${p.field}: ${p.message}`,
              evidence: [`virsh net-dumpxml ${p.name}: ${p.field}`],
              fix: `Correct the definition (virsh net-edit ${p.name}), then virsh net-destroy ${p.name} && virsh net-start ${p.name}. kvmnftd keeps the rules it already had for it meanwhile.`,
              networks: [p.name],
            },
          ]
        : [],
    );
  }
  return cannotGather(facts.libvirt.error, {
    id: 'libvirt-unreachable',
    severity: 'error',
    title: "cannot list libvirt's active networks: every check that needs them is skipped",
    fix: `Is libvirtd (or virtnetworkd) running? systemctl status libvirtd virtnetworkd; virsh -c ${facts.config.libvirtUri} net-list. Or check against XML files: kvmnftd doctor --from-xml FILE.`,
  });
}

export function checkLibvirtBackend(facts: DoctorFacts): Finding[] {
  const live = liveRuleset(facts);
  if (!live) return [];
  const nets = activeNetworks(facts);
  const present = libvirtBackendsPresent(live);
  const configured = facts.libvirtConfiguredBackend;
  const out: Finding[] = [];
  const where = {
    iptables: 'LIBVIRT_* chains in table ip filter (iptables-nft)',
    nftables: 'tables ip/ip6 libvirt_network',
  };
  out.push({
    id: 'libvirt-firewall-backend',
    severity: 'info',
    title: `libvirt's firewall backend: ${present.length > 0 ? present.join(' and ') : configured ? `${configured} (configured; no chains of it in the ruleset)` : 'unknown (none of its chains are in the ruleset)'}`,
    evidence: [
      configured
        ? `/etc/libvirt/network.conf: firewall_backend = "${configured}"`
        : '/etc/libvirt/network.conf sets no firewall_backend (libvirt >= 10.4 picks nftables unless iptables is installed on Debian; older libvirt always uses iptables)',
      ...present.map((b) => `present: ${where[b]}`),
    ],
    fix: "Nothing to fix: kvmnftd works with both. It writes its own rules in its own tables and leaves libvirt's alone.",
  });
  if (configured && present.length > 0 && !present.includes(configured as 'iptables' | 'nftables')) {
    out[0]!.evidence.push(
      `the configured backend (${configured}) differs from the chains in the ruleset (${present.join(', ')}): libvirtd has not been restarted since the change`,
    );
  }
  if (libvirtChainsMissing(live, nets)) {
    const names = nets.filter((n) => libvirtWritesRules(n.mode)).map((n) => n.name);
    const gaveUp = facts.daemonDegraded?.includes('FirewallD1.Reloaded broadcasts') ?? false;
    out.push({
      id: 'libvirt-chains-missing',
      severity: 'error',
      title:
        "libvirt's own firewall chains are gone although networks are running (was the ruleset flushed?): the next virsh net-start will fail",
      evidence: [
        `active networks: ${names.join(', ')}`,
        'neither LIBVIRT_* chains in table ip filter nor table ip libvirt_network exist',
        'libvirt creates its private chains once per libvirtd process; a flush ruleset (systemctl reload nftables) removes them',
        ...(gaveUp ? [`the kvmnftd daemon gave up: ${facts.daemonDegraded ?? ''}`] : []),
      ],
      fix: gaveUp
        ? 'libvirt did not answer the FirewallD1.Reloaded broadcasts: its rules are in iptables-legacy (see ' +
          'iptables-legacy-rules; switch libvirt to iptables-nft or nftables), or its network driver is not ' +
          'running. Restart libvirtd (virtnetworkd on modular daemons): systemctl restart libvirtd.'
        : 'The kvmnftd daemon restores them by itself (daemon.restore_libvirt_rules = true). By hand: dbus-send --system --type=signal /org/fedoraproject/FirewallD1 org.fedoraproject.FirewallD1.Reloaded (libvirt re-creates its chains and rules), or systemctl restart libvirtd (virtnetworkd on modular daemons).',
      networks: names,
    });
  }
  return out;
}

export function checkLibvirtDbus(facts: DoctorFacts): Finding[] {
  if ('error' in facts.bus) {
    return cannotGather(facts.bus.error, {
      id: 'libvirt-dbus-unavailable',
      severity: 'info',
      title: 'the system bus cannot be reached: the daemon would follow libvirt through virsh net-event',
      fix: 'Nothing breaks: virsh net-event works too. For D-Bus events, make the system bus available (dbus / dbus-broker) and install libvirt-dbus.',
    });
  }
  if (facts.bus.libvirtDbus !== 'absent') return [];
  return [
    {
      id: 'libvirt-dbus-unavailable',
      severity: 'info',
      title:
        'libvirt-dbus is not available (org.libvirt neither on the system bus nor activatable): the daemon falls back to virsh net-event',
      evidence: [
        'org.freedesktop.DBus.NameHasOwner("org.libvirt") = false',
        'org.libvirt is not in ListActivatableNames',
      ],
      fix: 'Nothing breaks: the daemon runs one long-lived virsh net-event instead. For D-Bus events: apt-get install libvirt-dbus (then systemctl restart kvmnftd).',
    },
  ];
}

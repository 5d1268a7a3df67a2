// Host settings that decide whether guest traffic is forwarded at all, and
// where bridged traffic is filtered. Pure: reads gathered /proc/sys values.
import { modeForwards } from '../libvirt/model.js';
import { desiredState } from '../nft/desired.js';
import { ipFamily } from '../net/ip.js';
import { activeNetworks, forwardOutcomes, type DoctorFacts, type Finding } from './types.js';

export function checkForwarding(facts: DoctorFacts): Finding[] {
  const nets = activeNetworks(facts);
  const want = desiredState(nets, facts.config);
  const out: Finding[] = [];
  const forwarding = (v6: boolean): string[] =>
    nets.filter((n) => modeForwards(n.mode) && n.ips.some((ip) => ip.cidr.family === (v6 ? 6 : 4))).map((n) => n.name);
  if (want.forwardsIpv4 && facts.sysctl.ipv4Forward === '0') {
    const names = forwarding(false);
    out.push({
      id: 'ipv4-forwarding-off',
      severity: 'error',
      title: `net.ipv4.ip_forward is 0 while network${names.length > 1 ? 's' : ''} ${names.join(', ')} forward${names.length > 1 ? '' : 's'} IPv4: guests reach the host but nothing beyond it`,
      evidence: [
        '/proc/sys/net/ipv4/ip_forward = 0',
        `forwarding.manage_ipv4 = ${String(facts.config.forwarding.manageIpv4)}`,
      ],
      fix: facts.config.forwarding.manageIpv4
        ? 'kvmnftd apply switches it on (or the daemon on its next pass); by hand: sysctl -w net.ipv4.ip_forward=1. If it keeps going back to 0, find who writes it (grep -r ip_forward /etc/sysctl.conf /etc/sysctl.d).'
        : 'sysctl -w net.ipv4.ip_forward=1 and make it permanent: echo net.ipv4.ip_forward=1 > /etc/sysctl.d/90-kvmnftd.conf (or set forwarding.manage_ipv4 = true)',
      networks: names,
    });
  }
  // An IPv6 port forward cannot work at all without it: an error then, not a warning.
  const v6Forwards = forwardOutcomes(facts).filter((o) => o.addresses.some((a) => ipFamily(a) === 6));
  if ((want.forwardsIpv6 || v6Forwards.length > 0) && facts.sysctl.ipv6Forward === '0') {
    const names = forwarding(true);
    const ra = facts.sysctl.ipv6AcceptRa1;
    const fwd = v6Forwards.map((o) => o.name);
    out.push({
      id: 'ipv6-forwarding-off',
      severity: v6Forwards.length > 0 ? 'error' : 'warning',
      title:
        `net.ipv6.conf.all.forwarding is 0 while network${names.length > 1 ? 's' : ''} ${names.join(', ')} ` +
        `route${names.length > 1 ? '' : 's'} IPv6: IPv6 guests reach the host only` +
        (fwd.length > 0 ? `, and the IPv6 port forward${fwd.length > 1 ? 's' : ''} ${fwd.join(', ')} cannot work` : ''),
      evidence: [
        '/proc/sys/net/ipv6/conf/all/forwarding = 0',
        ...v6Forwards.map((o) => `${o.name} forwards to ${o.addresses.filter((a) => ipFamily(a) === 6).join(', ')}`),
        ra.length > 0
          ? `accept_ra = 1 on ${ra.join(', ')}: with forwarding on they would stop accepting router advertisements`
          : 'no interface has accept_ra = 1',
      ],
      fix: `kvmnftd never switches IPv6 forwarding on by itself.${ra.length > 0 ? ` First keep router advertisements working: ${ra.map((i) => `sysctl -w net.ipv6.conf.${i}.accept_ra=2`).join('; ')}. Then:` : ''} sysctl -w net.ipv6.conf.all.forwarding=1, and persist both in /etc/sysctl.d/.`,
      networks: names,
    });
  }
  return out;
}

export function checkBrNetfilter(facts: DoctorFacts): Finding[] {
  const v4 = facts.sysctl.bridgeNfCallIptables;
  const v6 = facts.sysctl.bridgeNfCallIp6tables;
  if (v4 !== '1' && v6 !== '1') return [];
  const nets = activeNetworks(facts);
  const on = [
    v4 === '1' ? 'net.bridge.bridge-nf-call-iptables = 1' : undefined,
    v6 === '1' ? 'net.bridge.bridge-nf-call-ip6tables = 1' : undefined,
  ].filter((x): x is string => x !== undefined);
  return [
    {
      id: 'br-netfilter',
      severity: nets.length > 0 ? 'warning' : 'info',
      title:
        'br_netfilter is loaded and hands bridged frames to the ip/ip6/inet hooks: guest-to-guest traffic on a libvirt bridge crosses every forward chain (and iptables-legacy)',
      evidence: [
        '/proc/sys/net/bridge exists (module br_netfilter)',
        ...on,
        ...(nets.length > 0 ? [`active networks: ${nets.map((n) => `${n.name} (${n.bridge})`).join(', ')}`] : []),
      ],
      fix: 'kvmnftd accepts guest-to-guest traffic in its own forward chain, but any other drop-policy forward chain (Docker sets FORWARD policy DROP) now drops it too. Unless something needs it (Docker with bridged containers, Kubernetes): sysctl -w net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 and persist it in /etc/sysctl.d/ (or unload the module: modprobe -r br_netfilter).',
      networks: nets.map((n) => n.name),
    },
  ];
}

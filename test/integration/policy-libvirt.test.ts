/**
 * Per-network policy (issue 14) through a real libvirt 9 (Debian 12, iptables
 * backend) with `kvmnftd run`: the suite of policy-lab.ts, which
 * debian13.test.ts runs on libvirt 11's two backends. The netns lab without
 * libvirt (`kvmnftd apply`) is policy-packets.test.ts.
 */
import { describe } from 'vitest';
import { useLibvirtLab } from './libvirt-lab.js';
import { policyThroughLibvirt } from './policy-lab.js';

describe('per-network policy through a real libvirt 9 (iptables backend)', () => {
  const f = useLibvirtLab({ tag: 'policy-libvirt9', daemon: 'dbus' });
  policyThroughLibvirt(f, { events: 'dbus', tag: 'libvirt 9' });
});

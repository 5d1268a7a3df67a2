// The bridge port watch (isolate_guests): when a link event is a reason for a pass. The link monitor here is a
// stand-in process that prints one line and stays (the real `ip -o monitor link` runs in the chaos test and
// in the daemon's isolation test, in a network namespace of their own).
import { describe, expect, it } from 'vitest';
import { portsChanged, PortWatch } from '../../src/daemon/port-watch.js';
import { createLogger } from '../../src/log/logger.js';
import { waitUntil } from '../helpers/wait.js';

describe('portsChanged', () => {
  it('is true when a port joined or left a bridge, or a bridge got its first port', () => {
    expect(portsChanged({ virbr0: ['vnet0'] }, { virbr0: ['vnet0'] })).toBe(false);
    expect(portsChanged({ virbr0: ['vnet0', 'vnet1'] }, { virbr0: ['vnet0'] })).toBe(true);
    expect(portsChanged({ virbr0: [] }, { virbr0: ['vnet0'] })).toBe(true);
    expect(portsChanged({ virbr0: ['vnet0'] }, undefined)).toBe(true);
    expect(portsChanged({ virbr0: [] }, undefined)).toBe(false);
    expect(portsChanged({ virbr0: ['vnet0'] }, { virbr0: ['vnet0'], virbr1: ['vnet3'] })).toBe(false);
  });
});

describe('PortWatch', () => {
  const log = createLogger('silent');
  const stayingMonitor = [
    process.execPath,
    ['-e', "console.log('5: vnet7: <BROADCAST> master virbr0');setInterval(()=>{},1e6)"],
  ] as const;

  const watching = (read: () => Promise<Record<string, string[]>>, reasons: string[], bridges = ['virbr0']) =>
    new PortWatch({
      trigger: (r) => reasons.push(r),
      log,
      bridges: () => bridges,
      seen: () => ({ virbr0: ['vnet0'] }),
      read,
      command: stayingMonitor,
    });

  it('ports that differ from what the last pass saw trigger a pass', async () => {
    const reasons: string[] = [];
    const watch = watching(() => Promise.resolve({ virbr0: ['vnet0', 'vnet7'] }), reasons);
    watch.set(true);
    try {
      await waitUntil('a pass for the new port', 10_000, () => reasons.length > 0);
      expect(reasons[0]).toBe('bridge port change');
    } finally {
      watch.stop();
    }
    expect(watch.pid).toBeUndefined();
  });

  it('the same ports: the start-up read and the link line trigger nothing', async () => {
    const reasons: string[] = [];
    let reads = 0;
    const watch = watching(() => {
      reads++;
      return Promise.resolve({ virbr0: ['vnet0'] });
    }, reasons);
    watch.set(true);
    watch.set(true); // already running: no second monitor
    try {
      await waitUntil('the start-up read and the line read', 10_000, () => reads >= 2);
      expect(reasons).toEqual([]);
      expect(reads).toBe(2);
    } finally {
      watch.stop();
    }
  });

  it('no isolating bridge: nothing is read, nothing triggered', async () => {
    const reasons: string[] = [];
    let reads = 0;
    const watch = watching(
      () => {
        reads++;
        return Promise.resolve({});
      },
      reasons,
      [],
    );
    watch.set(true);
    await waitUntil('the monitor to run', 10_000, () => watch.pid !== undefined);
    watch.stop();
    expect(reads).toBe(0);
    expect(reasons).toEqual([]);
  });
});

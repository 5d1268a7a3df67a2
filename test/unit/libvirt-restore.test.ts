// The FirewallD1.Reloaded broadcasts after a flush: rate-limited, and given up
// when libvirt does not answer them. The broadcast itself is a stub here (a
// real one is sent in test/integration/self-heal.test.ts); the clock is fake.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ANSWER_WAIT_MS, GIVE_UP_AFTER, LibvirtRestorer } from '../../src/daemon/libvirt-restore.js';
import type { Logger } from '../../src/log/logger.js';

const quietLog = (): Logger & { lines: string[] } => {
  const lines: string[] = [];
  const at = (level: string) => (msg: unknown, more?: unknown) => lines.push(`${level}: ${String(more ?? msg)}`);
  return { lines, info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug') } as unknown as Logger & {
    lines: string[];
  };
};

describe('libvirt restore', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('stops broadcasting when libvirt does not answer, and says so once', async () => {
    const announce = vi.fn(() => Promise.resolve({ sent: true as const }));
    const log = quietLog();
    const ref: { restorer?: LibvirtRestorer } = {};
    const recheck = vi.fn(() => void ref.restorer?.observe(true, 'default'));
    const restorer = new LibvirtRestorer(announce, recheck, log);
    ref.restorer = restorer;
    await restorer.observe(true, 'default');
    // libvirt never re-creates its chains: every re-check still sees them missing.
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(announce).toHaveBeenCalledTimes(GIVE_UP_AFTER);
    expect(restorer.gaveUp).toMatch(/still missing after 3 FirewallD1.Reloaded broadcasts/);
    expect(log.lines.filter((l) => l.startsWith('error:'))).toHaveLength(1);
    restorer.stop();
  });

  it('passes faster than libvirt answers send one broadcast, and do not count as unheard ones', async () => {
    const announce = vi.fn(() => Promise.resolve({ sent: true as const }));
    const restorer = new LibvirtRestorer(announce, () => undefined, quietLog());
    // A flush: kvmnftd's repair and its echoes, 10 passes within 200 ms, all before libvirt's chains are back.
    for (let i = 0; i < 10; i++) {
      await restorer.observe(true, 'default');
      await vi.advanceTimersByTimeAsync(20);
    }
    expect(announce).toHaveBeenCalledTimes(1);
    expect(restorer.gaveUp).toBeUndefined();
    await vi.advanceTimersByTimeAsync(ANSWER_WAIT_MS);
    await restorer.observe(false, 'default'); // libvirt answered
    expect(restorer.gaveUp).toBeUndefined();
    restorer.stop();
  });

  it('starts again when the situation changes or the chains come back', async () => {
    const announce = vi.fn(() => Promise.resolve({ sent: true as const }));
    const restorer = new LibvirtRestorer(announce, () => undefined, quietLog());
    for (let i = 0; i <= GIVE_UP_AFTER; i++) {
      await restorer.observe(true, 'default');
      await vi.advanceTimersByTimeAsync(11_000);
    }
    expect(restorer.gaveUp).toBeDefined();
    expect(announce).toHaveBeenCalledTimes(GIVE_UP_AFTER);
    await restorer.observe(true, 'default,lab'); // another network started
    expect(restorer.gaveUp).toBeUndefined();
    expect(announce).toHaveBeenCalledTimes(GIVE_UP_AFTER + 1);
    await restorer.observe(false, 'default,lab'); // libvirt re-created its chains
    expect(restorer.gaveUp).toBeUndefined();
    restorer.stop();
  });

  it('never broadcasts while the chains are there', async () => {
    const announce = vi.fn(() => Promise.resolve({ sent: true as const }));
    const restorer = new LibvirtRestorer(announce, () => undefined, quietLog());
    for (let i = 0; i < 10; i++) await restorer.observe(false, 'default');
    expect(announce).not.toHaveBeenCalled();
  });
});

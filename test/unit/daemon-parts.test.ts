import { describe, expect, it } from 'vitest';
import { backoffMs } from '../../src/daemon/backoff.js';
import { degradedReason, formatStatus, statusText } from '../../src/daemon/status.js';
import { objectPathForUri } from '../../src/libvirt/dbus-client.js';
import { networkUri } from '../../src/libvirt/uri.js';
import { parseEventLine } from '../../src/libvirt/virsh-events.js';
import { formatLine } from '../../src/log/logger.js';
import { parseCommandLine, UsageError } from '../../src/cli/args.js';

describe('STATUS= line', () => {
  it('names networks and the last change on one line', () => {
    const at = new Date(2026, 10, 26, 12, 0, 1);
    expect(formatStatus({ networks: ['default', 'lab', 'iso'], degraded: undefined, lastChange: { at, ms: 4 } })).toBe(
      '3 networks (default, lab, iso); last change 12:00:01 applied in 4 ms',
    );
    expect(formatStatus({ networks: ['default'], degraded: undefined, lastChange: undefined })).toBe(
      '1 network (default)',
    );
    expect(formatStatus({ networks: [], degraded: 'libvirt is not reachable: x\ny', lastChange: undefined })).toBe(
      'degraded: libvirt is not reachable: x; 0 networks',
    );
  });

  it('abbreviates long network lists', () => {
    const names = Array.from({ length: 8 }, (_, i) => `n${i}`);
    expect(formatStatus({ networks: names, degraded: undefined, lastChange: undefined })).toBe(
      '8 networks (n0, n1, n2, n3, n4, ...)',
    );
  });
});

describe('degraded reason', () => {
  const healthy = {
    watchFault: undefined,
    passError: undefined,
    planError: undefined,
    suspended: undefined,
    restoreGaveUp: undefined,
    foreignDegraded: undefined,
  };
  it('libvirt away beats a failing pass beats suspended applying beats a given-up restore beats a partial plan', () => {
    expect(degradedReason(healthy)).toBeUndefined();
    expect(degradedReason({ ...healthy, planError: 'network x: skipped' })).toBe('network x: skipped');
    expect(degradedReason({ ...healthy, planError: 'network x: skipped', passError: 'nft failed' })).toBe('nft failed');
    expect(degradedReason({ ...healthy, watchFault: 'libvirtd is down', passError: 'nft failed' })).toBe(
      'libvirt is not reachable: libvirtd is down',
    );
    const gaveUp = "libvirt's own firewall chains are still missing";
    expect(degradedReason({ ...healthy, planError: 'network x', restoreGaveUp: gaveUp })).toBe(gaveUp);
    expect(degradedReason({ ...healthy, restoreGaveUp: gaveUp, suspended: 'it would loop' })).toBe(
      'not applying: it would loop',
    );
    // Applied without the foreign part: beats libvirt's chains and a partial plan, not a failing pass.
    const foreign = 'applied without the mark accepts in ip filter DOCKER-USER: nft failed';
    expect(degradedReason({ ...healthy, foreignDegraded: foreign, restoreGaveUp: gaveUp, planError: 'x' })).toBe(
      foreign,
    );
    expect(degradedReason({ ...healthy, foreignDegraded: foreign, passError: 'nft failed' })).toBe('nft failed');
  });
  it('leads the STATUS= line', () => {
    const state = { ...healthy, passError: 'nft failed', networks: ['default'], lastChange: undefined };
    expect(statusText(state)).toBe('degraded: nft failed; 1 network (default)');
    expect(statusText({ ...state, passError: undefined })).toBe('1 network (default)');
  });
});

describe('back-off', () => {
  it('doubles from the base up to the cap', () => {
    const b = { baseMs: 500, maxMs: 30_000 };
    expect([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffMs(n, b))).toEqual([
      500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000,
    ]);
  });
  it('stays finite after any number of attempts', () => {
    expect(backoffMs(10_000, { baseMs: 0, maxMs: 30_000 })).toBe(0);
    expect(backoffMs(10_000, { baseMs: 250, maxMs: 30_000 })).toBe(30_000);
    expect(backoffMs(0, { baseMs: 250, maxMs: 30_000 })).toBe(250);
  });
});

describe('virsh net-event and event lines', () => {
  it('parses lifecycle events and ignores the rest', () => {
    expect(parseEventLine("event 'lifecycle' for network default: Started")).toEqual({
      object: 'network',
      name: 'default',
      event: 'started',
    });
    expect(parseEventLine("event 'lifecycle' for network my net: Stopped")).toEqual({
      object: 'network',
      name: 'my net',
      event: 'stopped',
    });
    expect(parseEventLine("event 'lifecycle' for domain web1: Started Booted")).toEqual({
      object: 'domain',
      name: 'web1',
      event: 'started',
    });
    expect(parseEventLine("event 'lifecycle' for domain 'web 1': Stopped Destroyed")).toEqual({
      object: 'domain',
      name: 'web 1',
      event: 'stopped',
    });
    expect(parseEventLine('events received: 3')).toBeUndefined();
    expect(parseEventLine('')).toBeUndefined();
  });
});

describe('libvirt-dbus object paths', () => {
  it('maps qemu:///system and nothing else', () => {
    expect(objectPathForUri('qemu:///system')).toBe('/org/libvirt/QEMU');
    expect(objectPathForUri('qemu:///session')).toBeUndefined();
    expect(objectPathForUri('test:///default')).toBeUndefined();
  });
});

describe('the URI networks are followed on', () => {
  it('is network:///system instead of qemu:///system only where virtnetworkd runs (modular libvirt)', () => {
    expect(networkUri('qemu:///system', true)).toBe('network:///system');
    expect(networkUri('qemu:///system', false)).toBe('qemu:///system');
    expect(networkUri('qemu+ssh://host/system', true)).toBe('qemu+ssh://host/system');
    expect(networkUri('test:///default', true)).toBe('test:///default');
  });
});

describe('log lines', () => {
  const line = JSON.stringify({ level: 40, msg: 'network lab: skipped', network: 'lab', duration_ms: 4.2 });
  it('carries the journald priority prefix under systemd', () => {
    expect(formatLine(line, 'journal')).toBe('<4>network lab: skipped network=lab duration_ms=4.2\n');
    expect(formatLine(JSON.stringify({ level: 50, msg: 'x' }), 'journal')).toBe('<3>x\n');
    expect(formatLine(JSON.stringify({ level: 30, msg: 'x' }), 'journal')).toBe('<6>x\n');
  });
  it('is a short readable line on a terminal', () => {
    expect(formatLine(line, 'text')).toBe('warn: network lab: skipped network=lab duration_ms=4.2\n');
  });
});

describe('command line', () => {
  it('parses commands and options', () => {
    expect(parseCommandLine(['plan', '--json', '--from-xml', 'a.xml', '--from-xml', 'b.xml'])).toMatchObject({
      command: 'plan',
      json: true,
      fromXml: ['a.xml', 'b.xml'],
    });
    expect(parseCommandLine(['run', '--events', 'virsh'])).toMatchObject({ command: 'run', events: 'virsh' });
    expect(parseCommandLine(['--version'])).toMatchObject({ command: 'version' });
  });
  it.each([
    [[]],
    [['frobnicate']],
    [['apply', '--json']],
    [['plan', '--force']],
    [['remove', '--from-xml', 'x']],
    [['run', '--events', 'carrier-pigeon']],
    [['plan', '--events', 'dbus']],
    [['plan', '--bogus']],
    [['plan', 'extra']],
    [['plan', '--log-level', 'loud']],
  ])('rejects %j', (argv) => {
    expect(() => parseCommandLine(argv)).toThrow(UsageError);
  });
});

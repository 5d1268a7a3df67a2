// DbusCaller against a fake bus whose calls settle only when the test says:
// every call settles (reply, error reply, time-out, broken connection) and
// leaves no timer behind. (test/integration/doctor-bus.test.ts and
// firewalld-reload.test.ts run it against a real dbus-daemon.)
import dbus from 'dbus-next';
import type { Message } from 'dbus-next';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { busDaemonCall, DbusCaller, DbusError } from '../../src/libvirt/dbus-call.js';

/** A bus whose call() returns a promise the test settles; it never settles by itself, like a dead bus. */
function fakeBus() {
  const pending: Array<{ message: Message; resolve: (m: Message | null) => void; reject: (e: unknown) => void }> = [];
  return {
    pending,
    call: (message: Message) =>
      new Promise<Message | null>((resolve, reject) => pending.push({ message, resolve, reject })),
  };
}

const reply = (body: unknown[]): Message =>
  new dbus.Message({ type: dbus.MessageType.METHOD_RETURN, replySerial: '1', body });

describe('DbusCaller', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("returns the reply's body and clears its timer", async () => {
    const bus = fakeBus();
    const caller = new DbusCaller(bus, 5000);
    const call = caller.call(busDaemonCall('NameHasOwner', 's', ['org.libvirt']));
    expect(bus.pending[0]!.message).toMatchObject({ member: 'NameHasOwner', destination: 'org.freedesktop.DBus' });
    bus.pending[0]!.resolve(reply([true]));
    expect(await call).toEqual([true]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('names the method and the error of an error reply', async () => {
    const bus = fakeBus();
    const call = new DbusCaller(bus, 5000).call(busDaemonCall('GetNameOwner', 's', ['org.libvirt']));
    bus.pending[0]!.reject(new dbus.DBusError('org.freedesktop.DBus.Error.NameHasNoOwner', 'no owner'));
    await expect(call).rejects.toThrow(
      new DbusError('GetNameOwner on org.freedesktop.DBus failed: org.freedesktop.DBus.Error.NameHasNoOwner: no owner'),
    );
    expect(vi.getTimerCount()).toBe(0);
  });

  it('gives up after the time-out when the bus never answers', async () => {
    const bus = fakeBus();
    const call = new DbusCaller(bus, 5000).call(busDaemonCall('GetId'));
    const outcome = expect(call).rejects.toThrow('org.freedesktop.DBus did not answer GetId within 5 s');
    await vi.advanceTimersByTimeAsync(4999);
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    await outcome;
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a broken connection fails the calls in flight at once, and every later call', async () => {
    const bus = fakeBus();
    const caller = new DbusCaller(bus, 5000);
    const calls = [caller.call(busDaemonCall('GetId')), caller.call(busDaemonCall('GetId'))];
    const broken = new Error('the D-Bus connection was closed');
    caller.fail(broken);
    for (const call of calls) await expect(call).rejects.toBe(broken);
    expect(vi.getTimerCount()).toBe(0);
    await expect(caller.call(busDaemonCall('GetId'))).rejects.toBe(broken);
    expect(bus.pending).toHaveLength(2); // the later call was not even sent
  });
});

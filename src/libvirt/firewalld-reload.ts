// libvirt's network driver listens on the system bus for
// org.fedoraproject.FirewallD1.Reloaded (from any sender) and then re-creates
// its private chains and re-adds the rules of every running network. That is
// libvirt's own recovery path after a firewall reload, so kvmnftd uses it to
// undo a foreign `flush ruleset` instead of restarting libvirt or writing
// libvirt's chains itself. Other listeners (Docker, podman/netavark) reload
// too; never sent while a real firewalld owns the name.
import dbus from 'dbus-next';
import { busDaemonCall, DbusCaller } from './dbus-call.js';

const { Message, systemBus } = dbus;
const FIREWALLD = 'org.fedoraproject.FirewallD1';
const TIMEOUT_MS = 5000;

export type ReloadOutcome = { sent: true } | { sent: false; reason: string };

export async function announceFirewallReload(): Promise<ReloadOutcome> {
  const bus = systemBus();
  const caller = new DbusCaller(bus, TIMEOUT_MS);
  // A connection error fails the calls (unhandled, it would end the process).
  bus.on('error', (err: unknown) => caller.fail(err instanceof Error ? err : new Error(String(err))));
  try {
    const [running] = await caller.call(busDaemonCall('NameHasOwner', 's', [FIREWALLD]));
    if (running === true) return { sent: false, reason: 'firewalld is running: it reloads libvirt itself' };
    bus.send(Message.newSignal('/org/fedoraproject/FirewallD1', FIREWALLD, 'Reloaded'));
    // A round trip to the bus guarantees the signal left before we
    // disconnect (GetId: the system bus policy allows it to everyone).
    await caller.call(busDaemonCall('GetId'));
    return { sent: true };
  } catch (err) {
    return { sent: false, reason: `cannot use the system bus: ${(err as Error).message}` };
  } finally {
    bus.disconnect();
  }
}

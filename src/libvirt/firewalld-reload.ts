// libvirt's network driver listens on the system bus for
// org.fedoraproject.FirewallD1.Reloaded (from any sender) and then re-creates
// its private chains and re-adds the rules of every running network. That is
// libvirt's own recovery path after a firewall reload, so kvmnftd uses it to
// undo a foreign `flush ruleset` instead of restarting libvirt or writing
// libvirt's chains itself. Other listeners (Docker, podman/netavark) reload
// too; never sent while a real firewalld owns the name.
import dbus from 'dbus-next';

const { Message, systemBus } = dbus;
const FIREWALLD = 'org.fedoraproject.FirewallD1';
const TIMEOUT_MS = 5000;

export type ReloadOutcome = { sent: true } | { sent: false; reason: string };

export async function announceFirewallReload(): Promise<ReloadOutcome> {
  const bus = systemBus();
  let timer: NodeJS.Timeout | undefined;
  // Fails on the first of: no answer in time, or a connection error.
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the system bus did not answer within ${TIMEOUT_MS / 1000} s`)),
      TIMEOUT_MS,
    );
    bus.on('error', (err: unknown) => reject(err instanceof Error ? err : new Error(String(err))));
  });
  timeout.catch(() => undefined);
  try {
    const reply = await Promise.race([
      bus.call(
        new Message({
          destination: 'org.freedesktop.DBus',
          path: '/org/freedesktop/DBus',
          interface: 'org.freedesktop.DBus',
          member: 'NameHasOwner',
          signature: 's',
          body: [FIREWALLD],
        }),
      ),
      timeout,
    ]);
    if (reply?.body[0] === true) return { sent: false, reason: 'firewalld is running: it reloads libvirt itself' };
    await Promise.race([bus.send(Message.newSignal('/org/fedoraproject/FirewallD1', FIREWALLD, 'Reloaded')), timeout]);
    // A round trip to the bus guarantees the signal left before we
    // disconnect (GetId: the system bus policy allows it to everyone).
    await Promise.race([
      bus.call(
        new Message({
          destination: 'org.freedesktop.DBus',
          path: '/org/freedesktop/DBus',
          interface: 'org.freedesktop.DBus',
          member: 'GetId',
        }),
      ),
      timeout,
    ]);
    return { sent: true };
  } catch (err) {
    return { sent: false, reason: `cannot use the system bus: ${(err as Error).message}` };
  } finally {
    clearTimeout(timer);
    bus.disconnect();
  }
}

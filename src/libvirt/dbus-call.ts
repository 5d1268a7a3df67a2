// D-Bus method calls that always settle. With dbus-next, once the bus
// connection dies nothing is emitted on the bus object and later call()s
// never settle, so every call here has its own time-out, and a broken
// connection (fail()) rejects the calls in flight at once. Each call settles
// through its own promise and clears its own timer: racing calls against one
// shared never-settling promise piles reactions onto it, a leak in a daemon.
import dbus from 'dbus-next';
import type { Message as DbusMessage, MessageBus, MessageLike } from 'dbus-next';

const { Message } = dbus;

export class DbusError extends Error {
  override name = 'DbusError';
}

/** A method call to the bus itself (org.freedesktop.DBus: AddMatch, GetNameOwner, NameHasOwner, ...). */
export function busDaemonCall(member: string, signature = '', body: unknown[] = []): MessageLike {
  return {
    destination: 'org.freedesktop.DBus',
    path: '/org/freedesktop/DBus',
    interface: 'org.freedesktop.DBus',
    member,
    signature,
    body,
  };
}

export class DbusCaller {
  private failure: Error | undefined;
  /** Rejecters of the calls in flight. */
  private readonly inFlight = new Set<(error: Error) => void>();

  constructor(
    private readonly bus: Pick<MessageBus, 'call'>,
    private readonly timeoutMs: number,
  ) {}

  /** The connection is broken: fails the calls in flight, and every later call, with `error`. */
  fail(error: Error): void {
    this.failure ??= error;
    for (const reject of this.inFlight) reject(error);
  }

  /**
   * Sends one method call and returns the reply's body. Throws a DbusError on
   * an error reply or the time-out, and fail()'s error on a broken connection.
   */
  async call(message: MessageLike): Promise<unknown[]> {
    if (this.failure) throw this.failure;
    const { destination = '', member = '' } = message;
    let timer: NodeJS.Timeout | undefined;
    let reject: (error: Error) => void = () => undefined;
    try {
      const reply = await new Promise<DbusMessage | null>((resolve, fail) => {
        reject = fail;
        this.inFlight.add(reject);
        timer = setTimeout(
          () => fail(new DbusError(`${destination} did not answer ${member} within ${this.timeoutMs / 1000} s`)),
          this.timeoutMs,
        );
        this.bus.call(new Message(message)).then(resolve, (err: unknown) => fail(callError(err, message)));
      });
      return (reply?.body ?? []) as unknown[];
    } finally {
      clearTimeout(timer);
      this.inFlight.delete(reject);
    }
  }
}

/** An error reply (dbus-next's DBusError has type and text) or a failed send, as one line. */
function callError(err: unknown, { destination = '', member = '' }: MessageLike): DbusError {
  const e = err as { type?: string; text?: string; message?: string };
  const why = `${e.type ? `${e.type}: ` : ''}${e.text ?? e.message ?? String(err)}`;
  return new DbusError(`${member} on ${destination} failed: ${why}`);
}

// Findings as data: a pass returns them, its caller logs them. The one-shot
// commands log every message; the daemon logs each distinct one once while
// it persists, not once per pass.
import type { Logger } from './logger.js';

export interface LogMessage {
  level: 'info' | 'warn' | 'error';
  text: string;
  fields: Record<string, string>;
}

export function logMessages(messages: readonly LogMessage[], log: Logger): void {
  for (const m of messages) log[m.level](m.fields, m.text);
}

/** Logs a message when it is new: it was not among the previous call's messages. */
export class RepeatFilter {
  private previous = new Set<string>();

  constructor(private readonly log: Logger) {}

  logNew(messages: readonly LogMessage[]): void {
    const key = (m: LogMessage): string => `${m.level}:${m.text}`;
    logMessages(
      messages.filter((m) => !this.previous.has(key(m))),
      this.log,
    );
    this.previous = new Set(messages.map(key));
  }
}

// pino, formatted for where the output goes: journald gets `<N>` priority
// prefixes (so `journalctl -p warning` works), a terminal gets short
// readable lines, anything else gets pino's JSON lines.
import pino, { type Logger } from 'pino';

export type { Logger };

const SYSLOG_PRIORITY: Record<number, number> = { 10: 7, 20: 7, 30: 6, 40: 4, 50: 3, 60: 2 };
const LEVEL_NAME: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};
const INTERNAL = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

export type LogFormat = 'journal' | 'text' | 'json';

export function pickFormat(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv = process.env): LogFormat {
  const forced = env['KVMNFTD_LOG_FORMAT'];
  if (forced === 'journal' || forced === 'text' || forced === 'json') return forced;
  if (env['JOURNAL_STREAM']) return 'journal';
  return stream.isTTY ? 'text' : 'json';
}

/** Formats one pino JSON line for journald or a terminal. Exported for tests. */
export function formatLine(line: string, format: Exclude<LogFormat, 'json'>): string {
  const record = JSON.parse(line) as Record<string, unknown>;
  const level = Number(record['level']);
  const fields = Object.entries(record)
    .filter(([k]) => !INTERNAL.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  const msg = record['msg'];
  const text = [msg == null ? '' : typeof msg === 'string' ? msg : JSON.stringify(msg), ...fields].join(' ');
  if (format === 'journal') return `<${SYSLOG_PRIORITY[level] ?? 6}>${text}\n`;
  return `${LEVEL_NAME[level] ?? 'info'}: ${text}\n`;
}

export function createLogger(level: string, stream: NodeJS.WriteStream = process.stderr): Logger {
  const format = pickFormat(stream);
  const options = { level, base: null, timestamp: format === 'json' ? pino.stdTimeFunctions.isoTime : false };
  if (format === 'json') return pino(options, stream);
  return pino(options, { write: (line: string) => stream.write(formatLine(line, format)) });
}

// The log levels the command line accepts: pino's names, in their own module
// so that parsing the command line does not load pino.
export const LOG_LEVELS: readonly string[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

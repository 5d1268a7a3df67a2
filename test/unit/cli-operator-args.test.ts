// Argument parsing and help for status, doctor, plan --diff.
import { describe, expect, it } from 'vitest';
import { COMMANDS, parseCommandLine, USAGE, UsageError } from '../../src/cli/args.js';
import { COMMAND_HELP } from '../../src/cli/help.js';

describe('operator commands on the command line', () => {
  it('parses status, doctor and plan --diff', () => {
    expect(parseCommandLine(['status', '--json', '--from-xml', 'a.xml'])).toMatchObject({
      command: 'status',
      json: true,
      fromXml: ['a.xml'],
    });
    expect(parseCommandLine(['doctor'])).toMatchObject({ command: 'doctor', json: false, diff: false });
    expect(parseCommandLine(['plan', '--diff'])).toMatchObject({ command: 'plan', diff: true });
  });
  it.each([
    [['status', '--diff']],
    [['plan', '--diff', '--json']],
    [['apply', '--diff']],
    [['doctor', '--force']],
    [['status', '--events', 'dbus']],
    [['help', 'bogus']],
    [['reload', '--from-xml', 'x']],
  ])('rejects %j', (argv) => {
    expect(() => parseCommandLine(argv)).toThrow(UsageError);
  });
  it('help for one command: `help CMD` and `CMD --help`', () => {
    expect(parseCommandLine(['help', 'doctor'])).toMatchObject({ command: 'help', helpFor: 'doctor' });
    expect(parseCommandLine(['status', '--help'])).toMatchObject({ command: 'help', helpFor: 'status' });
    expect(parseCommandLine(['--help'])).toMatchObject({ command: 'help' });
    expect(parseCommandLine(['--help']).helpFor).toBeUndefined();
  });
  it('every command has its own help with usage and examples, and the overview lists it', () => {
    for (const cmd of COMMANDS) {
      expect(COMMAND_HELP[cmd], cmd).toMatch(new RegExp(`^Usage: kvmnftd ${cmd}`));
      expect(COMMAND_HELP[cmd], cmd).toMatch(/\nExamples:\n {2}\S/);
      expect(USAGE, cmd).toMatch(new RegExp(`\n {2}${cmd} `));
    }
  });
});

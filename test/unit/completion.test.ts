// The shell completion files (packaging/completion/) run in real bash and zsh
// and offer exactly the commands and options the CLI accepts (taken from the
// per-command help texts, which the argument parser is tested against).
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMANDS } from '../../src/cli/args.js';
import { COMMAND_HELP } from '../../src/cli/help.js';
import { parseCommandLine } from '../../src/cli/args.js';
import { REPO_ROOT } from '../helpers/cli.js';

const BASH_FILE = join(REPO_ROOT, 'packaging', 'completion', 'kvmnftd.bash');
const ZSH_FILE = join(REPO_ROOT, 'packaging', 'completion', '_kvmnftd');

/** Options a command's help text lists (its own and the common ones). */
function helpOptions(cmd: string): string[] {
  const text = COMMAND_HELP[cmd as keyof typeof COMMAND_HELP];
  return [...new Set([...text.matchAll(/(?<![\w-])--[a-z][a-z-]*/g)].map((m) => m[0]))].sort();
}

function bashComplete(words: string[]): string[] {
  const script = `source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _kvmnftd; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const out = execFileSync('bash', ['--norc', '--noprofile', '-c', script, 'bash', BASH_FILE, ...words], {
    encoding: 'utf8',
  });
  return out
    .split('\n')
    .filter((l) => l !== '')
    .sort();
}

/** Runs _kvmnftd in zsh with _arguments/_describe replaced by printers. */
function zshComplete(words: string[]): string[] {
  const script = [
    '_describe() { print -rl -- "${(@P)${@[-1]}}" }',
    '_arguments() { print -rl -- "$@"; return 1 }',
    'source "$1"',
    'shift',
    'words=("$@"); CURRENT=$#',
    '_kvmnftd || true',
  ].join('\n');
  const out = execFileSync('zsh', ['-f', '-c', script, 'zsh', ZSH_FILE, ...words], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l !== '');
}

describe('bash completion', () => {
  it('is valid bash', () => {
    execFileSync('bash', ['-n', BASH_FILE]);
  });
  it("completes commands, then each command's options as its help lists them", () => {
    expect(bashComplete(['kvmnftd', ''])).toEqual([...COMMANDS, 'help'].sort());
    expect(bashComplete(['kvmnftd', 'st'])).toEqual(['status']);
    for (const cmd of COMMANDS) {
      expect(bashComplete(['kvmnftd', cmd, '--']), cmd).toEqual(helpOptions(cmd));
    }
    expect(bashComplete(['kvmnftd', '--config', '/x.toml', 'doctor', '--j'])).toEqual(['--json']);
    expect(bashComplete(['kvmnftd', 'run', '--events', ''])).toEqual(['auto', 'dbus', 'virsh']);
    expect(bashComplete(['kvmnftd', 'help', 'do'])).toEqual(['doctor']);
  });
  it('offers only options the parser accepts for that command', () => {
    for (const cmd of COMMANDS) {
      for (const opt of helpOptions(cmd)) {
        const value =
          { '--from-xml': ['x.xml'], '--config': ['c.toml'], '--log-level': ['info'], '--events': ['auto'] }[opt] ?? [];
        if (opt === '--help') continue;
        expect(() => parseCommandLine([cmd, opt, ...value]), `${cmd} ${opt}`).not.toThrow();
      }
    }
  });
});

describe('zsh completion', () => {
  it('is valid zsh and registers for kvmnftd', () => {
    execFileSync('zsh', ['-n', ZSH_FILE]);
    expect(execFileSync('zsh', ['-f', '-c', 'head -1 "$1"', 'zsh', ZSH_FILE], { encoding: 'utf8' })).toBe(
      '#compdef kvmnftd\n',
    );
  });
  it("completes commands with descriptions, and each command's options", () => {
    const commands = zshComplete(['kvmnftd', '']).filter((l) => !l.startsWith('(') && !l.startsWith('-'));
    expect(commands.map((l) => l.split(':')[0]).sort()).toEqual([...COMMANDS, 'help'].sort());
    for (const cmd of COMMANDS) {
      const specs = zshComplete(['kvmnftd', cmd, '']);
      const offered = new Set(specs.flatMap((s) => [...s.matchAll(/--[a-z][a-z-]*/g)].map((m) => m[0])));
      expect([...offered].sort(), cmd).toEqual(helpOptions(cmd));
    }
  });
});

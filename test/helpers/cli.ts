/**
 * Run the built kvmnftd CLI (dist/cli/main.js) inside a network namespace, with
 * its own runtime directory so that parallel tests never share a lock file.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach } from 'vitest';
import { Lab, requireLabPrivileges, run } from './netns.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI_MAIN = join(REPO_ROOT, 'dist', 'cli', 'main.js');
export const FIXTURES = join(REPO_ROOT, 'test', 'fixtures');

export function fixture(name: string): string {
  return join(FIXTURES, name);
}

/** Throws a loud error when the CLI has not been built. */
export function requireBuiltCli(): void {
  if (!existsSync(CLI_MAIN)) {
    throw new Error(
      `kvmnftd CLI not built: ${CLI_MAIN} is missing. Run \`npm run build\` (or \`npm test\`, which builds first).`,
    );
  }
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** The argument list, for assertion messages. */
  args: string[];
}

export interface CliOptions {
  /** KVMNFTD_RUNTIME_DIR; required so that tests never share a lock file. */
  runtimeDir: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

/** `ip netns exec NS node dist/cli/main.js ARGS...` */
export async function runCli(ns: string, args: readonly string[], opts: CliOptions): Promise<CliResult> {
  requireBuiltCli();
  const r = await run('ip', ['netns', 'exec', ns, process.execPath, CLI_MAIN, ...args], {
    timeoutMs: opts.timeoutMs ?? 30_000,
    cwd: REPO_ROOT,
    env: { ...process.env, ...opts.env, KVMNFTD_RUNTIME_DIR: opts.runtimeDir },
  });
  return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut, args: [...args] };
}

/** `kvmnftd ARGS --config CONFIG` in `ns`, with the context's config file and runtime dir. */
export function runCliIn(ns: string, ctx: CliContext, ...args: string[]): Promise<CliResult> {
  return runCli(ns, [...args, '--config', ctx.configFile], { runtimeDir: ctx.runtimeDir });
}

/** A short description of a CLI run, for assertion messages. */
export function describeRun(r: CliResult): string {
  return `kvmnftd ${r.args.join(' ')} -> exit ${r.exitCode}${r.timedOut ? ' (timed out)' : ''}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

/** A temporary directory removed by the lab's cleanup. */
export async function tempDir(lab: Lab, tag = 'kvmnftd-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), tag));
  lab.defer(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A per-test context: a runtime dir and a config file (TOML text, may be empty)
 * inside one temp directory.
 */
export interface CliContext {
  dir: string;
  runtimeDir: string;
  configFile: string;
}

export async function cliContext(lab: Lab, configToml = ''): Promise<CliContext> {
  const dir = await tempDir(lab);
  const runtimeDir = join(dir, 'run');
  const configFile = join(dir, 'config.toml');
  await mkdir(runtimeDir, { recursive: true, mode: 0o700 });
  await writeFile(configFile, configToml);
  return { dir, runtimeDir, configFile };
}

/**
 * Registers per-test hooks: a fresh network-namespace Lab for every test
 * (failing, never skipping, without root, nft or a built CLI), always cleaned
 * up. Returns the accessor for the running test's lab.
 */
export function useNetnsLab(): () => Lab {
  let lab: Lab | undefined;
  beforeEach(() => {
    requireLabPrivileges();
    requireBuiltCli();
    lab = new Lab();
  });
  afterEach(async () => {
    const l = lab;
    lab = undefined;
    await l?.cleanup();
  });
  return () => {
    if (!lab) throw new Error('lab not initialised (useNetnsLab hooks did not run)');
    return lab;
  };
}

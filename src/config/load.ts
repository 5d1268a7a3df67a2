// Reading the configuration: TOML text -> document -> Config, validated key by
// key from the schema (schema.ts), then the rules between keys.
import { readFileSync } from 'node:fs';
import { parse as parseToml, TomlError } from 'smol-toml';
import type { Config } from './config.js';
import { ConfigError } from './errors.js';
import { RULES, SCHEMA } from './schema.js';

export const DEFAULT_CONFIG_PATH = '/etc/kvmnftd/kvmnftd.toml';

/** Every key at its default (fresh objects on each call). */
export function defaultConfig(): Config {
  return SCHEMA.absent({ file: '(defaults)', key: '' });
}

/** Validates a parsed TOML document; `file` only labels errors. */
export function configFromObject(doc: Record<string, unknown>, file: string): Config {
  const config: Config = SCHEMA.read(doc, { file, key: '' });
  for (const rule of RULES) {
    const broken = rule.check(config);
    if (broken !== undefined) throw new ConfigError(file, rule.key, broken);
  }
  return config;
}

/**
 * Every problem of a config file, for `kvmnftd check`: the file, its TOML, each key, then (once every key
 * reads) the rules between keys. Like loadConfig, a missing file at the default path means "all defaults",
 * which is fine. Reads only the file: no root, no libvirt, no nft. Empty: the file is fine.
 */
export function checkConfigFile(path: string | undefined): ConfigError[] {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let doc: Record<string, unknown> | undefined;
  try {
    doc = parseDocument(file, path === undefined);
  } catch (err) {
    if (err instanceof ConfigError) return [err];
    throw err;
  }
  return configProblems(doc ?? {}, file);
}

/**
 * Every problem of a parsed document, in the order configFromObject meets them (its error is the first):
 * each key that does not read, then, once every key reads, each rule between keys that is broken.
 */
export function configProblems(doc: Record<string, unknown>, file: string): ConfigError[] {
  const problems: ConfigError[] = [];
  const config: Config = SCHEMA.read(doc, { file, key: '', problems });
  if (problems.length > 0) return problems;
  for (const rule of RULES) {
    const broken = rule.check(config);
    if (broken !== undefined) problems.push(new ConfigError(file, rule.key, broken));
  }
  return problems;
}

/** The file's TOML document; undefined when `missingIsDefaults` and the file does not exist. */
function parseDocument(file: string, missingIsDefaults: boolean): Record<string, unknown> | undefined {
  let textContent: string;
  try {
    textContent = readFileSync(file, 'utf8');
  } catch (err) {
    if (missingIsDefaults && (err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(file, '(file)', `cannot read: ${(err as Error).message}`);
  }
  try {
    return parseToml(textContent);
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : '';
    throw new ConfigError(file, '(syntax)', `not valid TOML${where}: ${(err as Error).message.split('\n')[0]}`);
  }
}

/**
 * Loads the config. A missing file at the default path means "all defaults";
 * a missing file that was named explicitly is an error.
 */
export function loadConfig(path: string | undefined): { config: Config; source: string } {
  const file = path ?? DEFAULT_CONFIG_PATH;
  // A missing file at the default path means "all defaults"; one named explicitly must exist.
  const doc = parseDocument(file, path === undefined);
  return doc === undefined
    ? { config: defaultConfig(), source: 'built-in defaults' }
    : { config: configFromObject(doc, file), source: file };
}

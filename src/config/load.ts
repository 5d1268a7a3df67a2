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
 * Loads the config. A missing file at the default path means "all defaults";
 * a missing file that was named explicitly is an error.
 */
export function loadConfig(path: string | undefined): { config: Config; source: string } {
  const file = path ?? DEFAULT_CONFIG_PATH;
  let textContent: string;
  try {
    textContent = readFileSync(file, 'utf8');
  } catch (err) {
    if (path === undefined && (err as NodeJS.ErrnoException).code === 'ENOENT')
      return { config: defaultConfig(), source: 'built-in defaults' };
    throw new ConfigError(file, '(file)', `cannot read: ${(err as Error).message}`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(textContent);
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : '';
    throw new ConfigError(file, '(syntax)', `not valid TOML${where}: ${(err as Error).message.split('\n')[0]}`);
  }
  return { config: configFromObject(doc, file), source: file };
}

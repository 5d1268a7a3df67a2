// The shipped example config must load and equal the built-in defaults, so
// the comments in /etc cannot lie about them.
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { defaultConfig, loadConfig } from '../../src/config/config.js';

it('packaging/kvmnftd.toml states exactly the defaults', () => {
  const { config } = loadConfig(join(import.meta.dirname, '..', '..', 'packaging', 'kvmnftd.toml'));
  expect(config).toEqual(defaultConfig());
});

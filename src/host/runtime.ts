// Where kvmnftd keeps its lock and transient batch files. systemd's
// RuntimeDirectory= sets RUNTIME_DIRECTORY; KVMNFTD_RUNTIME_DIR overrides for tests.
import { mkdirSync } from 'node:fs';

export function runtimeDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env['KVMNFTD_RUNTIME_DIR'] ?? env['RUNTIME_DIRECTORY']?.split(':')[0] ?? '/run/kvmnftd';
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

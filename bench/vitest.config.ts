// The daemon benchmark (bench/daemon.ts) runs with vitest as its TypeScript
// runner, outside `npm test` (whose include is test/**/*.test.ts):
//   npm run build && npx vitest run --config bench/vitest.config.ts
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: resolve(dirname(fileURLToPath(import.meta.url)), '..'),
    include: ['bench/daemon.ts'],
    // BENCH_EVENTS=10000 (memory stays flat) alone takes about half an hour.
    testTimeout: 4 * 60 * 60_000,
    hookTimeout: 120_000,
    // The table goes straight to stdout, not through vitest's console capture.
    disableConsoleIntercept: true,
    fileParallelism: false,
  },
});

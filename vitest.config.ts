import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Integration tests build network namespaces and run nft: give them time.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});

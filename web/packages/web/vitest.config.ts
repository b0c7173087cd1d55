import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    environment: 'node',
    include: ['test/**/*.test.ts'],
    // Unit tests are instant; the hub integration tests start real herald processes
    // and wait for reconnects, so each gets a generous but bounded budget.
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // The integration file spawns servers on free ports; keep files from competing for CPU.
    fileParallelism: true,
  },
});

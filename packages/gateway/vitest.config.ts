import { defineProject } from 'vitest/config';

export default defineProject({
  test: {
    name: 'gateway',
    include: ['test/**/*.test.ts'],
    // CI runs on a shared 2-core machine: deadlines are generous, waits are on conditions, never on sleeps.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});

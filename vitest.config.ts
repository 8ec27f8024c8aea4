import { defineConfig } from 'vitest/config';

// One run over every package; each package's tests spawn their own servers on their own ports and prefixes.
export default defineConfig({
  test: {
    projects: ['packages/*'],
    // The JSON report lets .ci/run print "N passed, M failed".
    reporters: ['default', ['json', { outputFile: '.vitest-report.json' }]],
  },
});

// Mocha runs TypeScript through tsx; the reporter prints the closing line CI reads and fails skips
// nobody asked for (see test/support/reporter.cjs). `.only` left in a test fails the run.
module.exports = {
  'node-option': ['import=tsx'],
  reporter: './test/support/reporter.cjs',
  timeout: 20000,
  exit: true,
  'forbid-only': true,
};

// Mocha runs TypeScript through tsx; the reporter prints the closing line CI reads.
module.exports = {
  'node-option': ['import=tsx'],
  reporter: './test/support/reporter.cjs',
  timeout: 20000,
  exit: true,
};

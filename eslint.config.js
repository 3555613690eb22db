// @ts-check
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';
import { layerRules } from './eslint.layers.js';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'bin/**',
      'eslint.config.js',
      'eslint.layers.js',
      '.mocharc.cjs',
      'test/support/reporter.cjs',
    ],
  },
  eslint.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
    },
  },
  // Layers (eslint.layers.js): no import from a higher layer, no cycle.
  layerRules(import.meta.dirname, { project: 'tsconfig.json' }),
  {
    // The exec layer is the only place that spawns (DEVELOPERS.md): no child_process or execa elsewhere.
    files: ['src/**/*.ts'],
    ignores: ['src/util/exec.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            { name: 'node:child_process', message: 'Spawn through src/util/exec.ts.' },
            { name: 'child_process', message: 'Spawn through src/util/exec.ts.' },
            { name: 'execa', message: 'Spawn through src/util/exec.ts.' },
          ],
        },
      ],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-expressions': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
      // A skip says why and fails in CI unless asked for: test/support/skip.ts and its reporter.
      'no-restricted-syntax': [
        'error',
        {
          selector: "CallExpression[callee.property.name='skip']",
          message: 'Skip through skipBecause(ctx, reason) from test/support/skip.ts.',
        },
        {
          selector: 'CallExpression[callee.name=/^x(it|describe|context)$/]',
          message: 'No pending tests: a skipped test fails CI unless SVCPLANE_SKIP names its suite.',
        },
      ],
    },
  },
  {
    files: ['test/support/skip.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
);

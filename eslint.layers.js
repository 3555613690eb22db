// @ts-check
/**
 * svcplane's layers, bottom up (DEVELOPERS.md "Layers"). A file may import from its own layer and
 * the layers below it, never from a layer above; eslint.config.js turns this table into
 * import-x/no-restricted-paths zones, and import-x/no-cycle forbids cycles inside a layer.
 * Every file under src/ belongs to exactly one layer (test/unit/modes/layers.test.ts checks it).
 * A new mode folder (src/nftables …) adds its kernel tool wrapper files to "sources and kernel
 * tool wrappers", the rest of the folder to "modes", and its mode.ts is covered by "mode entries".
 */

import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/** Mode folders: kernel tool wrappers (run + parse) are listed by file, the rest is the mode. */
const MODE_FOLDERS = {
  iptables: ['iptables', 'save-parse', 'names'],
  ipvs: ['ipvsadm', 'ipset', 'types'],
  nftables: ['listing'],
};

// Braces with one item are not expanded by minimatch: @(a|b) works for one name and for several.
const wrappers = Object.entries(MODE_FOLDERS).map(([dir, files]) => `src/${dir}/@(${files.join('|')}).ts`);
const modeInternals = Object.entries(MODE_FOLDERS).map(
  ([dir, files]) => `src/${dir}/!(${[...files, 'mode'].join('|')}).ts`,
);

/** @type {readonly { readonly name: string; readonly files: readonly string[] }[]} */
export const LAYERS = [
  { name: 'util', files: ['src/util/**'] },
  { name: 'model', files: ['src/model/**'] },
  { name: 'config', files: ['src/config/**'] },
  {
    name: 'sources and kernel tool wrappers',
    files: [
      'src/kube/**',
      'src/kernel/**',
      'src/conntrack/**',
      'src/netns/**',
      // The iptables rules every mode that writes iptables shares (iptables and IPVS mode).
      'src/iptables-rules/**',
      ...wrappers,
    ],
  },
  {
    name: 'modes',
    files: [...modeInternals, 'src/netpol/**', 'src/modes/@(backend|local-traffic|node-ports).ts'],
  },
  { name: 'controller', files: ['src/controller/**'] },
  { name: 'debug', files: ['src/debug/**'] },
  {
    // The contract wires each mode's pieces, its debug analysis included, for the CLI.
    name: 'mode entries and registry',
    files: ['src/*/mode.ts', 'src/modes/!(backend|local-traffic|node-ports).ts'],
  },
  { name: 'cli', files: ['src/cli/**'] },
];

/** import-x/no-restricted-paths zones: each layer's files may not import any higher layer's. */
export function layerZones() {
  return LAYERS.slice(0, -1).map((layer, i) => ({
    target: [...layer.files],
    from: LAYERS.slice(i + 1).flatMap((l) => l.files),
    message: `"${layer.name}" may not import from a higher layer (eslint.layers.js, DEVELOPERS.md).`,
  }));
}

/**
 * The ESLint rules that keep the layers (used by eslint.config.js, and by the test that shows a
 * violation is caught): no import from a higher layer, no cycle (type-only and dynamic imports too).
 * @param {string} basePath the repository root
 * @param {{ project?: string }} [resolver] options of the TypeScript import resolver
 */
export function layerRules(basePath, resolver = {}) {
  return {
    files: ['src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      // Without its TypeScript settings import-x does not parse .ts dependencies: no-cycle saw none.
      ...importX.flatConfigs.typescript.settings,
      'import-x/resolver': undefined,
      'import-x/resolver-next': [createTypeScriptImportResolver(resolver)],
    },
    rules: {
      'import-x/no-restricted-paths': ['error', { basePath, zones: layerZones() }],
      'import-x/no-cycle': 'error',
    },
  };
}

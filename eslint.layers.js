// @ts-check
/**
 * svcplane's layers, bottom up (DEVELOPERS.md "Layers"). A file may import from its own layer and
 * the layers below it, never from a layer above; eslint.config.js turns this table into
 * import-x/no-restricted-paths zones, and import-x/no-cycle forbids cycles inside a layer.
 * Every file under src/ belongs to exactly one layer (test/unit/modes/layers.test.ts checks it).
 * A new mode folder (src/nftables …) adds its kernel tool wrapper files to "sources and kernel
 * tool wrappers", the rest of the folder to "modes", and its mode.ts is covered by "mode entries".
 * Across mode folders only the kernel tool wrappers may be imported (layerZones).
 */

import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/** Mode folders: kernel tool wrappers (run + parse) are listed by file, the rest is the mode. */
const MODE_FOLDERS = {
  iptables: ['iptables', 'commit-name', 'save-parse', 'names'],
  ipvs: ['ipvsadm', 'ipset', 'types'],
  nftables: ['listing', 'nft', 'names'],
};

/** src/modes' files shared by every mode (the rest of src/modes is the contract and the registry). */
const MODES_SHARED = ['backend', 'local-traffic', 'node-ports', 'node-facts', 'rule-input-checks'];

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
    files: [...modeInternals, 'src/netpol/**', `src/modes/@(${MODES_SHARED.join('|')}).ts`],
  },
  { name: 'controller', files: ['src/controller/**'] },
  { name: 'debug', files: ['src/debug/**'] },
  {
    // The contract wires each mode's pieces, its debug analysis included, for the CLI.
    name: 'mode entries and registry',
    files: ['src/*/mode.ts', `src/modes/!(${MODES_SHARED.join('|')}).ts`],
  },
  { name: 'cli', files: ['src/cli/**'] },
];

/**
 * Folders of rule producers (the modes and the NetworkPolicy enforcer), and the files of each that
 * another may import: its kernel tool wrappers (run + parse); none of the enforcer's.
 */
const PRODUCER_FOLDERS = { ...MODE_FOLDERS, netpol: [] };

/** A producer folder's files another producer may not import: all but its kernel tool wrappers. */
function internalsOf(/** @type {string} */ dir, /** @type {readonly string[]} */ wrapperFiles) {
  return wrapperFiles.length === 0 ? `src/${dir}/**` : `src/${dir}/!(${wrapperFiles.join('|')}).ts`;
}

/**
 * import-x/no-restricted-paths zones: each layer's files may not import any higher layer's; and a
 * mode folder (its mode.ts too) imports only its own folder, the shared layers and other modes'
 * kernel tool wrappers, never another mode's internals or entry (what two modes share lives in
 * src/modes or src/iptables-rules; the other modes are reached through the registry).
 */
export function layerZones() {
  const layers = LAYERS.slice(0, -1).map((layer, i) => ({
    target: [...layer.files],
    from: LAYERS.slice(i + 1).flatMap((l) => l.files),
    message: `"${layer.name}" may not import from a higher layer (eslint.layers.js, DEVELOPERS.md).`,
  }));
  const producers = Object.keys(PRODUCER_FOLDERS).map((dir) => ({
    target: [`src/${dir}/**`],
    from: Object.entries(PRODUCER_FOLDERS)
      .filter(([other]) => other !== dir)
      .map(([other, files]) => internalsOf(other, files)),
    message:
      `src/${dir} may import another mode's kernel tool wrappers (run + parse) only, never its ` +
      'internals or mode.ts: share through src/modes or src/iptables-rules, reach other modes through ' +
      'the registry (eslint.layers.js, DEVELOPERS.md).',
  }));
  return [...layers, ...producers];
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

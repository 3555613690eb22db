import { parse as parseYaml } from 'yaml';
import { PROXY_FLAGS, type FlagOrigin, type FlagSpec } from './flags.js';
import { defaultProxyConfig, formatKubeProxyConfig } from './kube-proxy-config.js';

/**
 * Human-readable views of the flag table: `--help` text, and the Markdown reference in docs/ (the
 * test of docs/flags.md compares the file with flagReferenceMarkdown(), so the two cannot drift).
 */

const GROUP_TITLE: Readonly<Record<FlagOrigin, string>> = {
  'kube-proxy': "kube-proxy's flags",
  logging: "kube-proxy's logging flags",
  svcplane: "svcplane's own flags",
};

function usageOf(s: FlagSpec): string {
  const long = `--${s.name}${s.kind === 'bool' ? '' : ` ${s.value ?? 'value'}`}`;
  return s.short ? `-${s.short}, ${long}` : `    ${long}`;
}

function supportText(s: FlagSpec): string {
  if (s.support === 'ignored') return ` [not implemented: ${s.note ?? ''}]`;
  if (s.support === 'noop') return ` [accepted: ${s.note ?? ''}]`;
  return '';
}

/** `--help` text for a list of flags, grouped by origin. */
export function formatFlagHelp(specs: readonly FlagSpec[]): string {
  const width = Math.min(44, Math.max(...specs.map((s) => usageOf(s).length)) + 2);
  const lines: string[] = [];
  for (const origin of ['kube-proxy', 'logging', 'svcplane'] as const) {
    const group = specs.filter((s) => s.origin === origin);
    if (group.length === 0) continue;
    lines.push('', `${GROUP_TITLE[origin]}:`);
    for (const s of group) {
      const usage = usageOf(s);
      const dflt = s.default !== '' && s.kind !== 'bool' ? ` (default ${s.default})` : '';
      const dep = s.deprecated ? ` (deprecated: ${s.deprecated})` : '';
      const text = `${s.help}${dflt}${dep}${supportText(s)}`;
      lines.push(
        usage.length + 2 > width
          ? `  ${usage}\n  ${' '.repeat(width)}${text}`
          : `  ${usage.padEnd(width)}${text}`,
      );
    }
  }
  return lines.join('\n');
}

function mdEscape(text: string): string {
  return text.replaceAll('|', '\\|');
}

function supportCell(s: FlagSpec): string {
  if (s.support === 'honoured') return 'yes';
  if (s.support === 'noop') return `accepted: ${s.note ?? ''}`;
  return `**no**: ${s.note ?? ''} (one warning when set)`;
}

/** docs/flags.md: every flag, its default, its config field, what svcplane does with it. */
export function flagReferenceMarkdown(specs: readonly FlagSpec[]): string {
  const out: string[] = [
    '# Command-line flags',
    '',
    '<!-- Generated from src/config/flags.ts by `npm run docs:reference`; test/unit/docs/reference.test.ts fails when this file drifts. -->',
    '',
    '`svcplane [flags]` takes the flags of `kube-proxy [flags]`, in the same forms (`--name=value`,',
    '`--name value`, a bare boolean `--name` or `--name=false`, `-v=2`, `-v 2`) and with the same meaning;',
    '`svcplane run [flags]` is the same command. `sync`, `diff` and `explain` take them too, except',
    '`--cleanup`, `--write-config-to` and `--init-only`.',
    '',
    '**With `--config`**, kube-proxy builds its whole configuration from the file and ignores the flags',
    'marked "file" below; svcplane does the same, and names each such flag in a warning. The flags marked',
    '"flag" apply on top of the file.',
    '',
    'A flag svcplane does not implement is accepted; a value that asks for something gets one warning',
    'naming it, never a start-up failure. An invalid value fails with the flag and the reason.',
  ];
  for (const origin of ['kube-proxy', 'logging', 'svcplane'] as const) {
    const group = specs.filter((s) => s.origin === origin);
    out.push(
      '',
      `## ${GROUP_TITLE[origin].replace(/^./, (c) => c.toUpperCase())} (${group.length})`,
      '',
      '| flag | default | config field | with --config | svcplane | what it does |',
      '|---|---|---|---|---|---|',
    );
    for (const s of group) {
      const name = `${s.short ? `\`-${s.short}\`, ` : ''}\`--${s.name}\``;
      const dflt = s.default === '' ? '' : `\`${s.default}\``;
      const field = s.field ? `\`${s.field}\`` : '';
      const what = `${s.help}${s.deprecated ? ` (deprecated: ${s.deprecated})` : ''}`;
      out.push(
        `| ${name} | ${dflt} | ${field} | ${s.withConfig} | ${mdEscape(supportCell(s))} | ${mdEscape(what)} |`,
      );
    }
  }
  return `${out.join('\n')}\n`;
}

/** What svcplane does with the KubeProxyConfiguration fields that have no flag. */
export const FIELDS_WITHOUT_FLAGS: Readonly<
  Record<string, { readonly support: string; readonly what: string }>
> = {
  'clientConnection.acceptContentTypes': {
    support: 'accepted: svcplane always talks JSON to the API server',
    what: 'Accept header of requests to the API server',
  },
  'nftables.masqueradeAll': {
    support: 'used in nftables mode (with --masquerade-all)',
    what: 'nftables mode: SNAT all Service traffic',
  },
  'nftables.masqueradeBit': {
    support: 'used in nftables mode (--iptables-masquerade-bit when this is left at 14)',
    what: 'nftables mode: masquerade mark bit',
  },
  'nftables.minSyncPeriod': {
    support: 'used in nftables mode',
    what: 'nftables mode: shortest interval between syncs',
  },
  'nftables.syncPeriod': {
    support: 'used in nftables mode',
    what: 'nftables mode: longest interval between full resyncs',
  },
  portRange: {
    support: 'accepted: unused by kube-proxy too (the userspace proxy is gone)',
    what: 'former userspace proxy port range',
  },
  serviceNodePortRange: {
    support: "svcplane's own field (kube-proxy does not have it; written only when not the default)",
    what: "node ports Services may use, as kube-apiserver's --service-node-port-range (flag --service-node-port-range)",
  },
  networkPolicy: {
    support: "svcplane's own field (kube-proxy does not have it; written only when true)",
    what: 'enforce NetworkPolicy for the pods of this node (flag --network-policy); default false',
  },
  'iptables.snatNodeInternalIP': {
    support: '**no**: one warning when true',
    what: "SNAT Service traffic to the node's InternalIP",
  },
  winkernel: {
    support: 'accepted: Windows only (kube-proxy ignores it on Linux too)',
    what: 'Windows HNS settings',
  },
  windowsRunAsService: { support: 'accepted: Windows only', what: 'run as a Windows service' },
};

/** The leaf fields of a KubeProxyConfiguration document, with their YAML value (pure). */
export function configLeaves(doc: Readonly<Record<string, unknown>>, prefix = ''): [string, unknown][] {
  const out: [string, unknown][] = [];
  for (const [k, v] of Object.entries(doc)) {
    const path = prefix === '' ? k : `${prefix}.${k}`;
    if (
      v !== null &&
      typeof v === 'object' &&
      !Array.isArray(v) &&
      Object.keys(v).length > 0 &&
      k !== 'featureGates'
    ) {
      out.push(...configLeaves(v as Record<string, unknown>, path));
    } else out.push([path, v]);
  }
  return out;
}

/** docs/configuration.md: every KubeProxyConfiguration field, its default, its flag, what svcplane does. */
export function configReferenceMarkdown(
  defaults: Readonly<Record<string, unknown>>,
  specs: readonly FlagSpec[],
): string {
  const out: string[] = [
    '# Configuration file (`--config`)',
    '',
    '<!-- Generated from src/config (defaults, flags and the notes in reference.ts) by `npm run docs:reference`; test/unit/docs/reference.test.ts fails when this file drifts. -->',
    '',
    "`svcplane --config=FILE` reads kube-proxy's `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`,",
    "YAML or JSON), every field of it, with kube-proxy's defaults: a zero value or `null` (as kubeadm writes",
    'unset fields) means the default below. An unknown field is a warning naming it; an invalid value fails',
    'the start-up with the field and the reason. With `--config`, the flags marked "file" in',
    '[flags.md](flags.md) are ignored, as kube-proxy ignores them (each one given is named in a warning).',
    '`svcplane --write-config-to=FILE` writes the configuration in effect in this form.',
    '',
    '| field | default | flag | svcplane |',
    '|---|---|---|---|',
  ];
  for (const [path, value] of configLeaves(defaults)) {
    if (path === 'apiVersion' || path === 'kind') continue;
    const flag = specs.find((s) => s.field === path);
    const extra = FIELDS_WITHOUT_FLAGS[path];
    const support = flag ? supportCell(flag) : (extra?.support ?? '');
    const shown = value === null ? 'unset' : `\`${JSON.stringify(value)}\``;
    out.push(`| \`${path}\` | ${shown} | ${flag ? `\`--${flag.name}\`` : ''} | ${mdEscape(support)} |`);
  }
  for (const [path, extra] of Object.entries(FIELDS_WITHOUT_FLAGS)) {
    if (configLeaves(defaults).some(([p]) => p === path)) continue;
    out.push(`| \`${path}\` | | | ${mdEscape(`${extra.support} (${extra.what})`)} |`);
  }
  return `${out.join('\n')}\n`;
}

/** The generated reference files (path in the repository → content). */
export function referenceDocs(): Record<string, string> {
  const defaults = parseYaml(formatKubeProxyConfig(defaultProxyConfig())) as Record<string, unknown>;
  return {
    'docs/flags.md': flagReferenceMarkdown(PROXY_FLAGS),
    'docs/configuration.md': configReferenceMarkdown(defaults, PROXY_FLAGS),
  };
}

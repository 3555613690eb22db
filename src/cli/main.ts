import { Command } from 'commander';
import { redactText } from '../util/log.js';
import { daemonMain, registerProxyCommands, syncMain } from './proxy.js';
import { registerNetnsCommands } from './netns.js';
import { diffMain, registerDiffCommand } from './diff.js';
import { registerTraceCommand } from './trace.js';
import { explainMain, registerExplainCommand } from './explain.js';
import { registerDemoCommand } from './demo.js';
import { isDaemonForm } from './relaunch.js';
import { packageVersion } from './version.js';

/**
 * svcplane's command line. `svcplane [flags]` is kube-proxy's command line (the daemon); the
 * commands that take kube-proxy's flags too (`run`, `sync`, `diff`, `explain`) are parsed the same
 * way (config/command-line.ts); the others are commander commands, each registered by its module.
 */

export function buildProgram(): Command {
  const program = new Command('svcplane')
    .description('Kubernetes Service dataplane controller (iptables / IPVS), kube-proxy compatible')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError();
  // Subcommand modules register here (one line each).
  registerProxyCommands(program);
  registerDemoCommand(program);
  registerNetnsCommands(program);
  registerDiffCommand(program);
  registerTraceCommand(program);
  registerExplainCommand(program);
  return program;
}

/** The commands listed in the daemon form's --help. */
function commandList(program: Command): string {
  const rows = program.commands.map((c) => [c.name(), c.description()] as const);
  const width = Math.max(...rows.map(([n]) => n.length)) + 2;
  return rows.map(([n, d]) => `  ${n.padEnd(width)}${d}`).join('\n');
}

/** Commands with kube-proxy style flags, parsed by their own entry points. */
const FLAG_COMMANDS: Readonly<Record<string, (args: readonly string[]) => Promise<number>>> = {
  run: (args) => daemonMain(args),
  sync: (args) => syncMain(args),
  diff: (args) => diffMain(args, process.stdout, process.stderr),
  explain: (args) => explainMain(args, process.stdout, process.stderr),
};

/** Runs the CLI; resolves to the process exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  const [first, ...rest] = argv.slice(2);
  // `svcplane [flags]` (no command) is kube-proxy [flags]; -V/--version and help stay svcplane's.
  if (first === undefined || isDaemonForm(first)) {
    return daemonMain(argv.slice(2), commandList(program));
  }
  const flagCommand = FLAG_COMMANDS[first];
  if (flagCommand) return flagCommand(rest);
  if (first === 'help' && rest[0] !== undefined && FLAG_COMMANDS[rest[0]]) {
    return FLAG_COMMANDS[rest[0]]!(['--help']);
  }
  program.exitOverride();
  try {
    await program.parseAsync([...argv]);
  } catch (err) {
    const code = (err as { exitCode?: number }).exitCode;
    if (typeof code === 'number') return code;
    throw err;
  }
  return typeof process.exitCode === 'number' ? process.exitCode : 0;
}

/**
 * What `bin/svcplane.js` runs: the CLI, with an error that escapes a command printed as one line
 * on stderr (exit status 2). Messages are built not to carry credentials (see kube/kubeconfig.ts).
 */
export async function cli(argv: readonly string[]): Promise<number> {
  try {
    return await main(argv);
  } catch (err) {
    // Redacted by content too: defence in depth for a message that quotes a server or a plugin.
    process.stderr.write(`${redactText(err instanceof Error ? err.message : String(err))}\n`);
    return 2;
  }
}

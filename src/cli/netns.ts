import { Command, InvalidArgumentError } from 'commander';
import { run } from '../util/exec.js';
import { parsePortList, validateId } from '../netns/names.js';
import {
  cleanupLeftovers,
  destroySandbox,
  isLeftover,
  listSandboxes,
  Sandbox,
  type PodInfo,
} from '../netns/sandbox.js';
import { parseLabels, SANDBOX_NODE_NAME, validateNamespace } from '../netns/pod-manifest.js';
import { readState } from '../netns/state.js';

/**
 * `svcplane netns ...`: an operator's sandbox (node + pods + outside client in network namespaces)
 * for demos and manual tests. Sandboxes made here are persistent: their echo agents run detached,
 * with PIDs in /run/svcplane/sandbox/<id>/, until `netns down`.
 */

const DEFAULT_ID = 'demo';

function idOption(v: string): string {
  try {
    return validateId(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function portsOption(what: string): (v: string) => number[] {
  return (v) => {
    try {
      return parsePortList(v, what);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

function intOption(min: number, max: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min || n > max)
      throw new InvalidArgumentError(`expected an integer ${min}-${max}`);
    return n;
  };
}

function describePod(p: PodInfo): string {
  const ports = [...p.tcpPorts.map((x) => `${x}/tcp`), ...p.udpPorts.map((x) => `${x}/udp`)].join(',') || '-';
  const labels = Object.entries(p.labels).map(([k, v]) => `${k}=${v}`);
  // Namespace and labels only when set, so the line stays as it was for pods without them.
  const k8s =
    p.namespace !== 'default' || labels.length > 0 ? `\t${p.namespace}\t${labels.join(',') || '-'}` : '';
  return `${p.name}\t${p.ns}\t${p.ipv4}\t${p.ipv6}\t${p.hostVeth}\t${ports}${k8s}`;
}

function nsOption(v: string): string {
  try {
    return validateNamespace(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function labelsOption(v: string): Record<string, string> {
  try {
    return parseLabels(v);
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function registerNetnsCommands(program: Command): void {
  const netns = program
    .command('netns')
    .description('sandbox of network namespaces: a node (cbr0 bridge), pods and an outside client');

  netns
    .command('up')
    .description('create a sandbox (svcp-<id>-node, svcp-<id>-outside and pods pod1..podN)')
    .option('--id <id>', 'sandbox id, [a-z0-9]{1,8}', idOption, DEFAULT_ID)
    .option('--pods <n>', 'number of pods', intOption(0, 64), 0)
    .option('--tcp <ports>', 'TCP echo ports for each pod, e.g. 80,9376', portsOption('tcp port'), [])
    .option('--udp <ports>', 'UDP echo ports for each pod, e.g. 53', portsOption('udp port'), [])
    .action(async (o: { id: string; pods: number; tcp: number[]; udp: number[] }) => {
      const pods = Array.from({ length: o.pods }, (_, i) => ({
        name: `pod${i + 1}`,
        tcpPorts: o.tcp,
        udpPorts: o.udp,
      }));
      const sb = await Sandbox.create({ id: o.id, pods, persistent: true });
      print(
        `sandbox ${sb.id}: node ${sb.nodeNs} (${sb.nodeIPv4}, ${sb.nodeIPv6}), outside ${sb.outsideNs} (${sb.outsideIPv4}, ${sb.outsideIPv6})`,
      );
      for (const p of sb.listPods()) print(describePod(p));
    });

  netns
    .command('down')
    .description('remove a sandbox: agents, namespaces, state')
    .option('--id <id>', 'sandbox id', idOption, DEFAULT_ID)
    .option('--all', 'remove every sandbox on this machine')
    .option('--leftovers', 'remove only leftovers of crashed test runs')
    .action(async (o: { id: string; all?: boolean; leftovers?: boolean }) => {
      if (o.all || o.leftovers) {
        const removed = await cleanupLeftovers({ all: o.all === true });
        print(removed.length > 0 ? `removed: ${removed.join(' ')}` : 'nothing to remove');
        return;
      }
      await destroySandbox(o.id);
      print(`removed: ${o.id}`);
    });

  const pod = netns.command('pod').description('add or remove pods');
  pod
    .command('add <name>')
    .description(
      'add a pod (namespace svcp-<id>-<name>, veth on cbr0, 10.244.0.N); with ports, start its echo agent',
    )
    .option('--id <id>', 'sandbox id', idOption, DEFAULT_ID)
    .option('--index <n>', 'N of 10.244.0.N (default: the lowest free)', intOption(2, 254))
    .option('--tcp <ports>', 'TCP echo ports, e.g. 80,9376', portsOption('tcp port'), [])
    .option('--udp <ports>', 'UDP echo ports, e.g. 53', portsOption('udp port'), [])
    .option('--namespace <ns>', 'Kubernetes namespace of the pod, for pods.json (default: default)', nsOption)
    .option('--labels <k=v,...>', 'Kubernetes labels of the pod, for pods.json', labelsOption, {})
    .action(
      async (
        name: string,
        o: {
          id: string;
          index?: number;
          tcp: number[];
          udp: number[];
          namespace?: string;
          labels: Record<string, string>;
        },
      ) => {
        const sb = await Sandbox.attach(o.id);
        const p = await sb.addPod({
          name,
          ...(o.index !== undefined ? { index: o.index } : {}),
          tcpPorts: o.tcp,
          udpPorts: o.udp,
          ...(o.namespace !== undefined ? { namespace: o.namespace } : {}),
          labels: o.labels,
        });
        print(describePod(p));
        // For --network-policy: who is who, as Namespace and Pod objects svcplane run can read.
        print(
          `pods as Kubernetes objects: ${sb.podManifestPath} (svcplane run --hostname-override ${SANDBOX_NODE_NAME})`,
        );
      },
    );
  pod
    .command('del <name>')
    .description('remove a pod and its agent')
    .option('--id <id>', 'sandbox id', idOption, DEFAULT_ID)
    .action(async (name: string, o: { id: string }) => {
      const sb = await Sandbox.attach(o.id);
      sb.pod(name);
      await sb.removePod(name);
    });

  netns
    .command('exec <where> <cmd...>')
    .description(
      'run a command in a sandbox namespace: node, outside, a pod name or a full namespace name (use -- before CMD)',
    )
    .option('--id <id>', 'sandbox id', idOption, DEFAULT_ID)
    .action(async (where: string, cmd: string[], o: { id: string }) => {
      const ns = where.startsWith('svcp-') ? where : (await Sandbox.attach(o.id)).nsOf(where);
      const res = await run(cmd, { netns: ns, allowFailure: true, timeoutMs: 3_600_000 });
      process.stdout.write(res.stdout);
      process.stderr.write(res.stderr);
      process.exitCode = res.exitCode;
    });

  netns
    .command('probe <from> <proto> <ip> <port>')
    .description('one TCP/UDP request from inside node, outside or a pod; prints the echo reply or the error')
    .option('--id <id>', 'sandbox id', idOption, DEFAULT_ID)
    .option('--timeout <ms>', 'timeout in milliseconds', intOption(1, 600_000), 1000)
    .option('--source-port <port>', 'client source port', intOption(1, 65535))
    .action(
      async (
        from: string,
        proto: string,
        ip: string,
        port: string,
        o: { id: string; timeout: number; sourcePort?: number },
      ) => {
        if (proto !== 'tcp' && proto !== 'udp')
          throw new InvalidArgumentError(`proto "${proto}": expected tcp or udp`);
        const sb = await Sandbox.attach(o.id);
        try {
          const r = await sb.request(from, {
            proto: proto,
            ip,
            port: intOption(1, 65535)(port),
            timeoutMs: o.timeout,
            ...(o.sourcePort !== undefined ? { sourcePort: o.sourcePort } : {}),
          });
          print(JSON.stringify(r));
          if (!r.ok) process.exitCode = 1;
        } finally {
          await sb.release();
        }
      },
    );

  netns
    .command('ls')
    .description('list sandboxes, their pods and whether they are leftovers of crashed runs')
    .action(async () => {
      for (const id of await listSandboxes()) {
        const state = await readState(id).catch(() => undefined);
        const owner = !state ? 'no state' : state.owner === null ? 'operator' : `pid ${state.owner.pid}`;
        print(`${id}\t${owner}${(await isLeftover(id)) ? '\tLEFTOVER' : ''}`);
        if (!state) continue;
        try {
          for (const p of (await Sandbox.attach(id)).listPods()) print(`  ${describePod(p)}`);
        } catch (err) {
          print(`  (${(err as Error).message})`);
        }
      }
    });
}

import type { Iptables } from '../src/iptables/iptables.js';

/**
 * Records every input `ipt` restores, whole, in `inputs`: a string as it is, a streamed input (a full
 * sync's pieces, rendered while iptables-restore reads) passed on piece by piece as it comes and kept
 * joined once the child has read it all. Returns the function that puts the real restore back.
 * Shared by the bench (the floor restores the very input a sync wrote) and the tests that read it.
 */
export function recordRestoreInputs(ipt: Iptables, inputs: string[]): () => void {
  const realRestore = ipt.restore.bind(ipt);
  ipt.restore = (input, opts) => {
    if (typeof input === 'string') inputs.push(input);
    return realRestore(typeof input === 'string' ? input : keptWhole(input, inputs), opts);
  };
  return () => {
    ipt.restore = realRestore;
  };
}

async function* keptWhole(
  pieces: Iterable<string> | AsyncIterable<string>,
  inputs: string[],
): AsyncGenerator<string> {
  const seen: string[] = [];
  for await (const p of pieces) {
    seen.push(p);
    yield p;
  }
  inputs.push(seen.join(''));
}

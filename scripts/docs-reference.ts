// Writes docs/flags.md and docs/configuration.md from the code (src/config): `npm run docs:reference`.
// test/unit/docs/reference.test.ts fails when the files differ from what this writes.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { referenceDocs } from '../src/config/reference.js';
import { packageRoot } from '../src/util/paths.js';

for (const [path, text] of Object.entries(referenceDocs())) {
  writeFileSync(join(packageRoot(), path), text);
  process.stdout.write(`wrote ${path}\n`);
}

#!/usr/bin/env node
import { relaunchArgv } from '../dist/src/cli/relaunch.js';

// The daemon starts node again with its V8 flags (src/util/memory.ts), in the same process (PID,
// open descriptors and environment kept): V8 sizes its young generation only when node starts.
const again = relaunchArgv(process.argv, process.execPath, process.execArgv, process.env.NODE_OPTIONS);
if (again !== undefined && typeof process.execve === 'function') process.execve(process.execPath, again);

const { cli } = await import('../dist/src/cli/main.js');
process.exitCode = await cli(process.argv);

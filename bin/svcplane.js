#!/usr/bin/env node
import { cli } from '../dist/src/cli/main.js';

process.exitCode = await cli(process.argv);

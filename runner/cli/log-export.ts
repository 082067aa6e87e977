import type { Command } from 'commander';

/** `log export` and `log verify` (being written). */
export function addLogExportCommands(_log: Command): void {}

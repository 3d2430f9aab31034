import { fileURLToPath } from 'node:url';

/** The built `chorus` command (server/cli.ts) that each bench starts its Chorus servers with. */
export const CHORUS_CLI = fileURLToPath(new URL('../server/cli.js', import.meta.url));

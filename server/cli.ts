#!/usr/bin/env node
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { pino, type Logger } from 'pino';
import { signToken } from '../auth/token-verifier.js';
import { ConfigError, loadConfig, type ChorusConfig } from '../config/config.js';
import { startChorus } from './start.js';
import { ChorusClient } from '../clients/chorus-client.js';
import { messageLine } from '../protocol/index.js';
import { FilePositionStore } from '../clients/position-store-file.js';

const USAGE = `chorus — group messaging on MQTT

  chorus serve [--role all|broker|api]     start Chorus (config: CHORUS_* env or CHORUS_CONFIG=file.json)
  chorus token <userId> [--ttl seconds]    print a development token signed with the local secret
  chorus group create <name> --user <id> [--members a,b,c]
                                           create a group, print its id
  chorus chat <groupId> --user <id>        chat on a group in the terminal (type a line to send; in the chat,
                                           /edit <seq> <text>, /delete <seq>, /react <seq> <emoji>,
                                           /unreact <seq> <emoji>, /receipts <seq>, /search <query>)

  Client commands take --mqtt <url> (default mqtt://127.0.0.1:1883), --api <url> (default http://127.0.0.1:8080)
  and --token <jwt> (default: CHORUS_TOKEN, else a development token from the local data dir).`;

function config(overrides: Partial<ChorusConfig> = {}): ChorusConfig {
  try {
    return loadConfig(process.env, overrides);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** How long `chorus serve` may take to close after SIGTERM or SIGINT. */
const SHUTDOWN_DEADLINE_MS = 9000;

/**
 * JSON lines, one per event, for log collectors; in development on a terminal, lines a person can scan (pino-pretty,
 * synchronous so that nothing is lost at exit).
 */
async function serverLogger(cfg: ChorusConfig): Promise<Logger> {
  if (cfg.env !== 'development' || !process.stdout.isTTY) return pino({ level: cfg.logLevel });
  const { default: pretty } = await import('pino-pretty');
  return pino(
    { level: cfg.logLevel },
    pretty({ colorize: true, sync: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' }),
  );
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { role: { type: 'string' } } });
  const cfg = config(values.role ? { role: values.role as ChorusConfig['role'] } : {});
  const chorus = await startChorus(cfg, { logger: await serverLogger(cfg) });
  process.stdout.write(
    [
      `Chorus is running (role ${cfg.role}, store ${cfg.store}${cfg.store === 'sqlite' ? ` in ${cfg.dataDir}` : ''}, ${cfg.env} mode)`,
      ...(cfg.role !== 'api'
        ? [`  MQTT over TCP        ${chorus.urls.mqtt}`, `  MQTT over WebSocket  ${chorus.urls.ws}`]
        : []),
      ...(cfg.role !== 'broker'
        ? [
            `  Web chat             ${chorus.urls.http}/`,
            `  REST API             ${chorus.urls.http}/v1`,
            `  OpenAPI docs         ${chorus.urls.docs}`,
          ]
        : []),
      `  Try it:              npx chorus token alice`,
      '',
    ].join('\n'),
  );
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    // Orchestrators kill a node 10 s after SIGTERM (Docker, Kubernetes by default): whatever is still closing by then
    // is cut short here instead. Nothing acknowledged depends on it: a PUBACK or a 2xx is only sent once stored.
    setTimeout(() => {
      process.stderr.write(`Chorus did not close within ${SHUTDOWN_DEADLINE_MS} ms: exiting\n`);
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
    await chorus.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

async function token(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ttl: { type: 'string' } } });
  const userId = positionals[0];
  if (!userId) throw new Error('usage: chorus token <userId> [--ttl seconds]');
  process.stdout.write(`${await signToken(config(), userId, Number(values.ttl ?? 86_400))}\n`);
}

const clientOptions = {
  user: { type: 'string' },
  token: { type: 'string' },
  mqtt: { type: 'string' },
  api: { type: 'string' },
  members: { type: 'string' },
} as const;

async function connect(values: { user?: string; token?: string; mqtt?: string; api?: string }): Promise<ChorusClient> {
  if (!values.user) throw new Error('--user <id> is required');
  const cfg = config();
  return ChorusClient.connect({
    mqttUrl: values.mqtt ?? `mqtt://127.0.0.1:${cfg.mqttPort}`,
    apiUrl: values.api ?? `http://127.0.0.1:${cfg.httpPort}`,
    userId: values.user,
    token: values.token ?? process.env.CHORUS_TOKEN ?? (await signToken(cfg, values.user, 86_400)),
    positions: new FilePositionStore(join(cfg.dataDir, 'cli-positions', `${values.user}.json`)),
    mqttOptions: { reconnectPeriod: 2000 },
  });
}

async function group(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: clientOptions });
  if (positionals[0] !== 'create' || !positionals[1])
    throw new Error('usage: chorus group create <name> --user <id> [--members a,b]');
  const client = await connect(values);
  try {
    const members = values.members ? values.members.split(',').filter(Boolean) : [];
    const created = await client.api.createGroup(positionals[1], members);
    process.stdout.write(`${created.id}\n`);
  } finally {
    await client.close();
  }
}

async function chat(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: clientOptions });
  const groupId = positionals[0];
  if (!groupId) throw new Error('usage: chorus chat <groupId> --user <id>');
  const client = await connect(values);
  const out = (line: string) => process.stdout.write(`${line}\n`);
  client.on('message', (m) => {
    if (m.groupId === groupId) out(messageLine(m));
  });
  client.on('event', (e) => {
    if (e.type === 'rejected') out(`! ${e.code}: ${e.message}`);
  });
  client.on('typing', (t) => {
    if (t.groupId === groupId) out(`… ${t.userId} is typing`);
  });
  client.on('offline', () => out('! offline, reconnecting...'));
  client.on('error', (err) => out(`! ${err.message}`));
  const recent = await client.api.messagesBefore(groupId, 20, undefined, { withReactions: true });
  for (const m of recent.reverse()) out(messageLine(m));
  await client.join(groupId, { from: recent[0]?.seq ?? (await client.api.getGroup(groupId)).lastSeq });
  out(`— joined ${groupId} as ${values.user}; type a message and press Enter (Ctrl-D to quit)`);
  const input = createInterface({ input: process.stdin });
  input.on('line', (line) => {
    if (!line.trim()) return;
    chatCommand(client, groupId, line).then(
      (said) => said && out(said),
      (err: Error) => out(`! not sent: ${err.message}`),
    );
  });
  input.on('close', () => void client.close().then(() => process.exit(0)));
}

/** A line typed in the chat: a /command, or a message to send. Resolves with what to print, if anything. */
async function chatCommand(client: ChorusClient, groupId: string, line: string): Promise<string | undefined> {
  const [, command, seqText, rest = ''] = /^\/(\w+)(?:\s+(\d+))?(?:\s+(.*))?$/.exec(line.trim()) ?? [];
  if (command === undefined) {
    await client.send(groupId, { body: line });
    return undefined;
  }
  const searched = /^\/search\s+(.+)$/.exec(line.trim());
  if (searched) {
    const { hits } = await client.api.search(groupId, searched[1]!, { limit: 10 });
    if (hits.length === 0) return '— nothing found';
    return hits
      .map((hit) => `— [${hit.seq}] ${hit.senderId} ${hit.createdAt.slice(0, 16).replace('T', ' ')}: ${hit.snippet}`)
      .join('\n');
  }
  const seq = Number(seqText);
  if (!Number.isSafeInteger(seq) || seq < 1)
    return '! usage: /edit <seq> <text> | /delete <seq> | /react <seq> <emoji> | /unreact <seq> <emoji> | /receipts <seq>';
  if (command === 'edit' && rest) await client.edit(groupId, seq, rest);
  else if (command === 'delete') await client.deleteMessage(groupId, seq);
  else if (command === 'react' && rest) await client.react(groupId, seq, rest.trim());
  else if (command === 'unreact' && rest) await client.react(groupId, seq, rest.trim(), { remove: true });
  else if (command === 'receipts') {
    const r = await client.api.receipts(groupId, seq);
    return `— #${seq}: delivered to ${r.deliveredTo} and read by ${r.readBy} of ${r.members}${r.readers.length > 0 ? ` (${r.readers.join(', ')}${r.next ? ', …' : ''})` : ''}`;
  } else return `! unknown command /${command}`;
  return undefined;
}

const commands: Record<string, (args: string[]) => Promise<void>> = { serve, token, group, chat };

const [command, ...rest] = process.argv.slice(2);
const run = command ? commands[command] : undefined;
if (!run) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(command && command !== 'help' && command !== '--help' ? 2 : 0);
} else {
  run(rest).catch((err: Error) => {
    process.stderr.write(`chorus ${command}: ${err.message}\n`);
    process.exit(1);
  });
}

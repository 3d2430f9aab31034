import { spawn } from 'node:child_process';
import webpush from 'web-push';
import { describe, expect, it } from 'vitest';
import { CLI, tempDir, until } from './harness.js';

/**
 * `chorus serve` until it says it is running and has logged that it listens, stdout as a terminal (through
 * util-linux's script) or as a pipe; what it wrote.
 */
async function serveBriefly(terminal: boolean, env: Record<string, string>): Promise<string> {
  const settings = { ...process.env, CHORUS_DATA_DIR: tempDir(), CHORUS_MQTT_PORT: '0', CHORUS_HTTP_PORT: '0', ...env };
  const command = terminal
    ? ['script', '-qec', `${process.execPath} ${CLI} serve`, '/dev/null']
    : [process.execPath, CLI, 'serve'];
  const child = spawn(command[0]!, command.slice(1), {
    env: settings,
    detached: true,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    // Both the banner and Fastify's first log line: on a busy machine the log's line may come out after the banner.
    const started = () => output.includes('Try it:') && output.includes('Server listening at');
    await until(() => started() || child.exitCode !== null, 'chorus serve to start', 20_000);
  } finally {
    if (child.exitCode === null) process.kill(-child.pid!, 'SIGINT');
    await exited;
  }
  return output;
}

describe('the server log', () => {
  it('is one JSON object per line when stdout is not a terminal', async () => {
    const lines = (await serveBriefly(false, {})).split('\n').filter((line) => line.startsWith('{'));
    expect(lines.length).toBeGreaterThan(0);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 30, msg: expect.any(String) });
  });

  it('is lines a person can scan in development on a terminal, and JSON in production there', async () => {
    const development = await serveBriefly(true, {});
    expect(development).toContain('INFO');
    expect(development).toContain('Server listening at');
    expect(development).not.toMatch(/^\{"level"/m);
    const vapid = webpush.generateVAPIDKeys();
    const production = await serveBriefly(true, {
      CHORUS_ENV: 'production',
      CHORUS_JWT_SECRET: 'x'.repeat(40),
      CHORUS_VAPID_PUBLIC_KEY: vapid.publicKey,
      CHORUS_VAPID_PRIVATE_KEY: vapid.privateKey,
    });
    expect(production).toMatch(/^\{"level":30/m);
  });
});

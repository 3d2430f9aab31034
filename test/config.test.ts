import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, envName, loadConfig } from '../config/config.js';
import { tempDir } from './harness.js';

describe('config', () => {
  it('has embedded defaults', () => {
    expect(loadConfig({})).toMatchObject({
      mqttPort: 1883,
      httpPort: 8080,
      wsPath: '/mqtt',
      dataDir: './data',
      maxGroupMembers: 100_000,
    });
  });

  it('reads CHORUS_* env over a config file', () => {
    const file = join(tempDir(), 'chorus.json');
    writeFileSync(file, JSON.stringify({ mqttPort: 1999, httpPort: 9000 }));
    expect(loadConfig({ CHORUS_CONFIG: file, CHORUS_HTTP_PORT: '9001' })).toMatchObject({
      mqttPort: 1999,
      httpPort: 9001,
    });
    expect(envName('maxGroupMembers')).toBe('CHORUS_MAX_GROUP_MEMBERS');
  });

  it('lists every problem at once', () => {
    let error: ConfigError | undefined;
    try {
      loadConfig({
        CHORUS_MQTT_PORT: 'abc',
        CHORUS_HTTP_PORT: '70000',
        CHORUS_TYPO: '1',
        CHORUS_ENV: 'production',
        CHORUS_JWT_SECRET: 'short',
      });
    } catch (err) {
      error = err as ConfigError;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect(error!.problems).toHaveLength(5);
    expect(error!.message).toMatch(/vapidPublicKey and vapidPrivateKey: required when env is production/);
    expect(error!.message).toMatch(/CHORUS_TYPO: unknown setting/);
    expect(error!.message).toMatch(/mqttPort \(CHORUS_MQTT_PORT\)/);
    expect(error!.message).toMatch(/httpPort \(CHORUS_HTTP_PORT\)/);
    expect(error!.message).toMatch(/jwtSecret \(CHORUS_JWT_SECRET\)/);
  });

  it('refuses production without a configured key, and a secret together with a public key', () => {
    expect(() => loadConfig({ CHORUS_ENV: 'production' })).toThrow(/required when env is production/);
    expect(() => loadConfig({ CHORUS_JWT_SECRET: 'x'.repeat(32), CHORUS_JWT_PUBLIC_KEY: 'pem' })).toThrow(
      /set one, not both/,
    );
  });
});

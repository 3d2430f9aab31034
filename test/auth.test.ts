import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { describe, expect, it } from 'vitest';
import { createTokenVerifier, signToken } from '../broker/auth.js';
import { loadConfig } from '../config/config.js';
import { tempDir } from './harness.js';

describe('token verification', () => {
  it('generates a development secret once and verifies its tokens across verifier instances', async () => {
    const config = loadConfig({}, { dataDir: tempDir() });
    const token = await signToken(config, 'alice', 60);
    expect(await (await createTokenVerifier(config)).verify(token)).toMatchObject({ userId: 'alice' });
    const other = loadConfig({}, { dataDir: tempDir() });
    await expect((await createTokenVerifier(other)).verify(token)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
  });

  for (const alg of ['RS256', 'ES256'] as const) {
    it(`verifies ${alg} tokens with a configured public key and refuses HS256 ones (no algorithm confusion)`, async () => {
      const { publicKey, privateKey } = await generateKeyPair(alg);
      const pem = await exportSPKI(publicKey);
      const config = loadConfig({}, { dataDir: tempDir(), jwtPublicKey: pem, jwtIssuer: 'https://idp.example', jwtAudience: 'chorus' });
      const verifier = await createTokenVerifier(config);
      const sign = (claims: { iss?: string; aud?: string; sub?: string }) =>
        new SignJWT({}).setProtectedHeader({ alg }).setSubject(claims.sub ?? 'bob').setIssuer(claims.iss ?? 'https://idp.example').setAudience(claims.aud ?? 'chorus').setExpirationTime('1m').sign(privateKey);
      expect(await verifier.verify(await sign({}))).toMatchObject({ userId: 'bob' });
      await expect(verifier.verify(await sign({ aud: 'other' }))).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      await expect(verifier.verify(await sign({ iss: 'https://evil.example' }))).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      await expect(verifier.verify(await sign({ sub: 'has/slash' }))).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      const hs = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('bob').sign(new TextEncoder().encode(pem));
      await expect(verifier.verify(hs)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    });
  }
});

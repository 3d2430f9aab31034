import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { describe, expect, it } from 'vitest';
import { createTokenVerifier, signToken } from '../auth/token-verifier.js';
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
      const config = loadConfig(
        {},
        { dataDir: tempDir(), jwtPublicKey: pem, jwtIssuer: 'https://idp.example', jwtAudience: 'chorus' },
      );
      const verifier = await createTokenVerifier(config);
      const sign = (claims: { iss?: string; aud?: string; sub?: string }) =>
        new SignJWT({})
          .setProtectedHeader({ alg })
          .setSubject(claims.sub ?? 'bob')
          .setIssuer(claims.iss ?? 'https://idp.example')
          .setAudience(claims.aud ?? 'chorus')
          .setExpirationTime('1m')
          .sign(privateKey);
      expect(await verifier.verify(await sign({}))).toMatchObject({ userId: 'bob' });
      await expect(verifier.verify(await sign({ aud: 'other' }))).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      await expect(verifier.verify(await sign({ iss: 'https://evil.example' }))).rejects.toMatchObject({
        code: 'UNAUTHORIZED',
      });
      await expect(verifier.verify(await sign({ sub: 'has/slash' }))).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      const hs = await new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('bob')
        .sign(new TextEncoder().encode(pem));
      await expect(verifier.verify(hs)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    });
  }

  it('refuses tokens without exp (unless allowed), living longer than jwtMaxLifetimeSeconds, or issued in the future', async () => {
    const config = loadConfig({}, { dataDir: tempDir(), jwtSecret: 's'.repeat(40), jwtMaxLifetimeSeconds: 3600 });
    const key = new TextEncoder().encode(config.jwtSecret);
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: { exp?: number; iat?: number }) => {
      let jwt = new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('bob');
      if (claims.iat !== undefined) jwt = jwt.setIssuedAt(claims.iat);
      if (claims.exp !== undefined) jwt = jwt.setExpirationTime(claims.exp);
      return jwt.sign(key);
    };
    const verifier = await createTokenVerifier(config);
    expect(await verifier.verify(await sign({ iat: now, exp: now + 3600 }))).toMatchObject({
      userId: 'bob',
      expiresAt: now + 3600,
    });
    await expect(verifier.verify(await sign({}))).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expect(verifier.verify(await sign({ iat: now, exp: now + 3601 }))).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
    });
    await expect(verifier.verify(await sign({ exp: now + 7200 }))).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await expect(verifier.verify(await sign({ iat: now + 60, exp: now + 120 }))).rejects.toMatchObject({
      code: 'UNAUTHORIZED',
    });
    expect(await verifier.verify(await sign({ iat: now + 3, exp: now + 120 }))).toMatchObject({ userId: 'bob' }); // within the clock skew
    const lenient = await createTokenVerifier({ ...config, jwtRequireExp: false });
    expect(await lenient.verify(await sign({}))).toEqual({ userId: 'bob' });
  });

  it('remembers a verified token, but never past its exp', async () => {
    const config = loadConfig({}, { dataDir: tempDir() });
    const verifier = await createTokenVerifier(config);
    const token = await signToken(config, 'carol', 1);
    expect(await verifier.verify(token)).toMatchObject({ userId: 'carol' });
    expect(await verifier.verify(token)).toMatchObject({ userId: 'carol' }); // from the cache
    await new Promise((resolve) => setTimeout(resolve, 7000)); // past exp and the 5 s clock tolerance
    await expect(verifier.verify(token)).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
  }, 15_000);
});

import { createPublicKey, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SignJWT, jwtVerify, type JWTVerifyOptions } from 'jose';
import type { ChorusConfig } from '../config/config.js';
import { ChorusError, isUserId } from '../protocol/index.js';

export interface VerifiedToken {
  userId: string;
  /** Seconds since the epoch; undefined when the token does not expire. */
  expiresAt?: number;
}

/** Verifies bearer tokens for MQTT CONNECT and REST alike. */
export interface TokenVerifier {
  /** Resolves with the token's user, or rejects with ChorusError UNAUTHORIZED. Never logs the token. */
  verify(token: string): Promise<VerifiedToken>;
}

const DEV_SECRET_FILE = 'jwt-secret';
/** How far the issuer's clock may be from ours, for exp, nbf and iat. */
const CLOCK_TOLERANCE_SECONDS = 5;
/** Verified tokens remembered (a REST client sends the same one with every request), and for how long at most. */
const MAX_CACHED_TOKENS = 10_000;
const CACHE_SECONDS = 60;

/**
 * The development secret: generated on first start, kept in the data dir with owner-only permissions so that
 * `chorus token` and the server agree on it across restarts. Production configs must set jwtSecret or jwtPublicKey.
 */
export function devSecret(dataDir: string): string {
  const file = join(dataDir, DEV_SECRET_FILE);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const secret = randomBytes(48).toString('base64url');
  writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  return secret;
}

const hmacSecret = (config: ChorusConfig): Uint8Array<ArrayBuffer> =>
  new TextEncoder().encode(config.jwtSecret ?? devSecret(config.dataDir));

export async function createTokenVerifier(config: ChorusConfig): Promise<TokenVerifier> {
  // Keys are imported into WebCrypto once: handed raw bytes or a KeyObject, jose imports them again on every verify,
  // which was half of a verify's cost (measured: 214-240 us against 109-147 us per HS256 token).
  let key: CryptoKey;
  let algorithms: string[];
  if (config.jwtPublicKey) {
    // Env vars often carry a PEM with literal "\n"; the key type decides the algorithm (EC: ES256, RSA: RS256).
    const publicKey = createPublicKey(config.jwtPublicKey.replace(/\\n/g, '\n'));
    const ec = publicKey.asymmetricKeyType === 'ec';
    algorithms = [ec ? 'ES256' : 'RS256'];
    const params = ec ? { name: 'ECDSA', namedCurve: 'P-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    key = await crypto.subtle.importKey('spki', publicKey.export({ format: 'der', type: 'spki' }), params, false, ['verify']);
  } else {
    key = await crypto.subtle.importKey('raw', hmacSecret(config), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']);
    algorithms = ['HS256'];
  }
  const options: JWTVerifyOptions = { algorithms, clockTolerance: CLOCK_TOLERANCE_SECONDS };
  if (config.jwtRequireExp) options.requiredClaims = ['exp'];
  if (config.jwtIssuer) options.issuer = config.jwtIssuer;
  if (config.jwtAudience) options.audience = config.jwtAudience;
  // A token verified once is known good until the earlier of its exp and CACHE_SECONDS from then: a signature check
  // saved per request. Least recently used first out.
  const verified = new Map<string, { token: VerifiedToken; until: number }>();
  return {
    async verify(token: string): Promise<VerifiedToken> {
      const now = Date.now() / 1000;
      const known = verified.get(token);
      if (known && known.until > now) {
        verified.delete(token);
        verified.set(token, known);
        return known.token;
      }
      const checked = await verifyToken(token);
      verified.delete(token);
      verified.set(token, { token: checked, until: Math.min(checked.expiresAt ?? Number.POSITIVE_INFINITY, now + CACHE_SECONDS) });
      if (verified.size > MAX_CACHED_TOKENS) verified.delete(verified.keys().next().value!);
      return checked;
    },
  };

  async function verifyToken(token: string): Promise<VerifiedToken> {
    try {
      const { payload } = await jwtVerify(token, key, options);
      if (typeof payload.sub !== 'string' || !isUserId(payload.sub)) {
        throw new ChorusError('UNAUTHORIZED', 'token subject is not a valid user id');
      }
      const now = Date.now() / 1000;
      if (payload.iat !== undefined && payload.iat > now + CLOCK_TOLERANCE_SECONDS) {
        throw new ChorusError('UNAUTHORIZED', 'token rejected: issued in the future');
      }
      if (payload.exp !== undefined && payload.exp - (payload.iat ?? now) > config.jwtMaxLifetimeSeconds) {
        throw new ChorusError('UNAUTHORIZED', `token rejected: lives longer than ${config.jwtMaxLifetimeSeconds} s`);
      }
      return payload.exp === undefined ? { userId: payload.sub } : { userId: payload.sub, expiresAt: payload.exp };
    } catch (err) {
      if (err instanceof ChorusError) throw err;
      throw new ChorusError('UNAUTHORIZED', `token rejected: ${(err as { code?: string }).code ?? 'invalid'}`);
    }
  }
}

/** Signs a token with the configured HS256 secret (or the development secret). Used by `chorus token` and tests. */
export async function signToken(config: ChorusConfig, userId: string, ttlSeconds: number): Promise<string> {
  if (!isUserId(userId)) throw new ChorusError('VALIDATION_FAILED', `not a valid user id: ${userId}`);
  if (config.jwtPublicKey) throw new Error('this server verifies with a public key: sign tokens with its private key');
  let jwt = new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(userId).setIssuedAt().setExpirationTime(
    `${ttlSeconds}s`,
  );
  if (config.jwtIssuer) jwt = jwt.setIssuer(config.jwtIssuer);
  if (config.jwtAudience) jwt = jwt.setAudience(config.jwtAudience);
  return jwt.sign(hmacSecret(config));
}

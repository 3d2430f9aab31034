import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSigner, createVerifier, type VerifierOptions } from 'fast-jwt';
import type { ChorusConfig } from '../config/config.js';
import { ChorusError, isUserId } from '../protocol/index.js';

export interface VerifiedToken {
  userId: string;
  /** Seconds since the epoch; undefined when the token does not expire. */
  expiresAt?: number;
}

/** Verifies bearer tokens for MQTT CONNECT and REST alike. */
export interface TokenVerifier {
  /**
   * Resolves with the token's user, or rejects with ChorusError UNAUTHORIZED. Never logs the token. A token verified
   * with `remember` (the default) is known good for a while after (see createTokenVerifier); one verified without is
   * only looked up.
   */
  verify(token: string, options?: { remember?: boolean }): Promise<VerifiedToken>;
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

const hmacSecret = (config: ChorusConfig): string => config.jwtSecret ?? devSecret(config.dataDir);

export async function createTokenVerifier(config: ChorusConfig): Promise<TokenVerifier> {
  // fast-jwt checks signatures with node:crypto, synchronously: 11 us per HS256 token, against 80 us through WebCrypto
  // (20-30 us of this thread and a hop to the thread pool and back), which every MQTT login paid: 14% of the CPU of
  // the connect phase of `node dist/bench/groups.js` went to WebCrypto's HMAC.
  let key: string;
  let algorithms: VerifierOptions['algorithms'];
  if (config.jwtPublicKey) {
    // Env vars often carry a PEM with literal "\n"; the key type decides the algorithm (EC: ES256, RSA: RS256), and
    // only that one is accepted, so a token signed with HS256 and the public key as its secret is refused.
    const publicKey = createPublicKey(config.jwtPublicKey.replace(/\\n/g, '\n'));
    algorithms = [publicKey.asymmetricKeyType === 'ec' ? 'ES256' : 'RS256'];
    key = publicKey.export({ format: 'pem', type: 'spki' }).toString();
  } else {
    key = hmacSecret(config);
    algorithms = ['HS256'];
  }
  const verifyJwt = createVerifier({
    key,
    algorithms,
    clockTolerance: CLOCK_TOLERANCE_SECONDS * 1000,
    ...(config.jwtRequireExp ? { requiredClaims: ['exp'] } : {}),
    ...(config.jwtIssuer ? { allowedIss: config.jwtIssuer } : {}),
    ...(config.jwtAudience ? { allowedAud: config.jwtAudience } : {}),
  });
  // A token verified once is known good until the earlier of its exp and CACHE_SECONDS from then: a REST client sends
  // the same one with every request. Least recently used first out. MQTT logins only look up: a connection sends its
  // token once, and logins (every new device, every reconnect to another node) would push the REST clients' out.
  // Not fast-jwt's own cache, which doubled the cost of a login with a new token (measured 21 us against 11 us warm).
  // Keyed by the token's SHA-256 (0.7 us), not by the token: no token is held in memory past its check, and an entry
  // takes 44 bytes of key instead of the token's 150-400.
  const verified = new Map<string, { token: VerifiedToken; until: number }>();
  return {
    async verify(token: string, { remember = true }: { remember?: boolean } = {}): Promise<VerifiedToken> {
      const now = Date.now() / 1000;
      const key = createHash('sha256').update(token).digest('base64');
      const known = verified.get(key);
      if (known && known.until > now) {
        verified.delete(key);
        verified.set(key, known);
        return known.token;
      }
      const checked = verifyToken(token, now);
      if (!remember) return checked;
      verified.delete(key);
      verified.set(key, {
        token: checked,
        until: Math.min(checked.expiresAt ?? Number.POSITIVE_INFINITY, now + CACHE_SECONDS),
      });
      if (verified.size > MAX_CACHED_TOKENS) verified.delete(verified.keys().next().value!);
      return checked;
    },
  };

  function verifyToken(token: string, now: number): VerifiedToken {
    let payload: { sub?: unknown; iat?: unknown; exp?: unknown };
    try {
      payload = verifyJwt(token);
    } catch (err) {
      throw new ChorusError('UNAUTHORIZED', `token rejected: ${(err as { code?: string }).code ?? 'invalid'}`);
    }
    if (typeof payload.sub !== 'string' || !isUserId(payload.sub)) {
      throw new ChorusError('UNAUTHORIZED', 'token subject is not a valid user id');
    }
    const iat = typeof payload.iat === 'number' ? payload.iat : undefined;
    const exp = typeof payload.exp === 'number' ? payload.exp : undefined;
    if (iat !== undefined && iat > now + CLOCK_TOLERANCE_SECONDS) {
      throw new ChorusError('UNAUTHORIZED', 'token rejected: issued in the future');
    }
    if (exp !== undefined && exp - (iat ?? now) > config.jwtMaxLifetimeSeconds) {
      throw new ChorusError('UNAUTHORIZED', `token rejected: lives longer than ${config.jwtMaxLifetimeSeconds} s`);
    }
    return exp === undefined ? { userId: payload.sub } : { userId: payload.sub, expiresAt: exp };
  }
}

/** Signs a token with the configured HS256 secret (or the development secret). Used by `chorus token` and tests. */
export async function signToken(config: ChorusConfig, userId: string, ttlSeconds: number): Promise<string> {
  if (!isUserId(userId)) throw new ChorusError('VALIDATION_FAILED', `not a valid user id: ${userId}`);
  if (config.jwtPublicKey) throw new Error('this server verifies with a public key: sign tokens with its private key');
  const sign = createSigner({
    key: hmacSecret(config),
    algorithm: 'HS256',
    sub: userId,
    expiresIn: ttlSeconds * 1000,
    ...(config.jwtIssuer ? { iss: config.jwtIssuer } : {}),
    ...(config.jwtAudience ? { aud: config.jwtAudience } : {}),
  });
  return sign({});
}

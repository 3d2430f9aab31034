import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Type } from '@sinclair/typebox';
import { signToken } from '../auth/token-verifier.js';
import { ChorusError, UserId } from '../protocol/index.js';
import type { Api, ApiDeps } from './api-deps.js';
import { errors } from './schemas.js';

/** The built web chat: dist/web, beside the compiled server or under the project when running from source. */
function webDir(): string | null {
  for (const candidate of ['../web/', '../dist/web/']) {
    const dir = fileURLToPath(new URL(candidate, import.meta.url));
    if (existsSync(`${dir}app.js`)) return dir;
  }
  return null;
}

const FILES: Record<string, string> = {
  '/': 'index.html',
  '/app.js': 'app.js',
  '/app.js.map': 'app.js.map',
  '/app.css': 'app.css',
  '/sw.js': 'sw.js',
};
const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  map: 'application/json',
  css: 'text/css; charset=utf-8',
};
/** A Host header fit to name the WebSocket origin in the policy (anything else is left out of it). */
const HOST = /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;
/** Development tokens live this long; the page asks for a new one before they expire. */
const DEV_TOKEN_SECONDS = 3600;

/**
 * The web chat at `/` (built by `npm run build` into dist/web, read once here), with a strict Content-Security-Policy:
 * only this origin's scripts, styles and connections (and https images, for attachments). In development, POST
 * /dev/token signs in any user id; in production that route does not exist (the host app hands the page a token).
 */
export async function webRoutes(app: Api, { config }: ApiDeps): Promise<void> {
  const dir = webDir();
  const files = new Map<string, Buffer>();
  if (dir)
    for (const [path, name] of Object.entries(FILES))
      if (existsSync(dir + name)) files.set(path, readFileSync(dir + name));

  for (const path of Object.keys(FILES)) {
    app.get(path, { schema: { hide: true } }, async (request, reply) => {
      const body = files.get(path);
      if (!body) throw new ChorusError('NOT_FOUND', 'the web app is not built: run npm run build');
      const host = request.headers.host && HOST.test(request.headers.host) ? request.headers.host : null;
      const sockets = host ? ` ws://${host} wss://${host}` : '';
      return reply
        .header('content-type', TYPES[FILES[path]!.split('.').pop()!]!)
        .header(
          'content-security-policy',
          `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; connect-src 'self'${sockets}; worker-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`,
        )
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .header('cache-control', 'no-cache')
        .send(body);
    });
  }

  if (config.env !== 'development' || config.jwtPublicKey) return;
  app.post(
    '/dev/token',
    {
      schema: {
        // Not part of the API (which takes bearer tokens): a development helper, left out of the OpenAPI document.
        hide: true,
        summary: 'Development only (absent when env=production): a token for any user id, for the web chat',
        body: Type.Object({ userId: UserId }, { additionalProperties: false }),
        response: { 200: Type.Object({ token: Type.String(), expiresAt: Type.Integer() }), ...errors(400) },
      },
    },
    async (request) => ({
      token: await signToken(config, request.body.userId, DEV_TOKEN_SECONDS),
      expiresAt: Math.floor(Date.now() / 1000) + DEV_TOKEN_SECONDS,
    }),
  );
}

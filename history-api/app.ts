import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { Type } from '@sinclair/typebox';
import { Ajv } from 'ajv';
import Fastify, { type FastifyError, type FastifyReply, type HTTPMethods } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { ChorusError, type ErrorBody, SendPayloadByType } from '../protocol/index.js';
import { validateSend } from '../sequencer/send-validation.js';
import { isStoreOutage } from '../sequencer/store-errors.js';
import type { Api, ApiDeps } from './api-deps.js';
import { groupRoutes } from './routes-groups.js';
import { messageRoutes } from './routes-messages.js';
import { pushRoutes } from './routes-push.js';
import { searchRoutes } from './routes-search.js';
import { webRoutes } from './routes-web.js';
import { addressKey, trustedProxies } from '../auth/client-address.js';
import { answerClientError } from './client-errors.js';
import { ErrorResponse } from './schemas.js';

/** What a 503 tells a client to wait before trying again: long enough for a Redis failover's election to end. */
const RETRY_AFTER_SECONDS = 1;

/** Maps any error thrown in a route (ours, Fastify's, a schema failure) to the one ErrorBody shape. */
function toErrorBody(err: FastifyError | ChorusError): { status: number; body: ErrorBody } {
  if (err instanceof ChorusError) return { status: err.statusCode, body: err.toBody() };
  if (err.validation) {
    const unknown = err.validation.find((v) => v.keyword === 'additionalProperties');
    const e = unknown
      ? new ChorusError('UNKNOWN_FIELD', `unknown field: ${String(unknown.params.additionalProperty)}`, {
          fields: [unknown.params.additionalProperty],
        })
      : new ChorusError(
          'VALIDATION_FAILED',
          `${err.validationContext ?? 'request'}${err.validation[0]?.instancePath ?? ''} ${err.validation[0]?.message ?? 'is invalid'}`,
          err.validation.map((v) => ({ in: err.validationContext, path: v.instancePath || '/', message: v.message })),
        );
    return { status: e.statusCode, body: e.toBody() };
  }
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return toErrorBody(new ChorusError('PAYLOAD_TOO_LARGE'));
  if (
    err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
    err instanceof SyntaxError ||
    err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
  ) {
    return toErrorBody(new ChorusError('INVALID_JSON'));
  }
  if (err.statusCode === 429) return toErrorBody(new ChorusError('RATE_LIMITED'));
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
    return { status: err.statusCode, body: new ChorusError('VALIDATION_FAILED', err.message).toBody() };
  }
  return toErrorBody(new ChorusError(isStoreOutage(err) ? 'UNAVAILABLE' : 'INTERNAL'));
}

/** Builds the HTTP API (not listening): the /v1 REST routes, OpenAPI at /docs, health at /healthz. */
export async function buildApi(deps: ApiDeps): Promise<Api> {
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: deps.config.maxBodyBytes * 6 + 4096,
    // What the router refuses before a route runs answers in the one error shape too.
    frameworkErrors: (err, _request, reply) => {
      const error = new ChorusError(err.statusCode === 414 ? 'URI_TOO_LONG' : 'VALIDATION_FAILED', err.message);
      void (reply as FastifyReply).status(error.statusCode).send(error.toBody());
    },
    clientErrorHandler: answerClientError,
    // Closing ends every connection, idle or not: a node stops when told, whatever a client left open (a browser gone
    // offline leaves its sockets open with nobody behind them).
    forceCloseConnections: true,
    // Behind a load balancer named in trustedProxies, request.ip is the client it names in X-Forwarded-For.
    ...(deps.config.trustedProxies ? { trustProxy: trustedProxies(deps.config.trustedProxies) } : {}),
  }).withTypeProvider<TypeBoxTypeProvider>() as Api;
  // Request bodies are JSON and are validated as they are: a boolean is not a user id, "1" is not a seq. Query strings
  // and path parameters arrive as text and are converted to their schema's types.
  const strict = new Ajv({ removeAdditional: false, useDefaults: true, coerceTypes: false });
  const converting = new Ajv({ removeAdditional: false, useDefaults: true, coerceTypes: 'array' });
  // A send payload is checked by send validation itself (the same as over MQTT, with its readable codes); the route
  // documents it as SendPayloadByType, built from the same message-type declarations.
  const sendPayload = (body: unknown) => {
    try {
      return { value: validateSend(body, deps.config.maxBodyBytes) };
    } catch (error) {
      return { error: error as Error };
    }
  };
  app.setValidatorCompiler(({ schema, httpPart }) =>
    schema === SendPayloadByType ? sendPayload : (httpPart === 'body' ? strict : converting).compile(schema),
  );

  app.addSchema(ErrorResponse);
  if (deps.config.corsOrigins) {
    // Browser apps on their own origin call the API with a bearer token (no cookies, so no credentials mode).
    const origins = deps.config.corsOrigins === '*' ? '*' : deps.config.corsOrigins.split(',');
    await app.register(cors, {
      origin: origins,
      methods: ['GET', 'POST', 'PUT', 'DELETE'],
      allowedHeaders: ['authorization', 'content-type'],
      maxAge: 600,
    });
  }
  await app.register(swagger, {
    openapi: {
      info: { title: 'Chorus API', version: '1', description: 'Group messaging: groups, members, history, sends.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.setErrorHandler((err: FastifyError, request, reply) => {
    const { status, body } = toErrorBody(err);
    // A bug is logged with its stack; a store that does not answer is the store's, and its message says enough.
    if (status === 500) request.log.error({ err }, 'request failed');
    else if (status >= 500) request.log.warn({ code: body.code, err: err.message }, 'request failed');
    // A passing refusal says when to try again (RFC 9110 §10.2.3); a draining node will not be back soon.
    if (status === 503 && body.code !== 'DRAINING') void reply.header('retry-after', RETRY_AFTER_SECONDS);
    return reply.status(status).send(body);
  });
  app.setNotFoundHandler((_request, reply) => reply.status(404).send(new ChorusError('NOT_FOUND').toBody()));
  // A route that does not exist says so before its body is read: a malformed body there is no INVALID_JSON.
  app.addHook('onRequest', async (request, reply) => {
    if (request.is404) return reply.status(404).send(new ChorusError('NOT_FOUND').toBody());
  });

  // The methods each /v1 path takes, so that the others answer 405 with Allow (RFC 9110 §15.5.6) rather than 404.
  const methodsOf = new Map<string, Set<string>>();
  app.addHook('onRoute', (route) => {
    if (!route.url.startsWith('/v1/')) return;
    const methods = methodsOf.get(route.url) ?? new Set<string>();
    for (const method of [route.method].flat()) methods.add(method);
    methodsOf.set(route.url, methods);
  });

  // The router refuses a path parameter longer than its maxParamLength with 414 before any route runs (see
  // frameworkErrors): every route that has one documents that answer.
  app.addHook('onRoute', (route) => {
    const response = route.schema?.response as Record<string, unknown> | undefined;
    if (response && route.url.includes('/:')) response['414'] ??= Type.Ref(ErrorResponse);
  });

  app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { hide: true } }, async () => {
    if (!deps.isReady()) throw new ChorusError('DRAINING');
    return { status: 'ready' };
  });
  await app.register(webRoutes, deps);
  const registry = deps.metrics;
  if (registry) {
    app.get('/metrics', { schema: { hide: true } }, async (_request, reply) =>
      reply.type(registry.contentType).send(await registry.metrics()),
    );
  }

  await app.register(
    async (v1) => {
      v1.decorateRequest('userId', '');
      // Per client IP, failures only: a request with a valid token is served whatever else came from its address; one
      // whose authentication fails from an address over authFailuresPerMinute is answered 429 after a wait.
      v1.addHook('onRequest', async (request) => {
        const header = request.headers.authorization;
        const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
        try {
          if (!match) throw new ChorusError('UNAUTHORIZED', 'send Authorization: Bearer <token>');
          request.userId = (await deps.verifier.verify(match[1]!)).userId;
        } catch (err) {
          if (await deps.authThrottle.failure(addressKey(request.ip) ?? request.ip))
            throw new ChorusError('RATE_LIMITED', 'too many failed authentications from this address; retry later');
          throw err;
        }
      });
      // After authentication, per caller (so a user's budget follows them across IPs); in memory, per node.
      await v1.register(rateLimit, {
        max: deps.config.rateLimitPerMinute,
        timeWindow: 60_000,
        hook: 'preHandler',
        keyGenerator: (request) => request.userId || request.ip,
        errorResponseBuilder: (_request, context) =>
          Object.assign(
            new ChorusError('RATE_LIMITED', `at most ${context.max} requests per minute; retry after ${context.after}`),
            { statusCode: 429 },
          ),
      });
      await v1.register(groupRoutes, deps);
      await v1.register(messageRoutes, deps);
      await v1.register(pushRoutes, deps);
      await v1.register(searchRoutes, deps);
    },
    { prefix: '/v1' },
  );
  // OPTIONS is left to CORS preflight when browser origins are configured.
  const others = app.supportedMethods.filter(
    (method) => method !== 'HEAD' && !(method === 'OPTIONS' && deps.config.corsOrigins),
  );
  for (const [url, methods] of methodsOf) {
    const missing = others.filter((method) => !methods.has(method));
    const allow = [...methods].join(', ');
    if (missing.length === 0) continue;
    // Answered in onRequest, before a body is looked at: a method that takes one (QUERY) is refused for the method.
    const notAllowed = async (_request: unknown, reply: FastifyReply) =>
      reply.status(405).header('allow', allow).send(new ChorusError('METHOD_NOT_ALLOWED').toBody());
    app.route({
      method: missing as HTTPMethods[],
      url,
      schema: { hide: true },
      onRequest: notAllowed,
      handler: notAllowed,
    });
  }
  return app;
}

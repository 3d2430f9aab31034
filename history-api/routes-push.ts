import { Type } from '@sinclair/typebox';
import { ChorusError, PushMode } from '../protocol/index.js';
import { checkPushEndpoint, checkPushKeys, systemResolve } from '../push/endpoint-policy.js';
import type { Api, ApiDeps } from './api-deps.js';
import { DEFAULT_PAGE, GroupParams, PageQuery, errors } from './schemas.js';

/** The keys as RFC 8291 has them, in base64url: a P-256 public key as an uncompressed point, and a 16-byte secret. */
const PushKeys = Type.Object(
  {
    p256dh: Type.String({
      pattern: '^B[A-Za-z0-9_-]{86}=?$',
      description:
        'an uncompressed P-256 point (65 bytes, the first 0x04); one that is not on the curve is refused (400)',
    }),
    auth: Type.String({ pattern: '^[A-Za-z0-9_-]{22}(==)?$', description: '16 bytes' }),
  },
  { additionalProperties: false },
);

/** Web Push: the VAPID key, a user's push subscriptions, per-group preferences; and group presence. */
export async function pushRoutes(app: Api, { config, groups, push, presence }: ApiDeps): Promise<void> {
  app.get(
    '/push/vapid-public-key',
    {
      schema: {
        summary: 'The VAPID public key to pass to PushManager.subscribe as applicationServerKey',
        response: { 200: Type.Object({ publicKey: Type.String() }), ...errors() },
      },
    },
    async () => ({ publicKey: push.vapidPublicKey }),
  );

  app.post(
    '/push/subscriptions',
    {
      schema: {
        summary: "Store this device's PushSubscription (as PushSubscription.toJSON() gives it) for the caller",
        body: Type.Object(
          {
            endpoint: Type.String({ minLength: 1, maxLength: 2048 }),
            expirationTime: Type.Optional(Type.Union([Type.Null(), Type.Number()])),
            keys: PushKeys,
            deviceId: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_.:-]+$' })),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({ endpoint: Type.String(), deviceId: Type.Optional(Type.String()) }),
          ...errors(400, 401, 409),
        },
      },
    },
    async (request, reply) => {
      const { endpoint, keys, deviceId } = request.body;
      checkPushKeys(keys.p256dh, keys.auth);
      await checkPushEndpoint(endpoint, { allowLoopback: config.pushAllowLoopback, resolve: systemResolve });
      const saved = await push.store.saveSubscription(
        {
          userId: request.userId,
          endpoint,
          p256dh: keys.p256dh,
          auth: keys.auth,
          ...(deviceId ? { deviceId } : {}),
          createdAtMs: Date.now(),
        },
        config.maxPushSubscriptionsPerUser,
      );
      if (saved === 'limit') throw new ChorusError('TOO_MANY_SUBSCRIPTIONS');
      return reply.status(201).send(deviceId ? { endpoint, deviceId } : { endpoint });
    },
  );

  app.get(
    '/push/subscriptions',
    {
      schema: {
        summary: "The caller's push subscriptions (endpoints only; keys are never returned)",
        response: {
          200: Type.Object({
            subscriptions: Type.Array(
              Type.Object({
                endpoint: Type.String(),
                deviceId: Type.Optional(Type.String()),
                createdAt: Type.String(),
              }),
            ),
          }),
          ...errors(401),
        },
      },
    },
    async (request) => ({
      subscriptions: (await push.store.listSubscriptions(request.userId)).map((s) => ({
        endpoint: s.endpoint,
        ...(s.deviceId ? { deviceId: s.deviceId } : {}),
        createdAt: new Date(s.createdAtMs).toISOString(),
      })),
    }),
  );

  app.delete(
    '/push/subscriptions',
    {
      schema: {
        summary: 'Remove one of the caller’s push subscriptions',
        body: Type.Object(
          { endpoint: Type.String({ minLength: 1, maxLength: 2048 }) },
          { additionalProperties: false },
        ),
        response: { 204: Type.Null(), ...errors(400, 401, 404) },
      },
    },
    async (request, reply) => {
      if (!(await push.store.removeSubscription(request.userId, request.body.endpoint)))
        throw new ChorusError('SUBSCRIPTION_NOT_FOUND');
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/groups/:groupId/push-preference',
    {
      schema: {
        summary: 'My push preference for a group',
        params: GroupParams,
        response: { 200: Type.Object({ mode: PushMode }), ...errors(401, 403, 404) },
      },
    },
    async (request) => {
      await groups.requireMember(request.params.groupId, request.userId);
      return { mode: await push.store.getMode(request.userId, request.params.groupId) };
    },
  );

  app.put(
    '/groups/:groupId/push-preference',
    {
      schema: {
        summary: 'Set my push preference for a group: all, mentions (only), or muted',
        params: GroupParams,
        body: Type.Object({ mode: PushMode }, { additionalProperties: false }),
        response: { 200: Type.Object({ mode: PushMode }), ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      await groups.requireMember(request.params.groupId, request.userId);
      await push.store.setMode(request.userId, request.params.groupId, request.body.mode);
      return { mode: request.body.mode };
    },
  );

  app.get(
    '/groups/:groupId/presence',
    {
      schema: {
        summary:
          'Which members are online (a user is online while any of their MQTT clients is connected, on any node)',
        params: GroupParams,
        querystring: PageQuery,
        response: {
          200: Type.Object({
            members: Type.Array(Type.Object({ userId: Type.String(), online: Type.Boolean() })),
            next: Type.Optional(Type.String()),
          }),
          ...errors(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const { after = '', limit = DEFAULT_PAGE } = request.query;
      const page = await groups.listMembers(request.params.groupId, request.userId, after, limit);
      const online = await presence.online(page.map((m) => m.userId));
      const members = page.map((m) => ({ userId: m.userId, online: online.has(m.userId) }));
      return page.length === limit ? { members, next: page.at(-1)!.userId } : { members };
    },
  );
}

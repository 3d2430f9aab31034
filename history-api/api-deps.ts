import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { TokenVerifier } from '../auth/token-verifier.js';
import type { FailedAuthThrottle } from '../auth/failed-auth-throttle.js';
import type { Presence } from '../broker/presence.js';
import type { PushStore } from '../push/push-store.js';
import type { ChorusConfig } from '../config/config.js';
import type { Groups } from '../groups/groups.js';
import type { ReadReceipts } from '../groups/read-receipts.js';
import type { MessageLog } from '../sequencer/message-log.js';
import type { Search } from '../search/search.js';
import type { SendPath } from '../sequencer/sequencer.js';

/** What the REST API is built from, handed to every route plugin. */
export interface ApiDeps {
  config: ChorusConfig;
  verifier: TokenVerifier;
  /** Failed authentications per client address, shared with the broker. */
  authThrottle: FailedAuthThrottle;
  /** Moves read pointers and tells the other members. */
  readReceipts: ReadReceipts;
  groups: Groups;
  /** Notes what a history read handed a member (their delivered watermark). */
  deliveredMarks?: { note(groupId: string, userId: string, seq: number): void };
  log: MessageLog;
  sends: SendPath;
  /** Finds messages by their text. */
  search: Search;
  presence: Presence;
  push: { store: PushStore; vapidPublicKey: string };
  /** Served at /metrics when given. */
  metrics?: Registry;
  /** False once the node drains before shutting down: /readyz turns 503 so that load balancers send no one new. */
  isReady: () => boolean;
  logger: Logger;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated caller, set by the bearer-token hook of the /v1 routes. */
    userId: string;
  }
}

export type Api = FastifyInstance<any, any, any, Logger, TypeBoxTypeProvider>;

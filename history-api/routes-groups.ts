import { Type } from '@sinclair/typebox';
import type { GroupRecord, MemberRecord } from '../groups/group-store.js';
import { UserId } from '../protocol/index.js';
import type { Api, ApiDeps } from './api-deps.js';
import {
  AvatarUrl,
  DEFAULT_PAGE,
  GroupDescription,
  GroupName,
  GroupParams,
  GroupView,
  HistoryVisibility,
  MemberParams,
  MemberView,
  PageQuery,
  RetentionDays,
  Role,
  errors,
} from './schemas.js';

const iso = (ms: number) => new Date(ms).toISOString();
/** Users added by one request (group creation's `members` and the batch route): bounds one request's writes. */
const MEMBERS_PER_BATCH = 1000;

export const memberView = (m: MemberRecord): MemberView => ({
  userId: m.userId,
  role: m.role,
  joinedAt: iso(m.joinedAtMs),
  readSeq: m.readSeq,
});

/** Groups and their members: create, read, change, delete, list mine, add/remove members, promote/demote admins. */
export async function groupRoutes(app: Api, { groups, log, config }: ApiDeps): Promise<void> {
  const view = async (group: GroupRecord, member: MemberRecord): Promise<GroupView> => {
    const lastSeq = await log.lastSeq(group.id);
    const readSeq = Math.min(member.readSeq, lastSeq);
    return {
      id: group.id,
      name: group.name,
      ...(group.description === undefined ? {} : { description: group.description }),
      ...(group.avatarUrl === undefined ? {} : { avatarUrl: group.avatarUrl }),
      historyVisibility: group.historyVisibility,
      retentionDays: group.retentionDays ?? config.retentionDays,
      createdBy: group.createdBy,
      createdAt: iso(group.createdAtMs),
      role: member.role,
      lastSeq,
      readSeq,
      unread: lastSeq - readSeq,
    };
  };

  app.post(
    '/groups',
    {
      schema: {
        summary: 'Create a group; the caller becomes its admin',
        body: Type.Object(
          {
            name: GroupName,
            members: Type.Optional(Type.Array(UserId, { maxItems: MEMBERS_PER_BATCH, uniqueItems: true })),
            description: Type.Optional(GroupDescription),
            avatarUrl: Type.Optional(AvatarUrl),
            historyVisibility: Type.Optional(HistoryVisibility),
            retentionDays: Type.Optional(RetentionDays),
          },
          { additionalProperties: false },
        ),
        response: { 201: GroupView, ...errors(400, 401, 409) },
      },
    },
    async (request, reply) => {
      const group = await groups.create(request.userId, request.body);
      const member = await groups.requireMember(group.id, request.userId);
      return reply.status(201).send(await view(group, member));
    },
  );

  app.get(
    '/groups',
    {
      schema: {
        summary: 'List my groups with lastSeq, readSeq and unread count',
        querystring: PageQuery,
        response: {
          200: Type.Object({ groups: Type.Array(GroupView), next: Type.Optional(Type.String()) }),
          ...errors(400, 401),
        },
      },
    },
    async (request) => {
      const { after = '', limit = DEFAULT_PAGE } = request.query;
      const memberships = await groups.listMemberships(request.userId, after, limit);
      const views = await Promise.all(memberships.map(async (m) => view(await groups.getGroup(m.groupId), m)));
      return memberships.length === limit ? { groups: views, next: memberships.at(-1)!.groupId } : { groups: views };
    },
  );

  app.get(
    '/groups/:groupId',
    {
      schema: {
        summary: 'Get a group I am a member of',
        params: GroupParams,
        response: { 200: GroupView, ...errors(401, 403, 404) },
      },
    },
    async (request) => {
      const member = await groups.requireMember(request.params.groupId, request.userId);
      return view(await groups.getGroup(request.params.groupId), member);
    },
  );

  app.patch(
    '/groups/:groupId',
    {
      schema: {
        summary:
          "Change a group's name, description, avatar, history visibility or retention (admins only); every member hears group-updated",
        params: GroupParams,
        body: Type.Object(
          {
            name: Type.Optional(GroupName),
            description: Type.Optional(Type.Union([GroupDescription, Type.Null()])),
            avatarUrl: Type.Optional(Type.Union([AvatarUrl, Type.Null()])),
            historyVisibility: Type.Optional(HistoryVisibility),
            retentionDays: Type.Optional(Type.Union([RetentionDays, Type.Null()])),
          },
          {
            additionalProperties: false,
            minProperties: 1,
            description: "null clears description or avatarUrl, or sets retentionDays back to the server's",
          },
        ),
        response: { 200: GroupView, ...errors(400, 401, 403, 404) },
      },
    },
    async (request) => {
      const group = await groups.update(request.params.groupId, request.userId, request.body);
      return view(group, await groups.requireMember(group.id, request.userId));
    },
  );

  app.delete(
    '/groups/:groupId',
    {
      schema: {
        summary:
          'Delete a group (admins only): its members hear group-deleted, their subscriptions end at once, its messages and memberships are removed',
        params: GroupParams,
        response: { 204: Type.Null(), ...errors(401, 403, 404) },
      },
    },
    async (request, reply) => {
      await groups.delete(request.params.groupId, request.userId);
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/groups/:groupId/members',
    {
      schema: {
        summary: 'List members, ordered by user id',
        params: GroupParams,
        querystring: PageQuery,
        response: {
          200: Type.Object({
            members: Type.Array(MemberView),
            count: Type.Integer(),
            next: Type.Optional(Type.String()),
          }),
          ...errors(400, 401, 403, 404),
        },
      },
    },
    async (request) => {
      const { after = '', limit = DEFAULT_PAGE } = request.query;
      const page = await groups.listMembers(request.params.groupId, request.userId, after, limit);
      const count = await groups.countMembers(request.params.groupId);
      const members = page.map(memberView);
      return page.length === limit ? { members, count, next: page.at(-1)!.userId } : { members, count };
    },
  );

  app.post(
    '/groups/:groupId/members',
    {
      schema: {
        summary: 'Add a member (admins only); an online member is subscribed at once',
        params: GroupParams,
        body: Type.Object({ userId: UserId, role: Type.Optional(Role) }, { additionalProperties: false }),
        response: { 201: MemberView, ...errors(400, 401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      const { userId, role = 'member' } = request.body;
      const member = await groups.addMember(request.params.groupId, request.userId, userId, role);
      return reply.status(201).send(memberView(member));
    },
  );

  app.post(
    '/groups/:groupId/members/batch',
    {
      schema: {
        summary: 'Add up to 1,000 members at once (admins only); those already members are left as they are',
        params: GroupParams,
        body: Type.Object(
          {
            userIds: Type.Array(UserId, { minItems: 1, maxItems: MEMBERS_PER_BATCH, uniqueItems: true }),
            role: Type.Optional(Role),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object(
            { added: Type.Array(Type.String()), alreadyMembers: Type.Array(Type.String()) },
            { description: 'in the order asked' },
          ),
          ...errors(400, 401, 403, 404, 409),
        },
      },
    },
    async (request) =>
      groups.addMembers(request.params.groupId, request.userId, request.body.userIds, request.body.role ?? 'member'),
  );

  app.delete(
    '/groups/:groupId/members/:userId',
    {
      schema: {
        summary: 'Remove a member (admins), or leave (yourself); live subscriptions end at once',
        params: MemberParams,
        response: { 204: Type.Null(), ...errors(401, 403, 404, 409) },
      },
    },
    async (request, reply) => {
      await groups.removeMember(request.params.groupId, request.userId, request.params.userId);
      return reply.status(204).send(null);
    },
  );

  app.put(
    '/groups/:groupId/members/:userId/role',
    {
      schema: {
        summary: 'Promote to admin or demote to member (admins only)',
        params: MemberParams,
        body: Type.Object({ role: Role }, { additionalProperties: false }),
        response: { 200: MemberView, ...errors(400, 401, 403, 404, 409) },
      },
    },
    async (request) =>
      memberView(
        await groups.setRole(request.params.groupId, request.userId, request.params.userId, request.body.role),
      ),
  );
}

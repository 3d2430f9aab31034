import { describe, expect, it } from 'vitest';
import { CONTENT_FIELDS, type ContentField, EVENT_TYPES, MESSAGE_TYPES, messageTypeOf } from '../protocol/index.js';
import { validateSend } from '../sequencer/send-validation.js';

/** A valid value for each content field, so that a send carries exactly the fields a test gives it. */
const SAMPLE: Record<ContentField, unknown> = {
  body: 'hello',
  replyToSeq: 1,
  mentions: ['bob'],
  mentionEveryone: true,
  attachments: [{ url: 'https://files.example/a.png', mimeType: 'image/png', sizeBytes: 10 }],
  targetSeq: 1,
  emoji: '👍',
  remove: true,
};

const send = (type: string, fields: readonly ContentField[]) => ({
  clientMsgId: 'c1',
  type,
  ...Object.fromEntries(fields.map((f) => [f, SAMPLE[f]])),
});

describe('message types, declared once (protocol/message-types.ts)', () => {
  it('names edit, delete and reaction as the events; any other type is the app’s own and behaves as text', () => {
    expect([...EVENT_TYPES].sort()).toEqual(['delete', 'edit', 'reaction']);
    expect(messageTypeOf('poll.v1')).toBe(MESSAGE_TYPES.text);
    expect(messageTypeOf('constructor')).toBe(MESSAGE_TYPES.text); // not Object.prototype's
  });

  for (const [type, declared] of Object.entries(MESSAGE_TYPES)) {
    const minimal = [...declared.required, ...(declared.oneOf ? [declared.oneOf[0]!] : [])];
    it(`${type}: the send validator takes exactly the fields its declaration gives`, () => {
      expect(() => validateSend(send(type, minimal), 1000)).not.toThrow();
      expect(() => validateSend(send(type, [...minimal, ...declared.optional]), 1000)).not.toThrow();
      for (const field of declared.required) {
        expect(
          () =>
            validateSend(
              send(
                type,
                minimal.filter((f) => f !== field),
              ),
              1000,
            ),
          `without ${field}`,
        ).toThrow(expect.objectContaining({ code: 'INVALID_MESSAGE', message: `a ${type} message needs ${field}` }));
      }
      for (const field of CONTENT_FIELDS.filter(
        (f) => !declared.required.includes(f) && !declared.optional.includes(f),
      )) {
        expect(() => validateSend(send(type, [...minimal, field]), 1000), `with ${field}`).toThrow(
          expect.objectContaining({ code: 'INVALID_MESSAGE', message: `a ${type} message takes no ${field}` }),
        );
      }
      if (declared.oneOf)
        expect(() => validateSend(send(type, declared.required), 1000)).toThrow(
          expect.objectContaining({ code: 'INVALID_MESSAGE' }),
        );
    });
  }
});

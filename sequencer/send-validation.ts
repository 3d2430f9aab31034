import { TypeCompiler } from '@sinclair/typebox/compiler';
import { CONTENT_FIELDS, ChorusError, SendPayload, messageTypeOf } from '../protocol/index.js';

const checkSend = TypeCompiler.Compile(SendPayload);
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
/** In a `u` pattern a surrogate pair is one code point: only a surrogate on its own matches. */
const LONE_SURROGATE = /\p{Surrogate}/u;

/**
 * JSON escapes can make a body up to six times longer on the wire than in UTF-8; a payload past this bound is refused
 * before it is parsed, so nobody makes the broker parse megabytes to learn that the body is too large.
 */
const maxEncodedBytes = (maxBodyBytes: number): number => maxBodyBytes * 6 + 4096;

// The check and its error report recurse into what they are given: a payload nested thousands deep overflows the stack.
const tooDeep = () => new ChorusError('INVALID_MESSAGE', 'the payload is nested too deeply');

function isSendPayload(value: unknown): value is SendPayload {
  try {
    return checkSend.Check(value);
  } catch {
    throw tooDeep();
  }
}

function firstErrors(value: unknown): { path: string; message: string }[] {
  const errors: { path: string; message: string }[] = [];
  try {
    for (const error of checkSend.Errors(value)) {
      errors.push({ path: error.path, message: error.message });
      if (errors.length === 5) break;
    }
  } catch {
    throw tooDeep();
  }
  return errors;
}

/** Checks a parsed send payload against the schema and the body size limit; throws a ChorusError with its code. */
export function validateSend(value: unknown, maxBodyBytes: number): SendPayload {
  if (!isSendPayload(value)) {
    const errors = firstErrors(value);
    const unknown =
      typeof value === 'object' && value !== null && !Array.isArray(value)
        ? Object.keys(value).filter((key) => !(key in SendPayload.properties))
        : [];
    if (unknown.length > 0)
      throw new ChorusError('UNKNOWN_FIELD', `unknown field(s): ${unknown.join(', ')}`, { fields: unknown });
    throw new ChorusError(
      'INVALID_MESSAGE',
      undefined,
      errors.map((e) => ({ path: e.path || '/', message: e.message })),
    );
  }
  checkFieldsOfType(value);
  const bodyBytes = value.body === undefined ? 0 : Buffer.byteLength(value.body, 'utf8');
  if (bodyBytes > maxBodyBytes) {
    throw new ChorusError('PAYLOAD_TOO_LARGE', `body is ${bodyBytes} bytes; at most ${maxBodyBytes} are allowed`, {
      limit: maxBodyBytes,
    });
  }
  return value;
}

/** Which fields each type takes (protocol/message-types.ts); the schema alone cannot say it with readable errors. */
function checkFieldsOfType(send: SendPayload): void {
  const type = send.type ?? 'text';
  const { required, optional, oneOf } = messageTypeOf(type);
  const problems: { path: string; message: string }[] = [];
  for (const field of CONTENT_FIELDS) {
    const present = send[field] !== undefined;
    if (!present && required.includes(field))
      problems.push({ path: `/${field}`, message: `a ${type} message needs ${field}` });
    if (present && !required.includes(field) && !optional.includes(field))
      problems.push({ path: `/${field}`, message: `a ${type} message takes no ${field}` });
  }
  if (oneOf && !oneOf.some((field) => send[field] !== undefined))
    problems.push({ path: `/${oneOf[0]}`, message: `a message needs ${oneOf.join(' or ')}` });
  // A lone surrogate (a JSON escape such as \ud800) is no text: no client's UTF-8 decoder can take it.
  for (const [path, text] of freeText(send)) {
    if (LONE_SURROGATE.test(text)) problems.push({ path, message: 'must be well-formed Unicode (no lone surrogates)' });
  }
  send.attachments?.forEach((attachment, i) => {
    let url: URL | null = null;
    try {
      url = new URL(attachment.url);
    } catch {}
    // Clients fetch these: only https, and never credentials in a URL that every member sees.
    if (url?.protocol !== 'https:' || url.username !== '' || url.password !== '') {
      problems.push({ path: `/attachments/${i}/url`, message: 'must be an https URL without user or password' });
    }
  });
  if (problems.length > 0) throw new ChorusError('INVALID_MESSAGE', problems[0]!.message, problems);
}

/** Parses the raw payload of an MQTT publish to a group topic; validateSend (in the sequencer) checks it. */
export function parseSendBytes(raw: Buffer, maxBodyBytes: number): unknown {
  if (raw.length > maxEncodedBytes(maxBodyBytes)) {
    throw new ChorusError('PAYLOAD_TOO_LARGE', `payload is ${raw.length} bytes`, { limit: maxBodyBytes });
  }
  let text: string;
  try {
    text = strictUtf8.decode(raw);
  } catch {
    // A replacement character in place of the bad bytes would be a message nobody sent.
    throw new ChorusError('INVALID_MESSAGE', 'the payload is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new ChorusError('INVALID_JSON');
  }
}

/** The send's fields of free text, by path: the others are held to patterns of ASCII or to numbers. */
function* freeText(send: SendPayload): Generator<[string, string]> {
  if (send.body !== undefined) yield ['/body', send.body];
  if (send.emoji !== undefined) yield ['/emoji', send.emoji];
  for (const [i, attachment] of (send.attachments ?? []).entries()) {
    yield [`/attachments/${i}/url`, attachment.url];
    if (attachment.name !== undefined) yield [`/attachments/${i}/name`, attachment.name];
  }
}

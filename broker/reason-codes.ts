import type { ErrorCode } from '../protocol/index.js';

/** The MQTT 5 reason codes Chorus sends (MQTT 5.0 §2.4, table 2-6). */
export const ReasonCode = {
  IMPLEMENTATION_SPECIFIC_ERROR: 0x83,
  CLIENT_IDENTIFIER_NOT_VALID: 0x85,
  BAD_USER_NAME_OR_PASSWORD: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_UNAVAILABLE: 0x88,
  SERVER_BUSY: 0x89,
  SERVER_SHUTTING_DOWN: 0x8b,
  QUOTA_EXCEEDED: 0x97,
  PAYLOAD_FORMAT_INVALID: 0x99,
  QOS_NOT_SUPPORTED: 0x9b,
} as const;

/**
 * The PUBACK reason code of a refused publish, by Chorus error code [MQTT-3.4.2-1]: not allowed (0x87), a payload
 * Chorus cannot read (0x99), over a rate (0x97); anything else is 0x83, a body over maxBodyBytes included: 0x95
 * (packet too large) is a DISCONNECT code, not one of a PUBACK's (MQTT 5.0 table 3-4), and MQTT.js's parser takes a
 * PUBACK carrying it for a protocol error. The Chorus code itself travels beside it, as the user property `code`.
 */
export function pubackReasonCode(code: ErrorCode): number {
  switch (code) {
    case 'NOT_A_MEMBER':
    case 'TOPIC_NOT_ALLOWED':
    case 'NOT_ADMIN':
    case 'NOT_SENDER':
    case 'FORBIDDEN':
      return ReasonCode.NOT_AUTHORIZED;
    case 'INVALID_JSON':
    case 'INVALID_MESSAGE':
    case 'UNKNOWN_FIELD':
    case 'VALIDATION_FAILED':
      return ReasonCode.PAYLOAD_FORMAT_INVALID;
    case 'RATE_LIMITED':
      return ReasonCode.QUOTA_EXCEEDED;
    default:
      return ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR;
  }
}

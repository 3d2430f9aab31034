import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { ChorusError, type ErrorCode } from '../protocol/index.js';

const byNodeCode: Record<string, ErrorCode> = {
  ERR_HTTP_REQUEST_TIMEOUT: 'REQUEST_TIMEOUT',
  HPE_HEADER_OVERFLOW: 'HEADERS_TOO_LARGE',
};

/**
 * Answers a request that Node's HTTP parser refused before any route saw it (headers too large, a timeout, bytes that
 * are not HTTP) with the same error body as every other answer, then closes the connection.
 */
export function answerClientError(err: NodeJS.ErrnoException & { rawPacket?: unknown }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed || !socket.writable) return;
  // Headers past the limit are 431; a request line past it (its URI: a query string of 100 KB, say) is 414.
  const error =
    err.code === 'HPE_HEADER_OVERFLOW' && requestLineTooLong(err.rawPacket)
      ? new ChorusError('URI_TOO_LONG', 'the request URI is longer than allowed')
      : new ChorusError(byNodeCode[err.code ?? ''] ?? 'BAD_REQUEST');
  const body = JSON.stringify(error.toBody());
  socket.end(
    `HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** Whether what the parser had read when the headers overflowed ends before the request line did. */
function requestLineTooLong(raw: unknown): boolean {
  return Buffer.isBuffer(raw) && raw.indexOf('\r\n') === -1;
}

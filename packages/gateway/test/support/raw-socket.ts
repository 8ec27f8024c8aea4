/**
 * A raw HTTP/1.1 exchange over one TCP connection, for tests where the bytes and their arrival matter: each
 * part is its own write, and `beforeNext` can hold the next part back until the server has taken the
 * previous one (a condition, not a sleep).
 */
import { connect, type Socket } from 'node:net';
import { waitFor } from './wait.js';

export interface RawExchange {
  /** Everything the server sent, as Latin-1. */
  readonly text: string;
  readonly head: string;
  readonly body: string;
  /** Whether the server closed the connection. */
  readonly closed: boolean;
  readonly socket: Socket;
}

export async function rawExchange(
  port: number,
  parts: readonly (string | Buffer)[],
  options: {
    /** Resolves the exchange before the connection closes, once this holds for what arrived. */
    readonly done?: (text: string) => boolean;
    /** Awaited between two parts. */
    readonly beforeNext?: (index: number) => Promise<void>;
  } = {},
): Promise<RawExchange> {
  const socket = connect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  let text = '';
  let closed = false;
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => {
    text += chunk;
  });
  socket.on('close', () => {
    closed = true;
  });
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  for (const [index, part] of parts.entries()) {
    if (index > 0) await options.beforeNext?.(index);
    await new Promise<void>((resolve) => socket.write(part, () => resolve()));
  }
  const done = options.done ?? (() => false);
  await waitFor(() => closed || done(text), { what: 'the raw answer' });
  const at = text.indexOf('\r\n\r\n');
  return { text, head: text.slice(0, at), body: text.slice(at + 4), closed, socket };
}

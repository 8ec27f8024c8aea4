/**
 * Writes to a socket within one turn of the event loop leave in one syscall: the first write of a turn
 * corks the socket, and one shared callback at the end of the turn uncorks every socket written to. A
 * connection that gets five events in a turn (a fan-out batch, a Redis reply carrying several messages)
 * makes one writev, not five writes; and there is one deferred callback per turn for the whole node,
 * where ServerResponse's chunked writes schedule one per connection.
 */
import type { Socket } from 'node:net';

const corked: Socket[] = [];
let flushScheduled = false;

/** Corks `socket` until the end of the current turn (no-op if it is corked already). */
export function corkForThisTurn(socket: Socket): void {
  if (socket.writableCorked > 0) return;
  socket.cork();
  corked.push(socket);
  if (!flushScheduled) {
    flushScheduled = true;
    process.nextTick(uncorkAll);
  }
}

function uncorkAll(): void {
  flushScheduled = false;
  // Sockets corked while uncorking (a write from a 'drain' handler) are flushed in this same pass.
  for (let index = 0; index < corked.length; index++) (corked[index] as Socket).uncork();
  corked.length = 0;
}

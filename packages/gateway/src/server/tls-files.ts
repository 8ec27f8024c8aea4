/**
 * The node's own TLS certificate and key (TLS_CERT / TLS_KEY, PEM files): read, checked as a pair and for
 * their validity dates, so a wrong file fails at boot (or a reload is refused) with a message that says
 * which and why, instead of a handshake error in every browser.
 */

import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';

export interface TlsFiles {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** The leaf certificate's subject and expiry, for the log. */
  readonly subject: string;
  readonly validTo: Date;
}

export class TlsFilesError extends Error {
  override readonly name = 'TlsFilesError';
}

export function loadTlsFiles(certPath: string, keyPath: string, now = Date.now()): TlsFiles {
  const cert = readPem(certPath, 'TLS_CERT');
  const key = readPem(keyPath, 'TLS_KEY');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (error) {
    throw new TlsFilesError(`TLS_CERT ${certPath} holds no readable PEM certificate (${(error as Error).message})`);
  }
  const validFrom = new Date(leaf.validFrom);
  const validTo = new Date(leaf.validTo);
  if (validTo.getTime() <= now)
    throw new TlsFilesError(`TLS_CERT ${certPath} expired on ${validTo.toISOString()} (subject ${leaf.subject})`);
  if (validFrom.getTime() > now)
    throw new TlsFilesError(`TLS_CERT ${certPath} is not valid before ${validFrom.toISOString()}`);
  try {
    createSecureContext({ cert, key });
  } catch (error) {
    const reason = (error as Error).message;
    throw new TlsFilesError(
      /mismatch/i.test(reason)
        ? `TLS_KEY ${keyPath} is not the private key of the certificate in TLS_CERT ${certPath}`
        : `TLS_CERT ${certPath} / TLS_KEY ${keyPath} cannot be used: ${reason}`,
    );
  }
  return { cert, key, subject: leaf.subject.replaceAll('\n', ', '), validTo };
}

function readPem(path: string, setting: string): Buffer {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw new TlsFilesError(`${setting} ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? error})`);
  }
  if (!bytes.includes('-----BEGIN ')) throw new TlsFilesError(`${setting} ${path} is not a PEM file`);
  return bytes;
}

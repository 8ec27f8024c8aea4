/**
 * A self-signed development certificate for localhost (127.0.0.1, ::1), so HTTPS and HTTP/2 can be tried
 * without a CA: `pnpm cluster` and compose put it on their TLS front end when no certificate is given.
 * Browsers warn about it (it is trusted by nobody); never use it in production.
 *
 * As a command: `node dist/server/dev-certificate.js [--shareable] <dir>` writes dev-cert.pem, dev-key.pem
 * and dev.pem (both, the form HAProxy's `crt` wants) into <dir>, keeping a pair that is still valid for a
 * day. The key files are readable by their owner only, unless --shareable (compose: HAProxy runs as
 * another user than the one writing the volume).
 */

import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { generate } from 'selfsigned';

export interface CertificateFiles {
  readonly certPath: string;
  readonly keyPath: string;
  /** Certificate and key in one file (HAProxy `crt`). */
  readonly combinedPath: string;
}

const DAY_MS = 24 * 3_600_000;
const VALID_DAYS = 30;

export interface CertificateOptions {
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  readonly commonName?: string;
}

/** A fresh self-signed EC P-256 certificate and key (PEM) for localhost. */
export async function createDevCertificate(options: CertificateOptions = {}): Promise<{ cert: string; key: string }> {
  const notBefore = options.notBefore ?? new Date(Date.now() - 60_000);
  const pems = await generate([{ name: 'commonName', value: options.commonName ?? 'localhost' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: notBefore,
    notAfterDate: options.notAfter ?? new Date(notBefore.getTime() + VALID_DAYS * DAY_MS),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/** Writes a development certificate into `dir`, or keeps the one there while it is valid for another day. */
export async function ensureDevCertificate(
  dir: string,
  options: { readonly shareable?: boolean } = {},
): Promise<CertificateFiles> {
  mkdirSync(dir, { recursive: true });
  const files = {
    certPath: join(dir, 'dev-cert.pem'),
    keyPath: join(dir, 'dev-key.pem'),
    combinedPath: join(dir, 'dev.pem'),
  };
  if (stillValid(files)) return files;
  const { cert, key } = await createDevCertificate();
  const mode = options.shareable ? 0o644 : 0o600;
  writeFileSync(files.keyPath, key, { mode });
  writeFileSync(files.certPath, cert);
  writeFileSync(files.combinedPath, `${cert.trim()}\n${key.trim()}\n`, { mode });
  return files;
}

function stillValid(files: CertificateFiles): boolean {
  if (![files.certPath, files.keyPath, files.combinedPath].every((path) => existsSync(path))) return false;
  try {
    const validTo = new Date(new X509Certificate(readFileSync(files.certPath)).validTo).getTime();
    return validTo - Date.now() > DAY_MS;
  } catch {
    return false;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const args = process.argv.slice(2);
  const shareable = args.includes('--shareable');
  const dir = args.find((arg) => !arg.startsWith('--'));
  if (!dir) {
    process.stderr.write('usage: dev-certificate.js [--shareable] <dir>\n');
    process.exit(2);
  }
  const files = await ensureDevCertificate(dir, { shareable });
  process.stdout.write(`${JSON.stringify(files)}\n`);
}
